"""Is relevance in the policy's representation at all? A linear probe on its hidden state at the verdict position.

stage1_prompt_probe.py shows the untrained policy's P(yes) carries no relevance signal. That leaves two readings:
the information is in the hidden state and only the yes/no read-out ignores it (then RL has to learn a read-out:
a matter of enough updates), or it is not there (then no amount of RL on this policy will find it). This script
takes the frozen policy's hidden state at the token where the verdict is read (score-style stage-1 prompt),
fits a logistic regression on it with 5-fold cross-validation grouped by question (no question in both train and
test folds), and reports the out-of-fold AUC for gold vs the question's own distractors and vs off-topic
candidates, per layer, next to the word-overlap reference. WebQA val records; captions stand in for pixels.

    .venv/bin/python benchmarks/stage1_linear_probe.py --questions 150
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from stage1_prompt_probe import build_pairs  # noqa: E402

NOTE = "captions stand in for pixels"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--model", default="default", help="'default' or a (trained) model folder")
    ap.add_argument("--questions", type=int, default=150)
    ap.add_argument("--own-neg", type=int, default=4)
    ap.add_argument("--off-neg", type=int, default=2)
    ap.add_argument("--layout", default="default")
    ap.add_argument("--max-chars", type=int, default=300, help="candidate text cut, as in the training configs")
    ap.add_argument("--layers", default="8,15,22,-1", help="hidden-state layers probed (-1 = last)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mmrag_rft.metrics.ranking import roc_auc
    from mmrag_rft.prompts import stage1_prompt

    layers = [int(x) for x in args.layers.split(",")]
    groups = build_pairs(common.load_webqa(args.data), args.questions, args.own_neg, args.off_neg, args.seed)
    backend = common.load_policy(args.model)
    feats: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    kind, qidx, p_yes = [], [], []  # kind: "gold" | "own" | "off"
    t0 = time.time()
    with common.progress() as bar, torch.inference_mode():
        task = bar.add_task("hidden states", total=len(groups))
        for gi, (q, gold, own, off) in enumerate(groups):
            cands = gold + own + off
            prompts = [stage1_prompt(q, c, style="score", layout=args.layout, max_chars=args.max_chars)
                       for c in cands]
            enc = backend.encode(prompts)
            enc["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)
            out = backend.model(**enc, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            for k in layers:
                feats[k].append(out.hidden_states[k][:, -1, :].float().cpu().numpy())
            p_yes += backend.yes_no_from_logits(out.logits[:, -1, :])
            kind += ["gold"] * len(gold) + ["own"] * len(own) + ["off"] * len(off)
            qidx += [gi] * len(cands)
            bar.advance(task)
    embed_s = time.time() - t0
    kind_a, q_a = np.array(kind), np.array(qidx)
    y = (kind_a == "gold").astype(int)

    def aucs(score: np.ndarray) -> dict[str, float]:
        out = {}
        for neg in ("own", "off"):
            m = (kind_a == "gold") | (kind_a == neg)
            out[neg] = roc_auc(score[m].tolist(), (y[m] == 1).tolist())
        return out

    # a read-out that sees only the candidate's type: how much of a probe's AUC a modality prior alone explains
    modality = np.array([c.modality == "image" for q, gold, own, off in groups for c in gold + own + off], float)
    results = {"p_yes_zero_shot": aucs(np.array(p_yes)), "modality_only (image = 1)": aucs(modality)}

    def probe(x: np.ndarray, train_questions: int | None = None) -> np.ndarray:
        """Out-of-fold P(gold); `train_questions` caps each fold's training set (a learning curve)."""
        rng = np.random.default_rng(args.seed)
        oof = np.zeros(len(y))
        for tr, te in GroupKFold(n_splits=5).split(x, y, q_a):
            if train_questions is not None:
                keep = rng.choice(np.unique(q_a[tr]), size=min(train_questions, len(np.unique(q_a[tr]))),
                                  replace=False)
                tr = tr[np.isin(q_a[tr], keep)]
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced"))
            clf.fit(x[tr], y[tr])
            oof[te] = clf.predict_proba(x[te])[:, 1]
        return oof

    for k in layers:
        results[f"linear_probe_layer_{k}"] = aucs(probe(np.concatenate(feats[k])))
    # how many labelled pairs a (perfectly optimised) linear read-out needs: train on the first n questions of
    # each fold only; the RL runs saw 280 prompts (about 70 questions' worth at 4 pairs each)
    best = max(layers, key=lambda k: results[f"linear_probe_layer_{k}"]["own"])
    x_best, pairs_per_q = np.concatenate(feats[best]), len(y) / len(groups)
    curve = []
    n_train = int(len(groups) * 0.8)  # questions in a training fold; a smaller run gets a shorter curve
    for nq in sorted({min(n, n_train) for n in (5, 10, 20, 40, 80, n_train)}):
        r = aucs(probe(x_best, nq))
        curve.append({"train_questions": nq, "train_pairs_approx": round(nq * pairs_per_q), **r})
    common.print_table(
        f"Stage-1 relevance in the frozen policy ({len(groups)} WebQA questions, {len(y)} pairs, 5-fold by "
        f"question; {NOTE})",
        ["read-out", "AUC gold vs own distractors", "AUC gold vs off-topic"],
        [[k, v["own"], v["off"]] for k, v in results.items()])
    common.print_table(f"Learning curve of the layer-{best} probe (out-of-fold AUC)",
                       ["train questions", "~train pairs", "AUC own", "AUC off-topic"],
                       [[c["train_questions"], c["train_pairs_approx"], c["own"], c["off"]] for c in curve])
    path = common.write_result("stage1_linear_probe", {
        "note": NOTE, "model": args.model, "layout": args.layout, "max_chars": args.max_chars,
        "questions": len(groups), "pairs": int(len(y)), "gold": int(y.sum()), "seconds_forward": round(embed_s, 1),
        "probe": "StandardScaler + LogisticRegression(C=0.05, balanced), 5-fold GroupKFold by question, "
                 "out-of-fold AUC",
        "auc": results, "learning_curve_layer": best, "learning_curve": curve,
        "reference": "benchmarks/results/lexical_baseline.json (word overlap: own 0.756, off-topic 0.982 on all 293 "
                     "questions)",
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
