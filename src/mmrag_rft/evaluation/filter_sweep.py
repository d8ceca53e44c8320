"""The coarse filter's operating point: candidates removed and stage-2 prompt tokens saved against the gold-evidence
recall kept, for stage 1's order, the retriever's and their fusion (`mmrag filter-sweep`).

Stage 1 (score mode) judges every candidate of each question's own pool once; the scores are cached to a JSONL file
(one line per question, resumable after a kill). Thresholds x top-k are then swept offline: the survivors (best
first) form the stage-2 prompt, tokenised with the model's own chat template, against the prompt over the whole pool.
A trained model is measured on one side of its run's split (`side`); the fused order's operating point is chosen on
the training side (`chosen_fused_point`) and carried, fixed, to the held-out side (`operating_point`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmrag_rft.data.schema import Sample

THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]
TOP_KS = [1, 2, 3, 5, 8, 10, 15, 0]  # 0 = no cap
RECALL_TARGET = 0.95
SAVED_TARGET = 0.60
WEIGHTS = [0.25, 0.5, 1.0, 2.0, 4.0]  # retrieval weights of the fused order's sensitivity check
FUSED_CURVE = "fused stage 1 + retriever, top-k only"


def fused_key(weight: float) -> str:
    return f"fused_order_w{weight:g}"


# -- cache -------------------------------------------------------------------------------------------------

def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """qid -> row; a torn last line (killed mid-write) is ignored and rewritten on the next run."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
            rows[r["qid"]] = r
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return rows


def rewrite_cache(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    from mmrag_rft.config import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))


def model_key(spec: str, model_id: str) -> str:
    """Cache name of a model: its path plus its weight files' sizes and times, so a folder re-exported by a longer
    run (same path, new weights) never reads the scores of the old ones."""
    p = Path(spec).expanduser()
    raw = str(p.resolve()) if p.exists() else spec
    if p.is_dir():
        raw += "".join(f"|{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(p.iterdir())
                       if f.suffix in {".safetensors", ".bin", ".pt"})
    return f"{Path(model_id).name or 'model'}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


# -- sweep -------------------------------------------------------------------------------------------------

def survivors(order: list[str], scores: dict[str, float] | None, threshold: float, top_k: int) -> int:
    """How many of `order` (best first) survive: score >= threshold, at most top_k (0 = no cap)."""
    n = len(order) if scores is None else sum(scores[c] >= threshold for c in order)
    return min(n, top_k) if top_k > 0 else n


def summarise(qs: list[dict[str, Any]], per_question: list[tuple[list[str], list[str], int, int]],
              **labels: Any) -> dict[str, Any]:
    """Aggregate (pool ids, kept ids, pool-prompt tokens, kept-prompt tokens), one per question of `qs`: removed
    fraction, tokens saved, gold recall (micro), questions left empty; `labels` name the operating point."""
    pool = sum(len(p) for p, _, _, _ in per_question)
    kept = sum(len(k) for _, k, _, _ in per_question)
    gold = sum(len(q["gold"]) for q in qs)
    gold_kept = sum(len(set(k) & set(q["gold"])) for (_, k, _, _), q in zip(per_question, qs))
    tok_all = sum(t for _, _, t, _ in per_question)
    tok_kept = sum(t for _, _, _, t in per_question)
    return {**labels, "removed": 1 - kept / pool, "tokens_saved": 1 - tok_kept / tok_all,
            "gold_recall": gold_kept / gold if gold else float("nan"),
            "empty_questions": sum(not k for _, k, _, _ in per_question), "mean_kept": kept / len(qs)}


def point(qs: list[dict[str, Any]], key: str, threshold: float, top_k: int, use_scores: bool) -> dict[str, float]:
    """One operating point of an order: its survivors are a prefix of it."""
    rows = []
    for q in qs:
        order = q[key]
        n = survivors(order, q["scores"] if use_scores else None, threshold, top_k)
        # nothing kept: stage 2 is not run (abstention)
        rows.append((order, order[:n], q["tokens"][key][len(order)], q["tokens"][key][n] if n else 0))
    return summarise(qs, rows, threshold=threshold, top_k=top_k)


def kept_point(qs: list[dict[str, Any]], name: str, f: Any) -> dict[str, float]:
    """Like `point`, for a kept set that need not be a prefix of one order (the fused filter with a threshold)."""
    rows = [(q["stage1_order"], q["default_kept"][name]["ids"], q["tokens"]["stage1_order"][-1],
             q["default_kept"][name]["tokens"]) for q in qs]
    return summarise(qs, rows, threshold=f.threshold, top_k=f.top_k, order=f.order)


def best_at_recall(points: list[dict[str, float]], recall: float) -> dict[str, float] | None:
    ok = [p for p in points if p["gold_recall"] >= recall]
    return max(ok, key=lambda p: (p["tokens_saved"], p["gold_recall"])) if ok else None


def choose_fused_point(per_weight: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The operating point to carry to other questions: most tokens saved at the recall target over all weights;
    ties go to the higher recall, then to the weight nearest 1 (the untuned default)."""
    ok = [p for p in per_weight.values() if p is not None]
    return max(ok, key=lambda p: (round(p["tokens_saved"], 9), p["gold_recall"], -abs(math.log(p["retrieval_weight"]))),
               default=None)


def read_operating_point(path: Path) -> dict[str, Any]:
    """`chosen_fused_point` of a sweep run on other questions, with a clear error for any other file."""
    try:
        p = json.loads(path.read_text(encoding="utf-8"))["chosen_fused_point"]
        return {"retrieval_weight": float(p["retrieval_weight"]), "top_k": int(p["top_k"]), "chosen_on": p["chosen_on"]}
    except FileNotFoundError:
        raise ValueError(f"--operating-point {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"--operating-point {path}: not a filter sweep with a chosen_fused_point ({e!r})") from None


def plot(curves: dict[str, list[dict[str, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p["gold_recall"])
        style = "k--" if name.startswith("retriever") else "-"
        ax.plot([p["gold_recall"] for p in pts], [p["tokens_saved"] for p in pts], style, marker=".", label=name)
    ax.axvline(RECALL_TARGET, color="grey", lw=0.8, ls=":")
    ax.axhline(SAVED_TARGET, color="grey", lw=0.8, ls=":")
    ax.fill_between([RECALL_TARGET, 1.0], SAVED_TARGET, 1.0, color="green", alpha=0.08, label="goal region")
    ax.set_xlabel("gold-evidence recall kept")
    ax.set_ylabel("stage-2 prompt tokens saved")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    from mmrag_rft.config import save_png

    save_png(fig, out, dpi=120)


# -- run -----------------------------------------------------------------------------------------------------

def score_pools(samples: Sequence[Sample], backend: Any, cache: Path, *, layout: str = "default",
                progress: Callable[[str, int], Any] | None = None) -> tuple[dict[str, dict[str, Any]], int, float]:
    """Stage-1 P(yes) of every candidate in each question's pool and the retriever's order of that pool, cached one
    line per question in `cache` (resumes after a kill). Returns (qid -> row, candidates scored now, seconds)."""
    from mmrag_rft.prompts import stage1_prompt
    from mmrag_rft.retrieval.pool import rank_pool

    cache.parent.mkdir(parents=True, exist_ok=True)
    rows = read_cache(cache)
    rewrite_cache(cache, rows)  # drops a torn tail before appending
    todo = [s for s in samples if s.qid not in rows]
    model_id = getattr(backend, "model_id", "")
    t0, n_scored = time.perf_counter(), 0
    advance = progress(f"stage 1 over pools ({len(rows)} cached)", len(todo)) if progress else None
    with cache.open("a", encoding="utf-8") as fh:
        for s in todo:
            tq = time.perf_counter()
            prompts = [stage1_prompt(s.question, c, style="score", layout=layout) for c in s.candidates]
            p = backend.score_yes_no(prompts)
            ret = [h.id for h in rank_pool(s.question, s.candidates, top_n=len(s.candidates))]
            row = {"qid": s.qid, "model": model_id, "scores": {c.id: float(x) for c, x in zip(s.candidates, p)},
                   "retriever_order": ret, "seconds": time.perf_counter() - tq}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows[s.qid] = row
            n_scored += len(prompts)
            if advance:
                advance()
    return rows, n_scored, time.perf_counter() - t0


def default_filters(rrf_k: int, retrieval_weight: float) -> dict[str, Any]:
    """The pipeline's own filter at its default operating point, with each order."""
    from mmrag_rft.pipeline import FilterConfig

    return {"stage1": FilterConfig(order="stage1"),
            "fused": FilterConfig(order="fused", rrf_k=rrf_k, retrieval_weight=retrieval_weight)}


def question_rows(samples: Sequence[Sample], rows: dict[str, dict[str, Any]], backend: Any, *, rrf_k: int,
                  retrieval_weight: float, extra_weights: Sequence[float] = (),
                  progress: Callable[[str, int], Any] | None = None) -> list[dict[str, Any]]:
    """Per question: its orders (stage 1, retriever, fused at each weight), the stage-2 prompt tokens of every prefix
    of each (survivors are always a prefix of one), and what the pipeline's default filters keep."""
    from mmrag_rft.pipeline import Judgement, coarse_filter
    from mmrag_rft.prompts import stage2_prompt
    from mmrag_rft.retrieval.fusion import reciprocal_rank_fusion

    filters = default_filters(rrf_k, retrieval_weight)

    def n_tokens(question: str, cands: list[Any]) -> int:
        text = backend.render(stage2_prompt(question, cands))
        return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])

    qs: list[dict[str, Any]] = []
    advance = progress("stage-2 prompt tokens", len(samples)) if progress else None
    for s in samples:
        r = rows[s.qid]
        by_id = {c.id: c for c in s.candidates}
        scores = r["scores"]
        ret = list(r["retriever_order"]) + [c for c in by_id if c not in set(r["retriever_order"])]
        s1 = sorted(ret, key=lambda c: -scores[c])  # ties in P(yes) keep the retriever's order, as the pipeline
        orders = {"stage1_order": s1, "retriever_order": ret}
        for w in sorted({retrieval_weight, *WEIGHTS, *extra_weights}):
            orders[fused_key(w)] = [c for c, _ in reciprocal_rank_fusion([s1, ret], k=rrf_k, weights=[1, w])]
        toks = {k: [0] + [n_tokens(s.question, [by_id[c] for c in order[:n]]) for n in range(1, len(order) + 1)]
                for k, order in orders.items()}
        js = [Judgement(id=c, score=scores[c], relevant=False, kept=False, retrieval_rank=i + 1)
              for i, c in enumerate(ret)]
        default_kept = {}
        for name, f in filters.items():
            ids = coarse_filter(js, f)
            default_kept[name] = {"ids": ids, "tokens": n_tokens(s.question, [by_id[c] for c in ids]) if ids else 0}
        qs.append({"qid": s.qid, "gold": list(s.gold_ids), "scores": scores, **orders, "tokens": toks,
                   "default_kept": default_kept})
        if advance:
            advance()
    return qs


def sweep(qs: list[dict[str, Any]], *, rrf_k: int, retrieval_weight: float, choose: str = "k",
          fixed: dict[str, Any] | None = None, chosen_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every operating point over `qs`, the best ones at the recall target, the point chosen here (`choose`: "k",
    top-k at `retrieval_weight`; "weight_and_k", the weight too) and, given `fixed`, that point measured here."""
    max_pool = max(len(q["stage1_order"]) for q in qs)
    curves: dict[str, list[dict[str, float]]] = {}
    for k in TOP_KS:
        curves[f"stage 1 threshold sweep, top-k {k or 'all'}"] = [point(qs, "stage1_order", t, k, True)
                                                                   for t in THRESHOLDS]
    ks = list(range(1, max_pool + 1))
    curves["stage 1 top-k only (threshold 0)"] = [point(qs, "stage1_order", 0.0, k, True) for k in ks]
    curves["retriever top-k only (rank_pool)"] = [point(qs, "retriever_order", 0.0, k, False) for k in ks]
    curves[FUSED_CURVE] = [point(qs, fused_key(retrieval_weight), 0.0, k, False) for k in ks]
    weight_sweep = {}
    for w in WEIGHTS:
        b = best_at_recall([point(qs, fused_key(w), 0.0, k, False) for k in ks], RECALL_TARGET)
        weight_sweep[str(w)] = b if b is None else {**b, "retrieval_weight": w}
    best_fused = best_at_recall(curves[FUSED_CURVE], RECALL_TARGET)
    if choose == "k":
        chosen = best_fused and {**best_fused, "retrieval_weight": retrieval_weight}
    else:
        chosen = choose_fused_point(weight_sweep)
    fixed_point = None
    if fixed:
        fixed_point = {**point(qs, fused_key(fixed["retrieval_weight"]), 0.0, fixed["top_k"], False),
                       "retrieval_weight": fixed["retrieval_weight"], "chosen_on": fixed["chosen_on"]}
    filters = default_filters(rrf_k, retrieval_weight)
    default_point = point(qs, "stage1_order", 0.5, 5, True)
    default_points = {name: kept_point(qs, name, f) for name, f in filters.items()}
    if abs(default_points["stage1"]["tokens_saved"] - default_point["tokens_saved"]) > 1e-9:
        raise RuntimeError("the sweep's stage-1 point and the pipeline's filter disagree")
    all_stage1 = [p for name, pts in curves.items() if name.startswith("stage 1") for p in pts]
    best_s1 = best_at_recall(all_stage1, RECALL_TARGET)
    best_ret = best_at_recall(curves["retriever top-k only (rank_pool)"], RECALL_TARGET)
    gold_p = [q["scores"][g] for q in qs for g in q["gold"]]
    neg_p = [v for q in qs for c, v in q["scores"].items() if c not in set(q["gold"])]
    return {
        "questions": len(qs), "candidates": sum(len(q["stage1_order"]) for q in qs), "gold": len(gold_p),
        "mean_p_yes": {"gold": sum(gold_p) / max(1, len(gold_p)), "negatives": sum(neg_p) / max(1, len(neg_p))},
        "pipeline_default_point(threshold 0.5, top_k 5)": default_point,
        "pipeline_default_point_fused(threshold 0.5, top_k 5, filter.order fused)": default_points["fused"],
        f"best_stage1_at_recall>={RECALL_TARGET}": best_s1,
        f"best_retriever_at_recall>={RECALL_TARGET}": best_ret,
        f"best_fused_at_recall>={RECALL_TARGET}": best_fused,
        "fused": {"rrf_k": rrf_k, "retrieval_weight": retrieval_weight,
                  "what": "filter.order: fused (reciprocal-rank fusion of stage 1's order and the retriever's), top-k"},
        "fused_weight_sensitivity": {"note": "best point at the recall target per retrieval weight, on these same "
                                             "questions: a sensitivity check, not a tuned setting",
                                     "points": weight_sweep},
        "chosen_fused_point": chosen and {
            **chosen, "chosen_on": {**(chosen_on or {}), "questions": len(qs), "chose": choose},
            "pipeline_settings": {"filter.order": "fused", "filter.threshold": 0.0, "filter.top_k": chosen["top_k"],
                                  "filter.retrieval_weight": chosen["retrieval_weight"], "filter.rrf_k": rrf_k}},
        "fixed_operating_point": fixed_point,
        "goal_met_at_fixed_operating_point": None if fixed_point is None else bool(
            fixed_point["gold_recall"] >= RECALL_TARGET and fixed_point["tokens_saved"] >= SAVED_TARGET),
        "goal": f">= {SAVED_TARGET:.0%} fewer stage-2 tokens at >= {RECALL_TARGET:.0%} gold recall (trained stage 1)",
        "goal_met_by_this_model": bool(best_s1 and best_s1["tokens_saved"] >= SAVED_TARGET),
        "goal_met_by_this_model_fused_with_retriever": bool(best_fused and best_fused["tokens_saved"] >= SAVED_TARGET),
        "curves": curves,
    }


def summary_rows(res: dict[str, Any], qs: list[dict[str, Any]]) -> list[list[Any]]:
    """The readable table: the pipeline's defaults, the best points, the fixed point, a few top-k cuts."""
    def row(name: str, p: dict[str, float] | None) -> list[Any]:
        if p is None:
            return [name, "-", "-", "never reaches the recall", "-", "-"]
        return [name, p["threshold"], p["top_k"] or "all", p["removed"], p["tokens_saved"], p["gold_recall"]]

    fixed = res["fixed_operating_point"]
    return [
        row("pipeline default", res["pipeline_default_point(threshold 0.5, top_k 5)"]),
        row("pipeline default, filter.order fused",
            res["pipeline_default_point_fused(threshold 0.5, top_k 5, filter.order fused)"]),
        row(f"best stage 1 @ recall >= {RECALL_TARGET}", res[f"best_stage1_at_recall>={RECALL_TARGET}"]),
        row(f"best retriever @ recall >= {RECALL_TARGET}", res[f"best_retriever_at_recall>={RECALL_TARGET}"]),
        row(f"best fused (stage 1 + retriever) @ recall >= {RECALL_TARGET}", res[f"best_fused_at_recall>={RECALL_TARGET}"]),
        *([row(f"fused, fixed point chosen on {fixed['chosen_on'].get('side')} questions (weight "
               f"{fixed['retrieval_weight']:g})", fixed)] if fixed else []),
        *[row(f"stage 1, top-k {k}", point(qs, "stage1_order", 0.0, k, True)) for k in (3, 5, 10)],
        *[row(f"retriever, top-k {k}", point(qs, "retriever_order", 0.0, k, False)) for k in (3, 5, 10)],
    ]


def plot_curves(res: dict[str, Any], out: Path, title: str) -> None:
    plot({k: v for k, v in res["curves"].items() if k.endswith(("top-k 5", "top-k 10", "top-k all")) or "only" in k},
         out, title)


def run_filter_sweep(samples: Sequence[Sample], backend: Any, *, cache: Path, layout: str, rrf_k: int = 60,
                     retrieval_weight: float = 1.0, choose: str = "k", fixed: dict[str, Any] | None = None,
                     chosen_on: dict[str, Any] | None = None,
                     progress: Callable[[str, int], Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score the pools (cached), build each question's orders and token counts, sweep: (result, per-question rows)."""
    rows, n_scored, seconds = score_pools(samples, backend, cache, layout=layout, progress=progress)
    qs = question_rows(samples, rows, backend, rrf_k=rrf_k, retrieval_weight=retrieval_weight,
                       extra_weights=[fixed["retrieval_weight"]] if fixed else [], progress=progress)
    res = sweep(qs, rrf_k=rrf_k, retrieval_weight=retrieval_weight, choose=choose, fixed=fixed, chosen_on=chosen_on)
    res["stage1_scoring"] = {
        "candidates_scored_this_run": n_scored, "seconds": seconds, "cache": str(cache),
        # when the scores were cached earlier: the time they took then
        "seconds_when_scored": sum(rows[q["qid"]].get("seconds", 0.0) for q in qs),
        "questions_with_timing": sum("seconds" in rows[q["qid"]] for q in qs)}
    return res, qs
