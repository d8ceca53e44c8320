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


def test_cli_scores_mmqa_dev(shared_data, tmp_path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    dev = shared_data / "mmqa/MMQA_dev.jsonl.gz"
    with gzip.open(dev, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"qid": first["qid"], "answer": [str(a["answer"]) for a in first["answers"]]}) + "\n")
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["score", "--dataset", "mmqa", str(preds), str(dev), "--out", str(out),
                                 "--no-per-question"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["overall"]["n"] == 2441 and res["missing_predictions"] == 2440
    assert res["overall"]["list_em"] == pytest.approx(100 / 2441)
    assert res["per_type"][first["metadata"]["type"]]["list_em"] > 0 and "per_question" not in res
    bad = CliRunner().invoke(app, ["score", "--dataset", "mmqa", str(tmp_path / "none.json"), str(dev)])
    assert bad.exit_code == 2 and "file not found" in bad.output
