"""Stage 1: score mode (one forward pass per candidate) vs reason mode (sampled <think>/<answer>, majority vote).

On the same WebQA candidates (captions stand in for pixels), through the pipeline's own `Pipeline.judge`:
- time per candidate of each mode and the speed-up (target >= 5x);
- agreement of the score-mode decision with the reason-mode majority, at P(yes) >= 0.5 and at the threshold
  whose yes-rate matches reason mode's;
- separately, score mode with the shared-prefix KV reuse on vs off (same outputs: max |dP| reported).

    .venv/bin/python benchmarks/stage1_modes.py                 # 3 questions x 10 candidates (~5 min)
    .venv/bin/python benchmarks/stage1_modes.py --questions 5 --candidates 15   # the committed run (~14 min)
    .venv/bin/python benchmarks/stage1_modes.py --questions 10 --samples 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def pick_candidates(sample, n: int) -> list:
    """Gold evidence plus the first pool distractors, in pool order, n in all."""
    gold = set(sample.gold_ids)
    chosen = [c for c in sample.candidates if c.id in gold][:n]
    chosen += [c for c in sample.candidates if c.id not in gold][: max(0, n - len(chosen))]
    order = {c.id: i for i, c in enumerate(sample.candidates)}
    return sorted(chosen, key=lambda c: order[c.id])


def matched_threshold(scores: list[float], yes_rate: float) -> float:
    """The P(yes) cut whose share of yes decisions is closest to `yes_rate`."""
    s = sorted(scores, reverse=True)
    k = round(yes_rate * len(s))
    if k <= 0:
        return s[0] + 1e-9
    return s[k - 1]


def agreement(a: list[bool], b: list[bool]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else float("nan")


def cohen_kappa(a: list[bool], b: list[bool]) -> float:
    n = len(a)
    if not n:
        return float("nan")
    po = agreement(a, b)
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (po - pe) / (1 - pe) if pe < 1 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--model", default="default", help="'default' or a model folder")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--heldout", default=None,
                    help="a training run folder: take the questions from its held-out (val) side only")
    ap.add_argument("--candidates", type=int, default=10, help="candidates per question (gold included)")
    ap.add_argument("--samples", type=int, default=3, help="reason mode: sampled judgements per candidate")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="score-mode timings per question (median taken)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/stage1_modes.json)")
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    import torch

    from mmrag_rft.pipeline import Pipeline, PipelineConfig
    from mmrag_rft.prompts import stage1_prompt

    torch.manual_seed(args.seed)
    samples = common.load_webqa(args.data, limit=None if args.heldout else args.questions)
    if args.heldout:  # a trained model is measured on questions it never saw
        samples = common.run_side(samples, args.heldout)[: args.questions]
    t0 = time.perf_counter()
    backend = common.load_policy(args.model)
    load_s = time.perf_counter() - t0
    score_cfg = PipelineConfig(stage1_mode="score", stage1_batch_size=args.candidates)
    reason_cfg = PipelineConfig(stage1_mode="reason", stage1_samples=args.samples,
                                stage1_max_new_tokens=args.max_new_tokens, stage1_batch_size=args.candidates)
    pipe = Pipeline(backend, config=score_cfg)

    # warm-up (first-call allocations, lazy imports) outside every timing
    warm = [(c, None) for c in pick_candidates(samples[0], min(4, args.candidates))]
    pipe.judge(samples[0].question, warm, score_cfg)
    backend.score_yes_no([stage1_prompt(samples[0].question, c, style="score") for c, _ in warm],
                         reuse_prefix=False)
    pipe.judge(samples[0].question, warm[:1], PipelineConfig(stage1_mode="reason", stage1_samples=1,
                                                             stage1_max_new_tokens=4))

    per_q = []
    all_score, all_reason_share, all_gold, all_valid = [], [], [], []
    max_dp = 0.0
    t_score = t_reason = t_reuse = t_plain = 0.0
    n_total = 0
    with common.progress() as prog:
        task = prog.add_task("questions", total=len(samples))
        for s in samples:
            cands = pick_candidates(s, args.candidates)
            retrieved = [(c, None) for c in cands]
            prompts = [stage1_prompt(s.question, c, style="score") for c in cands]
            score_times, reuse_times, plain_times = [], [], []
            judg_score: list = []
            p_plain: list[float] = []
            for _ in range(max(1, args.repeats)):  # interleaved so load changes hit all arms alike
                a = time.perf_counter()
                judg_score = pipe.judge(s.question, retrieved, score_cfg)  # backend default: prefix reuse on
                b = time.perf_counter()
                p_plain = backend.score_yes_no(prompts, reuse_prefix=False)
                c = time.perf_counter()
                score_times.append(b - a)
                reuse_times.append(b - a)
                plain_times.append(c - b)
            p_reuse = [j.score for j in judg_score]
            a = time.perf_counter()
            judg_reason = pipe.judge(s.question, retrieved, reason_cfg)
            reason_time = time.perf_counter() - a
            max_dp = max(max_dp, max(abs(x - y) for x, y in zip(p_reuse, p_plain)))
            ts, tr = statistics.median(score_times), reason_time
            tu, tp = statistics.median(reuse_times), statistics.median(plain_times)
            t_score += ts
            t_reason += tr
            t_reuse += tu
            t_plain += tp
            n_total += len(cands)
            gold = set(s.gold_ids)
            scores = [j.score for j in judg_score]
            shares = [j.score for j in judg_reason]
            all_score += scores
            all_reason_share += shares
            all_gold += [c.id in gold for c in cands]
            all_valid += [bool(j.reason) for j in judg_reason]
            per_q.append({"qid": s.qid, "candidates": len(cands), "gold": len(gold & {c.id for c in cands}),
                          "score_s": ts, "reason_s": tr, "reuse_s": tu, "plain_s": tp,
                          "speedup": tr / ts, "prefix_speedup": tp / tu})
            prog.advance(task)

    reason_yes = [x >= 0.5 for x in all_reason_share]
    score_yes = [x >= 0.5 for x in all_score]
    yes_rate = sum(reason_yes) / len(reason_yes)
    thr = matched_threshold(all_score, yes_rate)
    score_matched = [x >= thr for x in all_score]

    def acc(pred: list[bool]) -> float:
        return agreement(pred, all_gold)

    res = {
        "model": getattr(backend, "model_id", args.model), "heldout_of": args.heldout,
        "note": common.CAPTION_NOTE,
        "questions": len(samples), "candidates": n_total, "reason_samples": args.samples,
        "reason_max_new_tokens": args.max_new_tokens, "model_load_s": load_s,
        "per_candidate_ms": {"score": 1000 * t_score / n_total, "reason": 1000 * t_reason / n_total,
                             "score_prefix_reuse": 1000 * t_reuse / n_total,
                             "score_no_prefix_reuse": 1000 * t_plain / n_total},
        "speedup_score_vs_reason": t_reason / t_score,
        "speedup_prefix_reuse": t_plain / t_reuse,
        "prefix_reuse_max_abs_dp": max_dp,
        "agreement_at_0.5": agreement(score_yes, reason_yes),
        "kappa_at_0.5": cohen_kappa(score_yes, reason_yes),
        "matched_threshold": thr,
        "agreement_at_matched_threshold": agreement(score_matched, reason_yes),
        "kappa_at_matched_threshold": cohen_kappa(score_matched, reason_yes),
        "yes_rate": {"reason_majority": yes_rate, "score_0.5": sum(score_yes) / len(score_yes),
                     "gold": sum(all_gold) / len(all_gold)},
        "accuracy_vs_gold": {"score_0.5": acc(score_yes), "score_matched": acc(score_matched),
                             "reason_majority": acc(reason_yes)},
        "reason_parse_rate": sum(all_valid) / len(all_valid),
        "targets": {"speedup>=5x": t_reason / t_score >= 5},
        "per_question": per_q,
        "timing": "wall clock per question: score arms = median of --repeats interleaved runs, reason = one run",
    }
    path = common.write_result("stage1_modes", res, args.out)

    common.print_table(f"Stage 1 modes ({res['model']}, {n_total} candidates, {common.CAPTION_NOTE})",
                       ["measure", "value"], [
                           ["score mode, ms/candidate", res["per_candidate_ms"]["score"]],
                           [f"reason mode ({args.samples} samples), ms/candidate", res["per_candidate_ms"]["reason"]],
                           ["speed-up score vs reason (target >= 5x)", res["speedup_score_vs_reason"]],
                           ["agreement with reason majority @ P>=0.5", res["agreement_at_0.5"]],
                           [f"agreement @ matched threshold {thr:.3f}", res["agreement_at_matched_threshold"]],
                           ["yes-rate reason / score@0.5 / gold",
                            f"{yes_rate:.3f} / {res['yes_rate']['score_0.5']:.3f} / {res['yes_rate']['gold']:.3f}"],
                           ["accuracy vs gold: score@0.5 / reason",
                            f"{res['accuracy_vs_gold']['score_0.5']:.3f} / {res['accuracy_vs_gold']['reason_majority']:.3f}"],
                           ["prefix reuse on, ms/candidate", res["per_candidate_ms"]["score_prefix_reuse"]],
                           ["prefix reuse off, ms/candidate", res["per_candidate_ms"]["score_no_prefix_reuse"]],
                           ["speed-up of prefix reuse", res["speedup_prefix_reuse"]],
                           ["max |dP| reuse on vs off", f"{max_dp:.2e}"],
                       ])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
