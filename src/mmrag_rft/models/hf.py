"""The Hugging Face policy backend: any causal LM, or any vision-language model (Qwen2-VL/2.5-VL reference).

A causal LM sees images only through the caption/title text the prompts already carry (image parts are dropped);
a vision-language model gets the pixels through its processor. Stage-1 scoring reads P(yes) at the token after
the prefill in one forward pass; for text models the long shared head of the stage-1 prompts (instructions +
question) is run once and its KV cache reused for every candidate.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mmrag_rft.models.chat import ChatPrompt, image_placeholders, message_text

YES_VARIANTS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_VARIANTS = ("no", "No", "NO", " no", " No", " NO")
# Below this many shared tokens, running the prefix separately saves less than it costs.
MIN_SHARED_PREFIX = 8


def cache_kwarg(module: Any) -> str:
    """The name of `module.forward`'s KV-cache argument: transformers >= 5.2x says `cache`, older and remote-code
    models `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def resolve_device(device: str = "auto", dtype: str | torch.dtype = "auto") -> tuple[torch.device, torch.dtype]:
    """auto: cuda + bf16 when a GPU is present, else cpu + fp32."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    try:
        return dev, {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                     "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}") from None


def is_vision_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_vl_processor(path: str | Path, config: Any = None) -> Any:
    """AutoProcessor where it works; for Qwen2-VL-family folders without torchvision, QwenVLProcessor."""
    from transformers import AutoProcessor, ProcessorMixin

    mt = getattr(config, "model_type", "") or ""
    saved = Path(path) / "processor_config.json"
    qwen_like = (saved.is_file() and "QwenVLProcessor" in saved.read_text()) or mt.startswith(("qwen2", "qwen3"))
    err: Exception | None = None
    try:
        proc = AutoProcessor.from_pretrained(str(path), padding_side="left")
        if isinstance(proc, ProcessorMixin):
            return proc
    except Exception as e:  # noqa: BLE001 - transformers raises ImportError/AttributeError/ValueError/OSError here
        err = e
    if qwen_like:
        from mmrag_rft.models.processor import QwenVLProcessor

        return QwenVLProcessor.from_pretrained(str(path))
    raise ValueError(f"{path}: could not build the processor of this vision-language model ({err or 'no processor'})")


class HFBackend:
    """PolicyBackend over a transformers model (see module docstring)."""

    def __init__(self, model_or_path: Any, *, device: str = "auto", dtype: str | torch.dtype = "auto",
                 processor: Any = None, model_id: str | None = None, batch_size: int = 8):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import PreTrainedTokenizerBase, ProcessorMixin

        self.device, self.dtype = resolve_device(device, dtype)
        self.batch_size = max(1, int(batch_size))
        if isinstance(model_or_path, (str, Path)):
            path = Path(model_or_path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
            from mmrag_rft.models.loading import load_model, load_processor

            model = load_model(path, dtype=str(self.dtype).removeprefix("torch."))
            processor = processor or load_processor(path)
            self.model_id = model_id or (path.name if path.is_dir() else str(model_or_path))
            self.path: Path | None = path
        else:
            model = model_or_path
            if processor is None:
                raise ValueError("HFBackend(model): pass processor= (a tokenizer or a multimodal processor)")
            self.model_id = model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__
            self.path = None
            if model.dtype != self.dtype and dtype != "auto":
                model = model.to(self.dtype)
        self.model = model.to(self.device).eval()
        if isinstance(processor, ProcessorMixin):
            self.processor: Any = processor
            self.tokenizer = processor.tokenizer
        elif isinstance(processor, PreTrainedTokenizerBase):
            self.processor = None
            self.tokenizer = processor
        else:
            raise TypeError(f"processor must be a tokenizer or a ProcessorMixin, got {type(processor).__name__}")
        self.supports_images = self.processor is not None and is_vision_config(self.model.config)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.yes_ids, self.no_ids = self._single_token_ids(YES_VARIANTS), self._single_token_ids(NO_VARIANTS)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"{self.model_id}: the tokenizer has no single-token 'yes'/'no'; cannot score stage 1")
        self.eos_ids = self._eos_ids()

    # -- tokenisation -------------------------------------------------------------------------------
    def _single_token_ids(self, variants: Sequence[str]) -> list[int]:
        ids: list[int] = []
        for v in variants:
            enc = self.tokenizer.encode(v, add_special_tokens=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        return ids

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for x in [self.tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]:
            if x is not None and x not in ids:
                ids.append(x)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id and end not in ids:
            ids.append(end)
        return ids

    def render(self, prompt: ChatPrompt) -> str:
        """The exact model input text: chat template with the assistant header, then the prefill."""
        if self.supports_images:
            text = self.processor.apply_chat_template(image_placeholders(prompt.messages),
                                                      add_generation_prompt=True, tokenize=False,
                                                      continue_final_message=False)
        else:
            msgs = [{**m, "content": message_text(m.get("content"))} for m in prompt.messages]
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return text + prompt.prefill

    def _uses_pixels(self, prompts: Sequence[ChatPrompt]) -> bool:
        return self.supports_images and any(p.images() for p in prompts)

    def encode(self, prompts: Sequence[ChatPrompt]) -> dict[str, torch.Tensor]:
        """Left-padded batch (plus pixel inputs for a VLM), on the model's device."""
        texts = [self.render(p) for p in prompts]
        if self.supports_images:
            images = [img for p in prompts for img in p.images()]
            enc = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                                 padding_side="left", add_special_tokens=False)
        else:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=False)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}

    # -- generation ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        if seed is None:
            yield
            return
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    @torch.inference_mode()
    def generate(self, prompts: Sequence[ChatPrompt], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None) -> list[list[str]]:
        from transformers import GenerationConfig

        prompts = list(prompts)
        n = max(1, int(num_return_sequences))
        sample = temperature > 0
        gen = GenerationConfig(max_new_tokens=int(max_new_tokens), do_sample=sample,
                               temperature=float(temperature) if sample else None,
                               top_p=float(top_p) if sample else None, top_k=None,
                               num_return_sequences=n if sample else 1,
                               eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id)
        out: list[list[str]] = []
        with self._seeded(seed):
            for i in range(0, len(prompts), self.batch_size):
                chunk = prompts[i:i + self.batch_size]
                enc = self.encode(chunk)
                width = enc["input_ids"].shape[1]
                seqs = self.model.generate(**enc, generation_config=gen)
                texts = self.tokenizer.batch_decode(seqs[:, width:], skip_special_tokens=True)
                per = n if sample else 1
                for j in range(len(chunk)):
                    group = texts[j * per:(j + 1) * per]
                    out.append(group if sample else group * n)  # greedy: n identical completions
        return out

    # -- scoring: P(choice) at the token after the prefill, in one forward pass ------------------------
    def _choice_probs(self, last_logits: torch.Tensor, groups: Sequence[Sequence[int]]) -> list[list[float]]:
        probs = torch.softmax(last_logits.float(), dim=-1)
        mass = torch.stack([probs[:, list(g)].sum(-1) for g in groups], dim=-1)
        tot = mass.sum(-1, keepdim=True)
        out = torch.where(tot > 0, mass / tot.clamp_min(1e-30), torch.full_like(mass, 1.0 / len(groups)))
        return out.tolist()

    def choice_ids(self, choices: Sequence[Sequence[str]]) -> list[list[int]]:
        """Each choice's single-token spellings as token ids; a choice with none is an error."""
        groups = [self._single_token_ids(c) for c in choices]
        missing = [c for c, g in zip(choices, groups) if not g]
        if missing:
            raise ValueError(f"{self.model_id}: no single-token spelling for choice(s) {missing}")
        return groups

    @torch.inference_mode()
    def score_choices(self, prompts: Sequence[ChatPrompt], choices: Sequence[Sequence[str]],
                      reuse_prefix: bool = True) -> list[list[float]]:
        """Per prompt, the probability of each choice at the token after its prefill, normalised over the choices
        (a choice's spellings, e.g. "yes"/" Yes", are summed)."""
        prompts = list(prompts)
        if not prompts:
            return []
        groups = self.choice_ids(choices)
        if reuse_prefix and len(prompts) > 1 and not self._uses_pixels(prompts):
            done = self._score_shared_prefix(prompts, groups)
            if done is not None:
                return done
        out: list[list[float]] = []
        for i in range(0, len(prompts), self.batch_size):
            out.extend(self._score_plain(prompts[i:i + self.batch_size], groups))
        return out

    def score_yes_no(self, prompts: Sequence[ChatPrompt], reuse_prefix: bool = True) -> list[float]:
        """P(yes) / (P(yes) + P(no)) at the token after each prompt's prefill (case/space variants summed)."""
        return [p[0] for p in self.score_choices(prompts, [YES_VARIANTS, NO_VARIANTS], reuse_prefix=reuse_prefix)]

    def yes_no_from_logits(self, last_logits: torch.Tensor) -> list[float]:
        """P(yes) from next-token logits a caller already has (e.g. a forward pass that also reads hidden states),
        normalised exactly as `score_yes_no` does."""
        return [p[0] for p in self._choice_probs(last_logits, self.choice_ids([YES_VARIANTS, NO_VARIANTS]))]

    def _score_plain(self, prompts: Sequence[ChatPrompt], groups: Sequence[Sequence[int]]) -> list[list[float]]:
        enc = self.encode(prompts)
        if not self.supports_images:  # explicit positions so left padding does not shift them
            enc["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)
        logits = self.model(**enc, logits_to_keep=1, use_cache=False).logits[:, -1, :]
        return self._choice_probs(logits, groups)

    def _score_shared_prefix(self, prompts: Sequence[ChatPrompt],
                             groups: Sequence[Sequence[int]]) -> list[list[float]] | None:
        """Run the common token prefix once, then all suffixes against copies of its KV cache."""
        if self.supports_images:  # M-RoPE positions come from the whole sequence: keep the plain path
            return None
        from transformers import DynamicCache

        ids = [self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        shared = min(len(x) for x in ids) - 1  # every suffix keeps at least one token
        first = ids[0]
        for x in ids[1:]:
            k = 0
            while k < shared and x[k] == first[k]:
                k += 1
            shared = k
        if shared < MIN_SHARED_PREFIX:
            return None
        prefix = torch.tensor([first[:shared]], device=self.device)
        key = cache_kwarg(self.model)
        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=prefix, use_cache=True, **{key: cache})
        pad = self.tokenizer.pad_token_id
        out: list[list[float]] = []
        for i in range(0, len(ids), self.batch_size):
            chunk = [x[shared:] for x in ids[i:i + self.batch_size]]
            width = max(len(x) for x in chunk)
            inp = torch.tensor([[pad] * (width - len(x)) + x for x in chunk], device=self.device)
            smask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk], device=self.device)
            mask = torch.cat([torch.ones(len(chunk), shared, dtype=smask.dtype, device=self.device), smask], 1)
            pos = (shared + smask.cumsum(-1) - 1).clamp_min(shared)
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(len(chunk))
            logits = self.model(input_ids=inp, attention_mask=mask, position_ids=pos, use_cache=True,
                                logits_to_keep=1, **{key: c}).logits[:, -1, :]
            out.extend(self._choice_probs(logits, groups))
        return out

    # -- persistence --------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Model + tokenizer/processor in one folder that `HFBackend(folder)` / `load_backend(folder)` reload."""
        out = Path(out_dir)
        self.model.save_pretrained(out)
        (self.processor or self.tokenizer).save_pretrained(out)
        return out

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "class": type(self.model).__name__, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "supports_images": self.supports_images,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    def __repr__(self) -> str:
        return f"HFBackend({json.dumps(self.describe())})"
