"""Held-out evaluation of a training run, on the questions its split never trained on (`mmrag train eval`).

Stage 1: point-wise pairs (each question's own same-topic distractors, and the same questions with half of the
negatives off-topic, as in a corpus-wide pool); score mode gives accuracy / F1 at P(yes) >= 0.5 and the AUC of P(yes)
(what the coarse filter can use), reason mode the format reward and the verdict's accuracy.
Stage 2: K-candidate prompts (gold + the hardest negatives, shuffled); greedy outputs give the format reward, NDCG of
the `<rank>` list, how often the first pick is gold against chance, and the answer's accuracy; model-free references
(a random permutation, the prompt's order, constant answers) come from the same prompts.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from mmrag_rft.data.schema import Sample

Pair = tuple[str, Any, str]  # (question, candidate, "yes" | "no")
STAGE2_COLUMNS = ("prefill", "num_candidates", "gold_ids", "answers", "category", "dataset", "keywords")


# -- stage 1 -------------------------------------------------------------------------------------------------

def stage1_pairs(val: Sequence[Sample], per_question: int = 4) -> tuple[list[Pair], list[Pair]]:
    """(hard pairs, mixed pairs) of the held-out questions, the same for every model compared."""
    from mmrag_rft.training.examples import stage1_pairs as pairs_of

    rng = random.Random(123)
    hard = [(s.question, c, lab) for s in val for c, lab in pairs_of(s, balance=1.0, max_pairs=per_question, rng=rng)]
    rng.shuffle(hard)
    pool = [c for s in val for c in s.candidates]
    mixed = [(s.question, c, lab) for s in val
             for c, lab in pairs_of(s, balance=1.0, max_pairs=per_question, rng=rng, other_negatives=0.5,
                                    other_pool=pool)]
    return hard, mixed


def stage1_score_metrics(backend: Any, pairs: Sequence[Pair], layout: str = "default") -> dict[str, Any]:
    """Score mode: accuracy / F1 at P(yes) >= 0.5, the AUC of P(yes), and mean P(yes) on gold and on the others."""
    from mmrag_rft.metrics.classification import binary_metrics
    from mmrag_rft.metrics.ranking import roc_auc
    from mmrag_rft.prompts import stage1_prompt

    gold = [lab == "yes" for _, _, lab in pairs]
    p_yes = backend.score_yes_no([stage1_prompt(q, c, style="score", layout=layout) for q, c, _ in pairs])
    out = binary_metrics([p >= 0.5 for p in p_yes], gold)
    out["auc"] = roc_auc(p_yes, gold)
    out["mean_p_yes_pos"] = sum(p for p, g in zip(p_yes, gold) if g) / max(1, sum(gold))
    out["mean_p_yes_neg"] = sum(p for p, g in zip(p_yes, gold) if not g) / max(1, len(gold) - sum(gold))
    return out


def stage1_reason_metrics(backend: Any, pairs: Sequence[Pair], *, max_new_tokens: int = 48,
                          layout: str = "default") -> dict[str, Any]:
    """Reason mode, greedy: shaped format reward, strict format rate, verdict rate and the verdict's accuracy / F1."""
    from mmrag_rft.metrics.classification import binary_metrics
    from mmrag_rft.parsing import parse_stage1
    from mmrag_rft.prompts import stage1_prompt
    from mmrag_rft.rewards import stage1_format_reward

    prompts = [stage1_prompt(q, c, style="reason", layout=layout) for q, c, _ in pairs]
    outs = [g[0] for g in backend.generate(prompts, max_new_tokens=max_new_tokens)]
    parsed = [parse_stage1(o, prefill=p.prefill) for o, p in zip(outs, prompts)]
    fmt = stage1_format_reward(outs, prefill=[p.prefill for p in prompts])
    out = binary_metrics([None if x.decision is None else x.decision == "yes" for x in parsed],
                         [lab == "yes" for _, _, lab in pairs])
    n = max(1, len(parsed))
    out.update(format_reward=sum(fmt) / n, strict_format_rate=sum(x.ok for x in parsed) / n,
               verdict_rate=sum(x.decision is not None for x in parsed) / n, examples=outs[:3])
    return out


def evaluate_stage1(backend: Any, hard: Sequence[Pair], mixed: Sequence[Pair] | None = None, *,
                    reason_pairs: int = 64, max_new_tokens: int = 48, layout: str = "default") -> dict[str, Any]:
    t0 = time.time()
    return {"score_mode": stage1_score_metrics(backend, hard, layout),
            "score_mode_mixed": stage1_score_metrics(backend, mixed, layout) if mixed else None,
            "reason_mode": stage1_reason_metrics(backend, hard[:reason_pairs], max_new_tokens=max_new_tokens,
                                                 layout=layout) if reason_pairs else None,
            "eval_seconds": round(time.time() - t0, 1)}


# -- stage 2 -------------------------------------------------------------------------------------------------

def stage2_prompts(val: Sequence[Sample], *, num_candidates: int, max_chars: int,
                   stage1_scores: dict[str, dict[str, float]] | None = None,
                   order_fn: Callable[[Sample], Sequence[str]] | None = None, orders: int = 1,
                   think: bool = True) -> list[dict[str, Any]]:
    """`orders` shuffled K-candidate rows per held-out question, distinct orders where K allows (seeded: the same
    for every model compared); the hardest negatives by `stage1_scores` when given, else by `order_fn` (default:
    the retriever's order of the pool)."""
    from mmrag_rft.training.examples import stage2_rows
    from mmrag_rft.training.negatives import retrieval_order

    return stage2_rows(val, num_candidates=num_candidates, permutations=orders, max_chars=max_chars, seed=99,
                       stage1_scores=stage1_scores, order_fn=None if stage1_scores else (order_fn or retrieval_order),
                       think=think)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in STAGE2_COLUMNS}


def row_prompt(row: dict[str, Any]) -> Any:
    """The `ChatPrompt` a training row's policy sees (its messages but the prefill, which continues the turn)."""
    from mmrag_rft.models.chat import ChatPrompt

    return ChatPrompt(messages=row["prompt"][:-1], prefill=row["prefill"])


def listed_ids(out: str, row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(every id the output's `<rank>` lists, its distinct in-range ids in order) for a stage-2 row."""
    from mmrag_rft.parsing import parse_stage2

    k = row["num_candidates"]
    ids = parse_stage2(out, prefill=row["prefill"], num_candidates=k).raw_ids
    return ids, list(dict.fromkeys(i for i in ids if i.isdigit() and 1 <= int(i) <= k))


def selection_vs_chance(outs: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Does the model pick and order evidence better than chance *given how many ids it lists*? The chance reference
    draws as many distinct in-range ids at random (exact expectation); the first pick is compared with the share of
    gold among the candidates; `first_is_prompt_first` measures position bias, and so do the every-order shares
    when a question is shown in several orders."""
    import json
    from collections import Counter

    from mmrag_rft.parsing import parse_stage2
    from mmrag_rft.rewards import rank_score

    chance, first_gold, first_gold_chance, first_is_1, lens, n_ranked = 0.0, 0, 0.0, 0, [], 0
    firsts: dict[str, list[tuple[str, bool]]] = {}  # qid -> (first pick's real id, is gold) per order shown
    for out, r in zip(outs, rows):
        k, gold = r["num_candidates"], [str(g) for g in r["gold_ids"]]
        ids, valid = listed_ids(out, r)
        if not valid:
            continue
        n_ranked += 1
        share = len(valid) / len(ids)  # rank_score's penalty for invalid or repeated ids, kept for the reference
        lists = list(itertools.permutations([str(i) for i in range(1, k + 1)], len(valid)))
        chance += share * sum(rank_score(list(p), gold, num_candidates=k) for p in lists) / len(lists)
        first_gold += valid[0] in gold
        first_gold_chance += len(set(gold)) / k
        first_is_1 += valid[0] == "1"
        lens.append(len(valid))
        if len(set(gold)) < k:  # a question whose candidates are all gold is right in every order, by any list
            firsts.setdefault(r["qid"], []).append((json.loads(r["id_map"])[valid[0]], valid[0] in gold))
    n = max(1, n_ranked)
    res = {"ranked": n_ranked, "ndcg_same_length_chance": chance / max(1, len(rows)),
           "first_is_gold": first_gold / n, "first_is_gold_chance": first_gold_chance / n,
           "first_is_prompt_first": first_is_1 / n, "mean_listed": sum(lens) / n,
           "distinct_lists": len({tuple(parse_stage2(o, prefill=r["prefill"]).raw_ids) for o, r in zip(outs, rows)})}
    # a question shown in several orders (`stage2_prompts(orders=...)`), with a non-gold candidate among them: does
    # the first pick follow the candidate or the position? A position-only policy does so only by accident
    shown = Counter(r["qid"] for r in rows)
    multi = [f for q, f in firsts.items() if shown[q] > 1 and len(f) == shown[q]]
    if multi:
        res.update(questions_in_every_order=len(multi),
                   same_first_pick_every_order=sum(len({cid for cid, _ in f}) == 1 for f in multi) / len(multi),
                   gold_first_every_order=sum(all(g for _, g in f) for f in multi) / len(multi))
    return res


def likelihood_selection(backend: Any, rows: Sequence[dict[str, Any]], samples: Sequence[Sample],
                         max_chars: int) -> dict[str, Any]:
    """The same rows ranked by `listwise.likelihood_ranking` (the pipeline's `stage2_ranking: likelihood`): first
    pick gold against chance, and NDCG of the full order; and how often the first pick is the same in every
    rotation of the order (`stage2_ranking: consistent` moves it first only then), and gold."""
    import json

    from mmrag_rft.listwise import likelihood_and_picks
    from mmrag_rft.metrics.ranking import ndcg_at_k

    by_qid = {s.qid: s for s in samples}
    first, chance, ndcg, same, same_gold = 0, 0.0, 0.0, 0, 0
    for r in rows:
        s = by_qid[r["qid"]]
        pool = {c.id: c for c in s.candidates}
        id_map = json.loads(r["id_map"])
        shown = [pool[id_map[str(i)]] for i in range(1, r["num_candidates"] + 1)]
        ranked, picks = likelihood_and_picks(backend, s.question, shown, max_chars=max_chars)
        order = [cid for cid, _ in ranked]
        gold = set(s.gold_ids) & set(order)
        first += order[0] in gold
        same += len(set(picks)) == 1
        same_gold += len(set(picks)) == 1 and picks[0] in gold
        chance += len(gold) / len(shown)
        ndcg += ndcg_at_k(order, gold, len(shown))
    n = max(1, len(rows))
    return {"first_is_gold": first / n, "first_is_gold_chance": chance / n, "ndcg": ndcg / n,
            "same_first_every_rotation": same / n, "gold_first_every_rotation": same_gold / n}


def evaluate_stage2(backend: Any, rows: Sequence[dict[str, Any]], *, max_new_tokens: int,
                    ranking_metric: str = "ndcg", samples: Sequence[Sample] | None = None,
                    max_chars: int = 200) -> dict[str, Any]:
    """Greedy outputs on the held-out rows: format, NDCG (and `ranking_metric`), answer accuracy, selection; with
    `samples`, also the likelihood ranking's selection (`likelihood`)."""
    from mmrag_rft.rewards import make_answer_reward, make_ranking_reward, stage2_format_reward

    t0 = time.time()
    prompts = [row_prompt(r) for r in rows]
    outs = [g[0] for g in backend.generate(prompts, max_new_tokens=max_new_tokens)]
    cols = _columns(rows)
    fmt = stage2_format_reward(outs, **cols)
    n = max(1, len(rows))
    res = {"format_reward": sum(fmt) / n, "strict_format_rate": sum(v >= 0.999 for v in fmt) / n,
           "ndcg": sum(make_ranking_reward("ndcg")(outs, **cols)) / n,
           "answer_acc": sum(make_answer_reward("auto")(outs, **cols)) / n, "n": len(rows),
           "eval_seconds": round(time.time() - t0, 1), "selection": selection_vs_chance(outs, rows),
           "examples": outs[:3], "outputs": outs}
    if samples is not None:  # order-averaged already: one row per question, however many orders were shown
        once: dict[str, dict[str, Any]] = {}
        for r in rows:
            once.setdefault(r["qid"], r)
        res["likelihood"] = likelihood_selection(backend, list(once.values()), samples, max_chars)
    if ranking_metric != "ndcg":
        res[ranking_metric] = sum(make_ranking_reward(ranking_metric)(outs, **cols)) / n  # type: ignore[arg-type]
    return res


def stage2_baselines(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Model-free references on the same prompts: NDCG of a random full permutation (exact expectation) and of the
    prompt's own order, and the accuracy of always answering yes / no."""
    from mmrag_rft.rewards import make_answer_reward, make_ranking_reward

    cols = _columns(rows)
    ndcg, acc = make_ranking_reward("ndcg"), make_answer_reward("auto")

    def out(ids: Sequence[int], answer: str = "x") -> str:
        return "</think><rank>" + " > ".join(f"[{i}]" for i in ids) + f"</rank><answer>{answer}</answer>"

    rand = 0.0
    for i, r in enumerate(rows):
        perms = list(itertools.permutations(range(1, r["num_candidates"] + 1)))
        one = {k: [v[i]] * len(perms) for k, v in cols.items()}
        rand += sum(ndcg([out(list(p)) for p in perms], **one)) / len(perms)
    n = max(1, len(rows))
    prompt_order = [out(list(range(1, r["num_candidates"] + 1))) for r in rows]
    return {"ndcg_random_permutation": rand / n, "ndcg_prompt_order": sum(ndcg(prompt_order, **cols)) / n,
            **{f"answer_acc_always_{a}": sum(acc([out([1], a)] * len(rows), **cols)) / n for a in ("yes", "no")}}
