"""Can the reader rank zero-shot when its reasoning judges each candidate in turn before `<rank>`?

Stage-2 GRPO on the reader has not learned to rank by content (benchmarks/results/HISTORY.md): its lists follow
positions.
GRPO sharpens what a policy already does, so this probe asks whether a prompt that makes the `<think>` text a
point-wise judgement of every candidate ("[i] helps: ..." / "[i] does not help") gives the untrained reader a
ranking signal to start from. Same held-out questions as the shipped models (their split), K candidates = gold + the
retriever's hardest negatives, shuffled once; greedy; `training.heldout` metrics (first pick against chance,
position bias, distinct lists). WebQA val records; captions stand in for pixels.

    .venv/bin/python benchmarks/stage2_prompt_probe.py --questions 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

JUDGE_EACH_SYSTEM = (
    "You answer questions from numbered pieces of evidence (text passages, tables, or images with captions). "
    "First, inside <think></think>, judge each piece in turn, one line each: '[i] helps: why' or '[i] does not "
    "help'. Then list inside <rank></rank> the ids of the pieces that help, most relevant first, joined by ' > '. "
    "Then give the answer as one short sentence inside <answer></answer>. Write nothing else.\n\n"
    "Example\n"
    "Question: Which is taller, the Eiffel Tower or the Tokyo Tower?\n"
    "[1] (text) Tokyo Tower is a communications tower 333 metres tall.\n"
    "[2] (image caption) A cat sleeping on a sofa.\n"
    "[3] (text) The Eiffel Tower is 330 metres tall.\n"
    "Output: <think>[1] helps: Tokyo Tower is 333 m.\n[2] does not help: a cat.\n[3] helps: the Eiffel Tower is "
    "330 m.</think><rank>[1] > [3]</rank><answer>The Tokyo Tower is taller than the Eiffel Tower.</answer>"
)


# Answer first, then cite: for a small reader, finding the piece that holds the answer it wrote is string matching.
CITE_AFTER_ANSWER_SYSTEM = (
    "You answer questions from numbered pieces of evidence (text passages, tables, or images with captions). "
    "First think briefly inside <think></think>, quoting the words of the evidence that answer the question. Then "
    "give the answer as one short sentence inside <answer></answer>. Then list inside <rank></rank> the ids of the "
    "pieces your answer comes from, the one holding the answer first, joined by ' > '. Write nothing else.\n\n"
    "Example\n"
    "Question: Which is taller, the Eiffel Tower or the Tokyo Tower?\n"
    "[1] (text) Tokyo Tower is a communications tower 333 metres tall.\n"
    "[2] (image caption) A cat sleeping on a sofa.\n"
    "[3] (text) The Eiffel Tower is 330 metres tall.\n"
    "Output: <think>'Tokyo Tower is a communications tower 333 metres tall'; 'The Eiffel Tower is 330 metres "
    "tall'.</think><answer>The Tokyo Tower is taller than the Eiffel Tower.</answer><rank>[1] > [3]</rank>"
)

VARIANTS = {"judge_each": (JUDGE_EACH_SYSTEM, None), "cite_after_answer": (CITE_AFTER_ANSWER_SYSTEM, None),
            "rank_no_think": (None, "<think>\n</think>\n<rank>")}


def with_system(rows: list[dict], system: str | None, prefill: str | None = None) -> list[dict]:
    return [{**r, "prefill": prefill or r["prefill"],
             "prompt": [{**m, "content": system} if m["role"] == "system" and system else m for m in r["prompt"]]}
            for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--variants", default="default,judge_each",
                    help=f"comma-separated: default,{','.join(VARIANTS)}")
    ap.add_argument("--out", default=None)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    from mmrag_rft.evaluation.evaluate import heldout_qids
    from mmrag_rft.training.heldout import evaluate_stage2, stage2_baselines, stage2_prompts

    keep = heldout_qids("default")
    val = [s for s in common.load_webqa(args.data) if s.qid in keep][: args.questions]
    rows = stage2_prompts(val, num_candidates=args.candidates, max_chars=200)
    backend = common.load_policy(args.model)
    results = {}
    for name in args.variants.split(","):
        prompt_rows = rows if name == "default" else with_system(rows, *VARIANTS[name])
        r = evaluate_stage2(backend, prompt_rows, max_new_tokens=args.max_new_tokens, ranking_metric="ndcg_penalized")
        results[name] = r
        sel = r["selection"]
        print(f"{name:10s} format {r['format_reward']:.3f} NDCG {r['ndcg']:.3f} first pick gold "
              f"{sel['first_is_gold']:.3f} (chance {sel['first_is_gold_chance']:.3f}; prompt's [1] first "
              f"{sel['first_is_prompt_first']:.3f}; {sel['distinct_lists']} distinct lists) QA-Acc "
              f"{r['answer_acc']:.3f}  ({common.CAPTION_NOTE})", flush=True)
    path = common.write_result("stage2_prompt_probe", {
        "note": common.CAPTION_NOTE, "model": args.model, "questions": len(rows), "candidates": args.candidates,
        "references": stage2_baselines(rows), "prompts": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
