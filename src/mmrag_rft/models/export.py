"""Turn a trained model folder into a small LoRA adapter on its *untrained* base, with the settings it was trained with.

A run's `merged/` folder is base + format warm-up LoRA + GRPO LoRA, folded into full weights (500 MB for
SmolLM2-135M). The product ships only the difference: for every linear weight that training changed, the delta
`W_trained - W_base` is factored by SVD into LoRA factors `B @ A` at the smallest rank that keeps
`||delta - B A|| <= tol * ||delta||` (PEFT's `rank_pattern`, one rank per module). The sum of two rank-r LoRAs has
rank at most 2r, so the factoring is exact up to `tol`; `export_adapter` measures the logit difference it leaves.
PEFT has no "extract a LoRA from two checkpoints" function, hence this one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "mmrag_model.json"  # the settings a model folder was trained with, read by the pipeline


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's `mmrag_model.json`, or {} when it has none (a plain model). A broken one is an error."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: top level must be an object")
    return data


def _factor(delta: Any, tol: float, max_rank: int) -> tuple[Any, Any, float]:
    """delta (out x in) -> B (out x r), A (r x in) with relative Frobenius residual <= tol (or r = max_rank)."""
    import torch

    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    energy = torch.cumsum(s.flip(0) ** 2, 0).flip(0)  # energy[i]: squared norm left out when keeping i values
    total = float(energy[0])
    left = torch.cat([energy[1:], energy.new_zeros(1)])
    ok = (left <= (tol ** 2) * total).nonzero()
    r = min(int(ok[0]) + 1 if len(ok) else len(s), max_rank)
    root = s[:r].sqrt()
    b, a = u[:, :r] * root, root[:, None] * vh[:r]
    resid = float(left[r - 1] / total) ** 0.5 if total > 0 else 0.0
    return b.float(), a.float(), resid


def extract_lora(base: Any, trained: Any, *, tol: float = 1e-3, max_rank: int = 64) -> tuple[dict[str, Any], dict]:
    """{module name: (B, A)} for every nn.Linear whose weight differs; any other changed tensor is an error
    (a LoRA cannot carry it)."""
    import torch

    base_sd = base.state_dict()
    factors: dict[str, Any] = {}
    stats: dict[str, float] = {}
    linear = {n for n, m in trained.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, w in trained.state_dict().items():
        b = base_sd.get(name)
        if b is None or b.shape != w.shape:
            raise ValueError(f"{name}: not in the base model with this shape; not a fine-tune of that base")
        if torch.equal(b, w):
            continue
        module = name.removesuffix(".weight")
        if not name.endswith(".weight") or module not in linear:
            raise ValueError(f"{name}: changed by training but not a linear weight; a LoRA adapter cannot carry it")
        bb, aa, resid = _factor((w - b).float(), tol, max_rank)
        factors[module] = (bb, aa)
        stats[module] = resid
    if not factors:
        raise ValueError("the trained model equals its base: nothing to export")
    return factors, {"modules": len(factors), "max_relative_residual": max(stats.values())}


def export_adapter(trained_dir: str | Path, out_dir: str | Path, *, base_spec: str = "base",
                   manifest: dict[str, Any] | None = None, card: str | None = None, tol: float = 1e-3,
                   max_rank: int = 64, split: dict[str, Any] | None = None,
                   dtype: str = "float32") -> dict[str, Any]:
    """Write `out_dir` = adapter_config.json + adapter_model.safetensors (+ manifest, README.md, the run's
    split.json so `--heldout` finds the questions it never trained on), atomically.

    `base_spec` is what the adapter names as its base (resolved by `models.loading`, e.g. "base"). Returns the
    export's numbers: modules, ranks, size, and the largest logit difference to the trained model on a probe.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # base_spec is our name, not a hub id: PEFT must not look it up
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from mmrag_rft.models.loading import load_model, resolve_model_path

    trained_dir = Path(trained_dir)
    base_dir = resolve_model_path(base_spec)
    trained = load_model(trained_dir)
    base = load_model(base_dir)
    factors, info = extract_lora(base, trained, tol=tol, max_rank=max_rank)
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    store = getattr(torch, dtype)
    factors = {m: (b.to(store).float(), a.to(store).float()) for m, (b, a) in factors.items()}  # probe what is stored
    ranks = {m: int(a.shape[0]) for m, (_, a) in factors.items()}
    r0 = max(ranks.values())
    cfg = LoraConfig(r=r0, lora_alpha=r0, target_modules=sorted(factors), lora_dropout=0.0, bias="none",
                     task_type="CAUSAL_LM", rank_pattern={m: r for m, r in ranks.items()},
                     alpha_pattern={m: r for m, r in ranks.items()})  # alpha = r: scaling 1, B @ A is the delta
    peft_model = get_peft_model(base, cfg)
    modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for m, (bb, aa) in factors.items():
            layer = modules[m]
            layer.lora_A["default"].weight.copy_(aa)
            layer.lora_B["default"].weight.copy_(bb)
    peft_model.peft_config["default"].base_model_name_or_path = base_spec

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    probe = tok("Is the Eiffel Tower in Paris? Answer yes or no.", return_tensors="pt")
    with torch.no_grad():
        want = trained(**probe).logits
        got = peft_model(**probe).logits
    info.update(ranks=sorted(set(ranks.values())), total_rank=sum(ranks.values()),
                probe_max_logit_diff=float((want - got).abs().max()), tol=tol, base=base_spec, dtype=dtype)

    from mmrag_rft.config import current_umask, replacing_dir

    with replacing_dir(out_dir) as tmp:
        peft_model.save_pretrained(str(tmp))
        if dtype != "float32":  # PEFT saves in the model's dtype; loading casts back into it
            from safetensors.torch import load_file, save_file

            weights = tmp / "adapter_model.safetensors"
            save_file({k: v.to(store) for k, v in load_file(str(weights)).items()}, str(weights))
        cfg_path = tmp / "adapter_config.json"
        saved = json.loads(cfg_path.read_text())
        saved["base_model_name_or_path"] = base_spec
        cfg_path.write_text(json.dumps(saved, indent=2, sort_keys=True))
        info["size_bytes"] = (tmp / "adapter_model.safetensors").stat().st_size
        if manifest is not None:
            (tmp / MANIFEST).write_text(json.dumps({**manifest, "export": info}, indent=2) + "\n")
        if card is not None:
            (tmp / "README.md").write_text(card)
        if split is not None:
            (tmp / "split.json").write_text(json.dumps(split) + "\n")
        for f in tmp.iterdir():  # package data: readable by whoever installs it, whatever wrote it
            os.chmod(f, 0o666 & ~current_umask())
        os.chmod(tmp, 0o755)
    return info


def gold_modalities(data: dict[str, Any], train_qids: list[str]) -> dict[str, int] | None:
    """How many gold pieces of each modality the run's training questions hold (None: its data is not readable
    here), so the card states the modality prior a labelled prompt can teach only where there is one."""
    from mmrag_rft.data.loaders import load_samples

    want, counts = set(train_qids), {}
    try:
        for s in load_samples(data.get("path") or "", format=data.get("format", "auto")):
            if s.qid in want:
                for c in s.candidates:
                    if c.id in s.gold_set:
                        counts[c.modality] = counts.get(c.modality, 0) + 1
    except (OSError, ValueError):
        return None
    return dict(sorted(counts.items()))


def manifest_from_run(run_dir: str | Path, *, name: str, operating_point: dict[str, Any] | None = None,
                      heldout: dict[str, Any] | None = None, command: str = "", commit: str = "") -> dict[str, Any]:
    """The settings a run's model was trained with (its `config.yaml`), for the pipeline and the model card.

    `operating_point`: filter settings chosen on the run's *training* questions (dotted pipeline keys, as
    `mmrag filter-sweep` writes them under `chosen_fused_point.pipeline_settings`).
    """
    import hashlib

    import yaml

    from mmrag_rft.config import set_dotted
    from mmrag_rft.models.loading import untrained_base

    run = Path(run_dir)
    cfg_text = (run / "config.yaml").read_text(encoding="utf-8")
    cfg = yaml.safe_load(cfg_text) or {}
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    split = json.loads((run / "split.json").read_text()) if (run / "split.json").is_file() else {}
    data = cfg.get("data", {})
    stage = int(result.get("stage", 1))
    pipeline: dict[str, Any] = {"stage1_layout": data.get("layout", "default")} if stage == 1 else {}
    for dotted, value in (operating_point or {}).items():
        set_dotted(pipeline, dotted, value)
    return {
        "name": name, "stage": stage, "base": untrained_base(str((cfg.get("model") or {}).get("path", "base"))),
        "prompt": {"layout": data.get("layout", "default"), "think": bool(data.get("think", True))},
        "pipeline": pipeline,
        "training": {"command": command, "commit": commit, "config_sha256": hashlib.sha256(cfg_text.encode()).hexdigest(),
                     "steps": result.get("global_step"), "data": data.get("path"),
                     "split": {"val_fraction": data.get("val_fraction"), "split_seed": data.get("split_seed"),
                               "train_questions": len(split.get("train", [])),
                               "heldout_questions": len(split.get("val", []))},
                     **({"gold_modalities": gold_modalities(data, split["train"])} if split.get("train") else {}),
                     "config": cfg},
        "heldout": heldout or {},
    }


def hub_name(spec: str) -> str:
    """The Hugging Face name of a base model spec, for the card's front matter."""
    return HUB_NAMES.get(spec, spec)


def _label_limit(manifest: dict[str, Any]) -> str:
    """The card's line on the modality prior: only where every gold piece of the training questions has one
    modality and the prompt names it."""
    gold = manifest["training"].get("gold_modalities") or {}
    if manifest["prompt"]["layout"] == "unlabelled" or len(gold) != 1:
        return ""
    piece = {"image": "an image", "text": "a text passage", "table": "a table"}.get(next(iter(gold)), "one modality")
    swap = ((manifest["training"].get("config") or {}).get("data") or {}).get("label_swap") or 0
    head = f"\n- Every gold piece of its training data is {piece}, and its prompt names each candidate's modality: "
    if swap:
        return head + (f"training showed {swap:.0%} of the candidates under the other modality's label so that the "
                       "label says nothing about relevance; `benchmarks/stage1_modality_probe.py` measures how much "
                       "the label still moves its P(yes).")
    lead = (" On a corpus whose evidence is mostly in other modalities, `--set filter.retrieval_weight=100` lets the "
            "retriever's order lead the filter's cut (README, \"When your evidence is mostly text\").")
    if piece != "an image":
        return head + ("the label alone can move its P(yes) towards that modality "
                       "(`benchmarks/stage1_modality_probe.py` measures it for images and text).") + lead
    return head + (
        "the label alone moves its P(yes), so a text passage is judged more harshly than the same words shown as a "
        "caption (`benchmarks/stage1_modality_probe.py` measures it). Where every gold piece is an image, compare its "
        "evidence with the retriever's top images (`benchmarks/modality_rule.py`; docs/results.md).") + lead


def model_card(manifest: dict[str, Any], *, license: str = "apache-2.0", note: str = "") -> str:
    """A Hugging Face model card (YAML front matter + markdown) from the manifest."""
    note = note or CARD_NOTE
    base_model = hub_name(str(manifest.get("base", "base")))
    stage = int(manifest["stage"])
    t, held = manifest["training"], manifest.get("heldout", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in held.items() if not isinstance(v, dict))
    pipe = json.dumps(manifest.get("pipeline", {}))
    reader = (manifest.get("pipeline") or {}).get("stage2_model")
    absent = "without its base installed the stage-1 model reads, and results say so (`bypassed.stage2_model`)."
    reader_limit = "" if not reader else (
        f"\n- Stage 2 is read by the shipped stage-2 model (`{reader}`: a LoRA on Qwen2.5-Coder-0.5B-Instruct, its own "
        f"model card in trained/stage2); {absent}" if reader == "reader" else
        f"\n- Stage 2 is read by `{reader}` as released, not trained by this project; {absent}")
    label_limit = _label_limit(manifest) if stage == 1 else ""
    ablation = manifest.get("ablation") or {}
    cols = ("qa_acc", "retrieval_f1", "sources_ndcg@5")
    ablation_md = ("" if not ablation else f"""
## What each stage adds, held out ({note})
{ablation.get('note', '')}

| system | {' | '.join(cols)} | what it is |
|---|{'---|' * len(cols)}---|
""" + "\n".join(f"| {name} | {' | '.join(f'{r[c]:.3f}' for c in cols)} | {r['description']} |"
                for name, r in ablation.get("systems", {}).items()) + "\n")
    default_note = "The filter's operating point was chosen on training questions only." if stage == 1 else ""
    settings_md = (f"""## Settings it ships with (read by the pipeline)
`{pipe}`. {manifest.get('pipeline_note') or default_note}

""" if manifest.get("pipeline") else f"""## How the pipeline uses it
{manifest['pipeline_note']}

""" if manifest.get("pipeline_note") else "")
    held_md = (f"""## Held-out results ({note})
| metric | value |
|---|---|
{rows}

""" if rows else "")
    return f"""---
base_model: {base_model}
library_name: peft
license: {license}
pipeline_tag: text-generation
tags: [lora, grpo, mmrag-rft, stage-{manifest['stage']}]
---

# {manifest['name']}

The stage-{stage} model of MMRAG-RFT: a LoRA adapter on `{base_model}`, trained by GRPO with rule-based
rewards. {USES[stage]}

## Training
- Data: `{t['data']}` (WebQA val records, {note}), split by question: {t['split']['train_questions']} training
  questions, {t['split']['heldout_questions']} held out (val_fraction {t['split']['val_fraction']}, seed
  {t['split']['split_seed']}).
- Command: `{t['command']}`
- {t['steps']} GRPO steps; config sha256 `{t['config_sha256'][:16]}`; code at commit `{t['commit'] or 'unknown'}`.
- Prompt: layout `{manifest['prompt']['layout']}`, think {'on' if manifest['prompt']['think'] else 'off'}.

{settings_md}{held_md}{ablation_md}
## Limits
- Trained on {t['split']['train_questions']} questions' text: images are judged by their captions, not pixels.
{LIMITS[stage]}{label_limit}{reader_limit if stage == 1 else ""}
"""


HUB_NAMES = {"base": "HuggingFaceTB/SmolLM2-135M-Instruct", "qwen2.5-coder-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}
CARD_NOTE = "captions stand in for pixels"
USES = {1: "`mmrag ask`, `demo`, `serve` and `evaluate` load it with `--model default`; `--model base` is the "
           "untrained model.",
        2: "It reads the candidates stage 1 kept, reasons, ranks the evidence and answers: the pipeline loads it with "
           "`stage2_model: reader`; `stage2_model: qwen2.5-coder-0.5b` is the untrained reader."}
LIMITS = {1: "- Stage 1 judges relevance only; the answer comes from stage 2.\n"
             "- Trained on WebQA only: on another benchmark's bare image titles (MMQA dev image questions) it picks no "
             "better evidence than the retriever alone (docs/results.md).",
          2: "- Stage 2 sees the candidates' text only (captions for images), at most a few candidates per question."}


def record_ablation(folder: str | Path, summary: dict[str, Any], *, command: str = "") -> None:
    """Put an `mmrag ablate` summary into a shipped model's manifest and rewrite its card from it (atomically)."""
    from mmrag_rft.config import atomic_write_text

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest:
        raise ValueError(f"{folder}: no {MANIFEST}; record an ablation only in an exported model folder")
    keep = ("description", "n", "qa_acc", "retrieval_f1", "retrieval_p", "retrieval_r", "sources_ndcg@5",
            "stage2_fallbacks", "abstained", "s_per_question")
    manifest["ablation"] = {"note": summary.get("note", ""), "data": summary.get("data"),
                            "questions": summary.get("questions"), "command": command,
                            "systems": {k: {f: v.get(f) for f in keep} for k, v in summary["systems"].items()}}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(folder / "README.md", model_card(manifest))
