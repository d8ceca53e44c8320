from __future__ import annotations

import gzip
import json

import pytest

from mmrag_rft.metrics.mmqa import answer_to_bags, hop_type, list_em, list_f1, normalize_span, score_mmqa


def test_normalisation():
    assert normalize_span("The Mask") == "mask"
    assert normalize_span("two") == "2.0" and normalize_span("2") == "2.0" and normalize_span("1,000") == "1000.0"
    assert normalize_span("Spider-Man 3") == "spider man 3.0"  # hyphens split tokens
    assert normalize_span("point") == "0.0"  # word2number's quirk, kept for fidelity
    assert answer_to_bags(["A cat", "dogs"]) == (["cat", "dogs"], [{"cat"}, {"dogs"}])


def test_list_em_and_f1_by_hand():
    assert list_em("the Mask", "Mask") == 1.0 and list_em(["b", "a"], ["a", "b"]) == 1.0
    assert list_em(["a"], ["a", "b"]) == 0.0
    # bags {mask}, {cocoon} vs gold {mask}, {cocoon, movie}: aligned F1s 1 and 2/3 -> mean 0.8333 -> 0.83
    assert list_f1(["Mask", "Cocoon"], ["mask", "The Cocoon movie"]) == 0.83
    # one extra predicted span: per-bag scores [1, 0] over max(len) = 2 -> 0.5
    assert list_f1(["Paris", "Rome"], ["Paris"]) == 0.5
    # number gate: gold numbers must appear in the prediction, else 0 even with shared words
    assert list_f1("3 apples", "2 apples") == 0.0
    assert list_f1("two apples", "2 apples") == 1.0
    assert list_f1("red big car", "red car") == 0.8


def test_score_breakdowns():
    res = score_mmqa([
        {"qid": "1", "prediction": "Mask", "gold": ["Mask"], "qtype": "TableQ", "modality": "table"},
        {"qid": "2", "prediction": ["x"], "gold": ["y"], "qtype": "Compose(ImageQ,TextQ)", "modality": "text"},
        {"qid": "3", "prediction": None, "gold": ["z"], "qtype": "TextQ", "modality": "text"},
    ])
    assert res["overall"] == {"n": 3, "list_em": pytest.approx(100 / 3), "list_f1": pytest.approx(100 / 3)}
    assert res["per_hop"]["Multi-modal"]["n"] == 1 and res["per_hop"]["Single-modal"]["list_em"] == 50.0
    assert res["per_modality"]["table"]["list_f1"] == 100.0 and set(res["per_type"]) == {
        "TableQ", "Compose(ImageQ,TextQ)", "TextQ"}
    assert hop_type("ImageListQ") == "Single-modal"


def test_gold_scores_itself_on_real_dev(shared_data):
    items = []
    with gzip.open(shared_data / "mmqa/MMQA_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 300:
                break
            d = json.loads(line)
            gold = [str(a["answer"]) for a in d["answers"]]
            items.append({"qid": d["qid"], "prediction": gold, "gold": gold, "qtype": d["metadata"]["type"],
                          "modality": d["answers"][0]["modality"]})
    res = score_mmqa(items)
    assert res["overall"]["n"] == 300 and res["overall"]["list_em"] == 100.0 and res["overall"]["list_f1"] == 100.0
    # answering only the first span of multi-answer questions loses recall there and only there
    first = score_mmqa([{**it, "prediction": it["gold"][:1]} for it in items])
    multi = [it for it in items if len(it["gold"]) > 1]
    assert multi and first["overall"]["list_em"] == pytest.approx(100 * (1 - len(multi) / 300))
