"""The one place that turns a model name into a model folder (`resolve_model_path`) or a PolicyBackend
(`load_backend`), for inference and training alike.

spec: "default" (the shipped system: SmolLM2-135M-Instruct + the trained stage-1 adapter in the package),
"base" (the untrained SmolLM2-135M-Instruct), "reader" (the shipped stage-2 model: the trained stage-2 adapter on
Qwen2.5-Coder-0.5B-Instruct when the package ships one, else that model as released), "qwen2.5-coder-0.5b" (the
untrained reader, installed by `./run.sh setup`),
"tiny-vlm" / "tiny-vlm25" / "tiny-lm" (random tiny Qwen2-VL, Qwen2.5-VL and Llama for tests), a model
folder, a training run folder (its `merged/` model), a PEFT adapter folder (merged into its base once, cached),
or a Hugging Face hub id (needs the model in the local HF cache, or internet with HF_HUB_OFFLINE unset).
A folder's `mmrag_model.json` carries the settings it was trained with (`model_settings`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrag_rft.models.backend import PolicyBackend

log = logging.getLogger(__name__)

BUILTIN_SPECS = ("default", "base", "reader", "qwen2.5-coder-0.5b", "tiny-vlm", "tiny-vlm25", "tiny-lm")
TINY_SPECS = ("tiny-vlm", "tiny-vlm25", "tiny-lm")
READER_SPEC = "qwen2.5-coder-0.5b"  # the untrained stage-2 reader; "reader" is the shipped stage-2 model on it
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "trained"  # package data: the trained adapters


def shipped_model(stage: int = 1) -> Path | None:
    """The trained adapter folder the package ships for `stage`, if it ships one."""
    d = SHIPPED_DIR / f"stage{stage}"
    return d if (d / "adapter_config.json").is_file() else None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(spec: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a folder."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def source_path(spec: str) -> Path:
    """A spec -> the local folder it names: a model, a PEFT adapter, or a run's `merged/` (no merging here)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError(f"empty model spec; use one of {', '.join(BUILTIN_SPECS)}, a folder or a hub id")
    if spec == "default":
        shipped = shipped_model(1)
        return shipped if shipped is not None else source_path("base")
    if spec == "reader":
        shipped = shipped_model(2)
        return shipped if shipped is not None else source_path(READER_SPEC)
    if spec == "base":
        from mmrag_rft.models.default import ensure_default_model

        return ensure_default_model()
    if spec == READER_SPEC:
        from mmrag_rft.models.default import ensure_reader_model

        return ensure_reader_model()
    if spec == "tiny-vlm":
        from mmrag_rft.models.tiny import build_tiny_vlm

        return build_tiny_vlm()
    if spec == "tiny-vlm25":
        from mmrag_rft.models.tiny import build_tiny_vlm25

        return build_tiny_vlm25()
    if spec == "tiny-lm":
        from mmrag_rft.models.tiny import build_tiny_lm

        return build_tiny_lm()
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "merged" / "config.json").is_file() and not (p / "config.json").is_file():
        return p / "merged"  # a training run folder
    if p.exists():
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: a model must be a folder (config.json or adapter_config.json inside)")
        if not ((p / "config.json").is_file() or (p / "adapter_config.json").is_file()):
            raise FileNotFoundError(f"{p}: not a model folder (no config.json or adapter_config.json)")
        return p
    if _looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such model folder (built-in names: {', '.join(BUILTIN_SPECS)})")
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: LocalEntryNotFoundError, or a malformed repo id
        pass
    if _hub_offline():
        raise FileNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1); "
            f"there is no local folder of that name either; download it on a machine with internet, or pass a folder")
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - network/auth/unknown repo all end the same way for the user
        raise FileNotFoundError(f"model {repo_id!r} is not in the local cache and could not be downloaded "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def resolve_model_path(spec: str) -> Path:
    """A spec -> a full model folder (config.json): adapters are merged into their base once, then cached."""
    path = source_path(spec)
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return merged_adapter(path)
    return path


def model_settings(spec: str) -> dict[str, Any]:
    """The `mmrag_model.json` of the folder `spec` names ({} for a plain model): how it was trained, the pipeline
    settings it was trained for (`pipeline`), its held-out numbers."""
    from mmrag_rft.models.export import read_manifest

    if str(spec).strip() in TINY_SPECS or default_engine() in _FOLDERLESS:
        return {}
    path = source_path(spec)
    found = read_manifest(path)
    if not found and path.name == "merged":  # a run folder: the run may carry it beside merged/
        found = read_manifest(path.parent)
    return found


def untrained_base(spec: str) -> str:
    """The untrained model under `spec`, the base a run that started from it is exported against: "default" ->
    "base", "reader" -> the released reader, a folder -> the base its manifest names (a run: its config's model)."""
    spec = str(spec).strip()
    if spec in ("default", "base"):
        return "base"
    if spec in ("reader", READER_SPEC):
        return READER_SPEC
    p = Path(spec).expanduser()
    run = p.parent if p.name == "merged" else p
    if p.is_dir():
        from mmrag_rft.config import read_yaml
        from mmrag_rft.models.export import read_manifest

        named = read_manifest(p).get("base") or read_manifest(run).get("base")
        if not named and (run / "config.yaml").is_file():
            named = (read_yaml(run / "config.yaml").get("model") or {}).get("path")
        if named and str(named).strip() != spec:
            return untrained_base(str(named))
    return spec


def _trained_prompt_setting(spec: str | Path, key: str) -> Any:
    """A prompt setting a model was trained with: its manifest's `prompt.<key>`, or, for a training run (or its
    `merged/` folder), the run's config.yaml `data.<key>`; None when neither says."""
    value = (model_settings(str(spec)).get("prompt") or {}).get(key)
    p = Path(spec)
    run = p.parent if p.name == "merged" else p
    if value is None and (run / "config.yaml").is_file():
        from mmrag_rft.config import read_yaml

        value = (read_yaml(run / "config.yaml").get("data") or {}).get(key)
    return value


def trained_layout(spec: str | Path) -> str | None:
    """The stage-1 prompt layout a model was trained with (manifest or run config); None when neither says."""
    return _trained_prompt_setting(spec, "layout") or None


def trained_think(spec: str | Path) -> bool:
    """Whether a model was trained to reason in `<think>` before it writes (manifest or run config; default True)."""
    value = _trained_prompt_setting(spec, "think")
    return True if value is None else bool(value)


def _adapter_key(adapter_dir: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        f = adapter_dir / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def merge_lora(base: Any, adapter_dir: Path) -> Any:
    """`base` (a loaded model) with the LoRA adapter in `adapter_dir` merged in: a plain model again."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def merged_adapter(adapter_dir: Path) -> Path:
    """Base + LoRA adapter merged into a plain model folder under the cache (once per adapter content), so
    inference runs at plain-model speed and training starts from it like from any model."""
    import shutil

    from mmrag_rft.config import cache_dir
    from mmrag_rft.models.default import build_once

    adapter_dir = Path(adapter_dir)
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    except ValueError as e:
        raise ValueError(f"{adapter_dir}/adapter_config.json: not valid JSON ({e})") from None
    base_spec = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base_spec:
        raise ValueError(f"{adapter_dir}/adapter_config.json: field 'base_model_name_or_path' is missing")
    base_dir = resolve_model_path(str(base_spec))

    def make(tmp: Path) -> None:
        model = merge_lora(load_model(base_dir, dtype="auto"), adapter_dir)
        model.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        proc_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
        for f in proc_src.iterdir():  # tokenizer / processor files, whatever the model family names them
            if f.is_file() and not f.name.startswith(("model", "config.json", "generation_config", "adapter_")):
                shutil.copy2(f, tmp / f.name)

    merged = build_once(cache_dir() / "models" / "merged" / f"{adapter_dir.name}-{_adapter_key(adapter_dir)}", make)
    _sync_card(adapter_dir, merged)
    return merged


_CARD_FILES = ("mmrag_model.json", "README.md")  # the model card and manifest: edited without new weights


def _sync_card(adapter_dir: Path, merged: Path) -> None:
    """The merged folder carries the adapter's current card and manifest (the cache key covers only the weights)."""
    from mmrag_rft.config import atomic_write_bytes

    for name in _CARD_FILES:
        src, dst = adapter_dir / name, merged / name
        try:
            if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
                atomic_write_bytes(dst, src.read_bytes())
            elif not src.is_file() and dst.is_file():
                dst.unlink()
        except OSError as e:  # a read-only shared cache: the weights are right, only the copy of the card is old
            log.warning("could not refresh %s from %s: %s", dst, src, e)


def model_name(spec: str) -> str:
    """A short name for results and `mmrag info`: the manifest's name, else the folder's (built-in plain models are
    named without resolving them, which would convert them)."""
    from mmrag_rft.models.default import DEFAULT_MODEL_NAME, READER_MODEL_NAME

    plain = {"base": DEFAULT_MODEL_NAME, READER_SPEC: READER_MODEL_NAME}
    if spec == "default" and shipped_model(1) is None:
        spec = "base"
    if spec == "reader" and shipped_model(2) is None:
        spec = READER_SPEC
    if spec in plain:
        return plain[spec]
    settings = model_settings(spec)
    if settings.get("name"):
        return str(settings["name"])
    if spec in BUILTIN_SPECS or not Path(spec).exists():
        return spec
    p = source_path(spec)
    return p.parent.name if p.name == "merged" else p.name


# --- engines: what turns a model folder into a PolicyBackend; a new backend is one function plus one line -------

EngineFactory = Callable[[str, dict[str, Any]], PolicyBackend]  # (model spec, backend kw) -> backend
ENGINES: dict[str, EngineFactory] = {}
_FOLDERLESS: set[str] = set()  # engines whose model specs need not name a model folder (an API, a rule)


def register_engine(name: str, factory: EngineFactory, *, model_folders: bool = True) -> None:
    """Make `name` usable as `load_backend(..., engine=name)`, `mmrag --engine NAME` or MMRAG_ENGINE=NAME.
    `model_folders=False`: its specs are names of its own, so no folder (and no trained settings) is looked up."""
    ENGINES[name] = factory
    (_FOLDERLESS.discard if model_folders else _FOLDERLESS.add)(name)


def _hf_engine(spec: str, kw: dict[str, Any]) -> PolicyBackend:
    from mmrag_rft.models.hf import HFBackend

    model_id = kw.pop("model_id", None) or model_name(spec)
    return HFBackend(resolve_model_path(spec), model_id=model_id, **kw)


def _vllm_engine(spec: str, kw: dict[str, Any]) -> PolicyBackend:
    from mmrag_rft.models.vllm_backend import VLLMBackend

    return VLLMBackend(str(resolve_model_path(spec)), **kw)


register_engine("hf", _hf_engine)
register_engine("vllm", _vllm_engine)


def default_engine() -> str:
    """MMRAG_ENGINE (set by `mmrag --engine`), else "hf"."""
    return os.environ.get("MMRAG_ENGINE", "").strip() or "hf"


@functools.lru_cache(maxsize=4)
def _load_cached(spec: str, engine: str, kw_items: tuple[tuple[str, Any], ...]) -> PolicyBackend:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; registered: {', '.join(ENGINES)}")
    return ENGINES[engine](spec, dict(kw_items))


def load_backend(spec: str = "default", *, engine: str | None = None, **kw: Any) -> PolicyBackend:
    """Load (once per process and argument set) the policy backend named by `spec` with `engine` (default:
    `default_engine()`).

    kw go to the backend: device, dtype, batch_size, model_id (HF); LLM(...) options (vLLM).
    Errors: FileNotFoundError for a missing folder/uncached hub model/missing wheel, ValueError for a bad spec or
    an unknown engine.
    """
    spec = str(spec).strip()
    if spec not in BUILTIN_SPECS:
        p = Path(spec).expanduser()
        if p.exists():
            spec = str(p.resolve())
    return _load_cached(spec, engine or default_engine(), tuple(sorted(kw.items())))


def _model_folder(spec_or_path: str | Path) -> Path:
    """A folder holding config.json as it is (a warm-up or checkpoint folder), anything else through its spec."""
    p = Path(spec_or_path)
    return p if (p / "config.json").is_file() else resolve_model_path(str(spec_or_path))


def model_config(spec_or_path: str | Path) -> Any:
    """The model's transformers config, read from its folder (no weights loaded)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(_model_folder(spec_or_path)))


def model_class(config: Any) -> Any:
    """The transformers class a config loads as: image-text-to-text for a VLM, causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from mmrag_rft.models.hf import is_vision_config

    return AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM


def is_vision_model(spec_or_path: str | Path) -> bool:
    """Whether the model is a vision-language model (its config has a vision tower)."""
    from mmrag_rft.models.hf import is_vision_config

    return is_vision_config(model_config(spec_or_path))


def load_model(spec_or_path: str | Path, *, dtype: str = "float32", attn_implementation: str | None = None) -> Any:
    """A fresh (uncached, trainable) transformers model: image-text-to-text for a VLM, causal LM otherwise."""
    import torch

    # transformers otherwise fetches Hub kernels once a model is on a GPU (also the reference model TRL loads);
    # nothing is downloaded at run time unless the user opts in with USE_HUB_KERNELS=1
    os.environ.setdefault("USE_HUB_KERNELS", "0")
    path = _model_folder(spec_or_path)
    kw: dict[str, Any] = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    return model_class(model_config(path)).from_pretrained(str(path), **kw)


def load_processor(spec_or_path: str | Path, *, max_pixels: int | None = None,
                   padding_side: str | None = None) -> Any:
    """The model's processing class: the project's Qwen2-VL processor for a VLM (TRL then treats the model as a VLM),
    the tokenizer for a causal LM; a pad token is always set."""
    from transformers import AutoConfig, AutoTokenizer

    from mmrag_rft.models.hf import is_vision_config, load_vl_processor

    path = _model_folder(spec_or_path)
    config = AutoConfig.from_pretrained(str(path))
    if is_vision_config(config):
        proc = load_vl_processor(path, config)
        if max_pixels and hasattr(getattr(proc, "image_processor", None), "max_pixels"):
            proc.image_processor.max_pixels = max_pixels
        tok = proc.tokenizer
    else:
        proc = tok = AutoTokenizer.from_pretrained(str(path), **({"padding_side": padding_side} if padding_side else {}))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return proc


def load_for_training(spec: str = "default", *, dtype: str = "float32") -> tuple[Any, Any]:
    """A fresh (uncached, trainable) `(model, processing_class)` for TRL."""
    return load_model(spec, dtype=dtype), load_processor(spec, padding_side="left")
