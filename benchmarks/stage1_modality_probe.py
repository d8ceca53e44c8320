"""Does a stage-1 model's P(yes) follow the candidate's modality label rather than its content?

Every gold piece of the WebQA val records is an image (421 gold images, 0 gold text passages), so a stage-1 model
trained on them can learn "text -> no" from the `Evidence (text)` / `Evidence (image caption)` label alone. This
probe scores the same candidates twice, once as the model was trained to see them and once with the label flipped
(image <-> text; the text shown is identical), on the questions the model never trained on. A shift of P(yes)
with the label is a prior on the modality, which a corpus whose answers sit in text passages pays for. Models
trained with the `unlabelled` layout show no label, so both scorings are the same prompt. What the model reads
of the content is measured within each question's images (gold against that pool's image negatives), next to the
retriever's order of the same candidates. Captions stand in for pixels.

    .venv/bin/python benchmarks/stage1_modality_probe.py --model default --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FLIP = {"image": "text", "text": "image"}


def probe_candidates(sample, per_kind: int):
    """A question's gold images, and up to `per_kind` image and text negatives, in the record's order."""
    gold = set(sample.gold_ids)
    images = [c for c in sample.candidates if c.modality == "image"]
    texts = [c for c in sample.candidates if c.modality == "text" and c.id not in gold]
    return ([c for c in images if c.id in gold] + [c for c in images if c.id not in gold][:per_kind]
            + texts[:per_kind])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--model", default="default", help="a model spec: default, a run or an exported adapter folder")
    ap.add_argument("--heldout", default=None, help="the run or model whose split.json names the held-out "
                                                     "questions (default: --model)")
    ap.add_argument("--per-kind", type=int, default=4, help="image and text negatives per question")
    ap.add_argument("--name", default=None, help="result file name (default: stage1_modality_probe_<model>)")
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    from mmrag_rft.evaluation.evaluate import heldout_qids
    from mmrag_rft.metrics.ranking import roc_auc
    from mmrag_rft.models.loading import model_name, trained_layout
    from mmrag_rft.prompts import stage1_prompt
    from mmrag_rft.retrieval.pool import rank_pool

    held = heldout_qids(args.heldout or args.model)
    samples = [s for s in common.load_webqa(args.data) if s.qid in held]
    layout = trained_layout(args.model) or "default"
    backend = common.load_policy(args.model)
    rows = []
    with common.progress() as bar:
        task = bar.add_task(f"{len(samples)} held-out questions", total=len(samples))
        for s in samples:
            retrieved = {h.id: i for i, h in enumerate(rank_pool(s.question, s.candidates, top_n=len(s.candidates)), 1)}
            for c in probe_candidates(s, args.per_kind):
                shown = stage1_prompt(s.question, c, style="score", layout=layout)
                flipped = stage1_prompt(s.question, dataclasses.replace(c, modality=FLIP[c.modality]), style="score",
                                        layout=layout)
                same = shown.messages == flipped.messages
                p = backend.score_yes_no([shown] if same else [shown, flipped])
                rows.append({"qid": s.qid, "id": c.id, "modality": c.modality, "gold": c.id in s.gold_ids,
                             "p_yes": p[0], "p_yes_label_flipped": p[-1], "retrieval_rank": retrieved[c.id]})
            bar.advance(task)

    def mean(xs: list[float]) -> float | None:
        return statistics.fmean(xs) if xs else None

    groups = {}
    for mod, gold, name in (("image", True, "gold images"), ("image", False, "image negatives"),
                            ("text", False, "text negatives")):
        r = [x for x in rows if x["modality"] == mod and x["gold"] == gold]
        groups[name] = {"n": len(r), "p_yes": mean([x["p_yes"] for x in r]),
                        "p_yes_label_flipped": mean([x["p_yes_label_flipped"] for x in r]),
                        "shift": mean([x["p_yes_label_flipped"] - x["p_yes"] for x in r])}
    images = [x for x in rows if x["modality"] == "image"]
    labels = [x["gold"] for x in images]

    def per_question_auc(score) -> float | None:
        """Mean over questions of gold images against that question's image negatives: content, within a pool."""
        aucs = []
        for qid in dict.fromkeys(x["qid"] for x in images):
            q = [x for x in images if x["qid"] == qid]
            auc = roc_auc([score(x) for x in q], [x["gold"] for x in q])
            if auc is not None:
                aucs.append(auc)
        return mean(aucs)

    gold_as_text = [x["p_yes_label_flipped"] if x["gold"] else x["p_yes"] for x in rows]
    summary = {
        "groups": groups,
        # gold against every negative of its pools, each as shown
        "auc_as_shown": roc_auc([x["p_yes"] for x in rows], [x["gold"] for x in rows]),
        # the same, had the gold pieces been text passages (their words unchanged, the negatives as shown)
        "auc_gold_as_text": roc_auc(gold_as_text, [x["gold"] for x in rows]),
        # the same image candidates, gold against negatives, as shown and all labelled text
        "auc_images": roc_auc([x["p_yes"] for x in images], labels),
        "auc_images_labelled_text": roc_auc([x["p_yes_label_flipped"] for x in images], labels),
        # within each question's images: the model's P(yes) against the retriever's order of the same pool
        "auc_images_per_question": per_question_auc(lambda x: x["p_yes"]),
        "auc_images_per_question_retriever": per_question_auc(lambda x: -x["retrieval_rank"]),
        # what the label alone is worth: P(yes) labelled image minus labelled text, same candidate, same text
        "label_effect": mean([(x["p_yes"] - x["p_yes_label_flipped"]) * (1 if x["modality"] == "image" else -1)
                              for x in rows]),
    }
    common.print_table(f"stage-1 P(yes) with the modality label flipped: {model_name(args.model)} (layout {layout}; "
                       f"{len(samples)} held-out questions; {common.CAPTION_NOTE})",
                       ["candidates", "n", "P(yes) as shown", "label flipped", "shift"],
                       [[k, v["n"], v["p_yes"], v["p_yes_label_flipped"], v["shift"]] for k, v in groups.items()])
    print(f"label effect (P(yes) as image - as text, same text): {common.fmt(summary['label_effect'])}; "
          f"AUC gold vs negatives {common.fmt(summary['auc_as_shown'])} as shown, "
          f"{common.fmt(summary['auc_gold_as_text'])} with the gold pieces shown as text; "
          f"among the image candidates {common.fmt(summary['auc_images'])} as shown, "
          f"{common.fmt(summary['auc_images_labelled_text'])} labelled text; within each question's images "
          f"{common.fmt(summary['auc_images_per_question'])} (the retriever's order: "
          f"{common.fmt(summary['auc_images_per_question_retriever'])})")
    name = args.name or f"stage1_modality_probe_{Path(args.model).name}"
    path = common.write_result(name, {
        "model": args.model, "model_name": model_name(args.model), "layout": layout, "questions": len(samples),
        "note": common.CAPTION_NOTE, "summary": summary, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
