"""`load_backend(spec)`: one place that turns a model name into a PolicyBackend, loaded once per process.

spec: "default" (embedded SmolLM2-135M-Instruct), "tiny-vlm" / "tiny-lm" (random tiny models for tests),
a local model folder, a PEFT adapter folder (base + adapter, merged), or a Hugging Face hub id (needs the
model in the local HF cache, or internet with HF_HUB_OFFLINE unset).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from mmrag_rft.models.backend import PolicyBackend

BUILTIN_SPECS = ("default", "tiny-vlm", "tiny-lm")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(spec: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a folder."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def resolve_model_path(spec: str) -> Path:
    """A spec -> a local folder holding a model (or a PEFT adapter)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty model spec; use 'default', 'tiny-vlm', 'tiny-lm', a folder or a hub id")
    if spec == "default":
        from mmrag_rft.models.default import ensure_default_model

        return ensure_default_model()
    if spec == "tiny-vlm":
        from mmrag_rft.models.tiny import build_tiny_vlm

        return build_tiny_vlm()
    if spec == "tiny-lm":
        from mmrag_rft.models.tiny import build_tiny_lm

        return build_tiny_lm()
    p = Path(spec).expanduser()
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


def _load_peft(adapter_dir: Path, **kw: Any) -> PolicyBackend:
    """Base model + LoRA adapter, merged, so inference runs at plain-model speed."""
    from mmrag_rft.models.hf import HFBackend, is_vision_config, load_vl_processor, resolve_device

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base_spec = cfg.get("base_model_name_or_path")
    if not base_spec:
        raise ValueError(f"{adapter_dir}/adapter_config.json: field 'base_model_name_or_path' is missing")
    base_dir = resolve_model_path(base_spec)
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    device, dtype = resolve_device(kw.get("device", "auto"), kw.get("dtype", "auto"))
    config = AutoConfig.from_pretrained(str(base_dir))
    vision = is_vision_config(config)
    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    base = cls.from_pretrained(str(base_dir), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    has_tok = (adapter_dir / "tokenizer_config.json").is_file()
    proc_dir = adapter_dir if has_tok else base_dir
    processor = load_vl_processor(proc_dir, config) if vision else AutoTokenizer.from_pretrained(str(proc_dir))
    return HFBackend(model, processor=processor, device=str(device), dtype=dtype,
                     model_id=kw.get("model_id") or f"{Path(str(base_spec)).name}+{adapter_dir.name}",
                     batch_size=kw.get("batch_size", 8))


@functools.lru_cache(maxsize=4)
def _load_cached(spec: str, engine: str, kw_items: tuple[tuple[str, Any], ...]) -> PolicyBackend:
    kw = dict(kw_items)
    path = resolve_model_path(spec)
    if engine == "vllm":
        from mmrag_rft.models.vllm_backend import VLLMBackend

        return VLLMBackend(str(path), **kw)
    if engine != "hf":
        raise ValueError(f"engine must be 'hf' or 'vllm', got {engine!r}")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _load_peft(path, **kw)
    from mmrag_rft.models.hf import HFBackend

    model_id = kw.pop("model_id", None) or ("SmolLM2-135M-Instruct" if spec == "default" else
                                             spec if spec in BUILTIN_SPECS or not Path(spec).exists()
                                             else path.name)
    return HFBackend(path, model_id=model_id, **kw)


def load_backend(spec: str = "default", *, engine: str = "hf", **kw: Any) -> PolicyBackend:
    """Load (once per process and argument set) the policy backend named by `spec`.

    kw go to the backend: device, dtype, batch_size, model_id (HF); LLM(...) options (vLLM).
    Errors: FileNotFoundError for a missing folder/uncached hub model/missing wheel, ValueError for a bad spec.
    """
    spec = str(spec).strip()
    if spec not in BUILTIN_SPECS:
        p = Path(spec).expanduser()
        if p.exists():
            spec = str(p.resolve())
    return _load_cached(spec, engine, tuple(sorted(kw.items())))


def load_for_training(spec: str = "default", *, dtype: str = "float32") -> tuple[Any, Any]:
    """A fresh (uncached, trainable) `(model, processing_class)` for TRL: a ProcessorMixin for a
    vision-language model (TRL then treats it as a VLM), the tokenizer for a causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from mmrag_rft.models.hf import is_vision_config, load_vl_processor, resolve_device

    path = resolve_model_path(spec)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: load_for_training needs a full model folder, not an adapter")
    _, torch_dtype = resolve_device("cpu", dtype)
    config = AutoConfig.from_pretrained(str(path))
    if is_vision_config(config):
        return (AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype),
                load_vl_processor(path, config))
    tok = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype), tok


def clear_backend_cache() -> None:
    _load_cached.cache_clear()
