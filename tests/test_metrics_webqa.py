from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmrag_rft.metrics.text import builtin_lemma, set_lemmatizer, word_to_num
from mmrag_rft.metrics.webqa import (
    FluencyUnavailable,
    normalize_text,
    qa_acc,
    qa_fluency,
    references_for,
    retrieval_prf,
    score_webqa,
    vqa_prf,
)

EPS = 1e-5


@pytest.fixture(autouse=True)
def _builtin_lemmas():
    set_lemmatizer("builtin")
    yield
    set_lemmatizer("auto")


def test_number_words_and_normalisation():
    assert word_to_num("twelve") == 12 and word_to_num("Hundred") == 100 and word_to_num("007") == 7
    for bad in ("dozen", "twenty five", "3rd", ""):
        with pytest.raises(ValueError):
            word_to_num(bad)
    assert normalize_text("The three little pigs!") == "3 little pig"
    assert normalize_text("It costs 2.5 dollars.") == "it cost 2.5 dollar"  # decimal point kept, full stop not
    assert normalize_text("Twenty-one") == "twentyone"  # one word: punctuation goes first, as officially
    assert normalize_text("one point five") == "1 point 5"
    assert normalize_text("A") == "a"  # a single character is only lowercased
    assert normalize_text("The") == "the"  # articles survive in one-word inputs
    assert builtin_lemma("boxes") == "box" and builtin_lemma("cherries") == "cherry" and builtin_lemma("glass") == "glass"


def test_color_f1_by_hand():
    # pred colours {red, white}, reference {black, white}: P = R = 1/2
    assert qa_acc("Red and white are on the sign.", "Black, white", "color") == pytest.approx(0.5 / (1 + EPS))
    # colours are compared as sets: repeats do not count twice
    assert qa_acc("red red red", "red", "color") == pytest.approx(2 / (2 + EPS))
    assert qa_acc("It is huge.", "red", "color") == 0.0


def test_yesno_number_shape_others():
    assert qa_acc("Yes, the flower has petals.", "Yes", "YesNo") == pytest.approx(2 / (2 + EPS))
    assert qa_acc("Yes , the flower has petals in a cup shape .", "No", "YesNo") == 0.0
    assert qa_acc("yes and no", "no", "YesNo") == pytest.approx(1 / (1.5 + EPS))
    assert qa_acc("Joe has two arms.", "2.", "number") == pytest.approx(2 / (2 + EPS))
    # numbers are bags: pred [3, 2020] vs ref [3] -> P 1/2, R 1
    assert qa_acc("Three players at the 2020 games.", "three", "number") == pytest.approx(1 / (1.5 + EPS))
    assert qa_acc("2.5 metres", "2.5", "number") == 0.0  # decimals are not integers: dropped officially
    assert qa_acc("A circle is painted.", "Circles", "shape") == pytest.approx(2 / (2 + EPS))
    # other categories: recall of the reference bag (with multiplicity)
    assert qa_acc("A fountain sits in front.", "fountain", "Others") == 1.0
    assert qa_acc("The stone bridge.", "wooden bridge", "choose") == 0.5
    assert qa_acc("x", ["wooden bridge", "bridge"], "choose") == 0.0
    assert qa_acc("The bridge", ["wooden bridge", "bridge"], "choose") == 1.0  # max over references
    assert vqa_prf("Blue footprints", "Blue footprints.", frozenset({"circle"})) == (0.0, 0.0, 0.0)
    assert qa_acc("Blue footprints", "Blue footprints.", "shape", domain_fallback=True) == pytest.approx(2 / (2 + EPS))


def test_references_and_retrieval():
    assert references_for("fountain", ["A fountain."]) == ["fountain"]
    assert references_for("TBD", ["Yes", "Yes, both."]) == ["Yes", "Yes, both."]
    assert references_for("", ["A"]) == ["A"]
    assert retrieval_prf(["a", "b", "c"], ["b", "d"]) == pytest.approx((1 / 3, 0.5, 0.4))
    assert retrieval_prf([], ["b"]) == (0.0, 0.0, 0.0)


def test_score_webqa_per_category():
    res = score_webqa([
        {"qid": "1", "qcate": "color", "prediction": "red", "references": ["red"], "pred_sources": ["a"],
         "gold_sources": ["a", "b"]},
        {"qid": "2", "qcate": "color", "prediction": "blue", "references": ["red"], "pred_sources": ["c"],
         "gold_sources": ["a"]},
        {"qid": "3", "qcate": "Others", "prediction": "a big fountain", "references": ["fountain pool"]},
    ])
    assert res["per_category"]["color"]["n"] == 2
    assert res["per_category"]["color"]["qa_acc"] == pytest.approx((2 / (2 + EPS)) / 2)
    assert res["per_category"]["Others"]["qa_acc"] == 0.5
    assert res["overall"]["qa_acc"] == pytest.approx((2 / (2 + EPS) + 0 + 0.5) / 3)
    assert res["overall"]["n_retrieval"] == 2 and res["overall"]["retr_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert list(res["per_category"]) == ["color", "Others"] and res["lemmatizer"] == "builtin"


def test_fluency_needs_weights():
    with pytest.raises(FluencyUnavailable, match="bart-large-cnn"):
        qa_fluency(["a"], [["a"]])


TSV_HEADER = "Guid\tQcate\tQ\tA\tKeywords_A\tOutput_conf\tOutput\n"


def _tsv(path, rows):
    path.write_text(TSV_HEADER + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_cli_baseline_and_predictions(tmp_path):
    from mmrag_rft.cli import app

    tsv = _tsv(tmp_path / "val.tsv", [
        ["g1", "color", "What colour?", json.dumps(["The roof is red."]), "red", "[]", json.dumps(["It is red .", "Blue"])],
        ["g2", "YesNo", "Is it?", json.dumps(["No, it is not."]), "No", "[]", json.dumps(["Yes , it is ."])],
        ["g3", "text", "Who?", json.dumps(["Ada Lovelace"]), "TBD", "[]", json.dumps(["Lovelace"])],
    ])
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["score", "--dataset", "webqa", "--baseline", str(tsv), "--out", str(out),
                                 "--lemmatizer", "builtin"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["per_category"]["color"]["qa_acc"] == pytest.approx(2 / (2 + EPS))
    assert res["per_category"]["YesNo"]["qa_acc"] == 0.0
    assert res["per_category"]["text"]["qa_acc"] == 0.5  # recall of [ada, lovelace]
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"g1": {"answer": "blue", "sources": []}, "g2": {"answer": "No.", "sources": []}}))
    r = CliRunner().invoke(app, ["score", "--dataset", "webqa", str(preds), str(tsv), "--out", str(out),
                                 "--lemmatizer", "builtin"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["missing_predictions"] == 1 and res["per_category"]["YesNo"]["qa_acc"] == pytest.approx(2 / (2 + EPS))
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"qid": "g1", "answer": "red"}\n{"qid": "g2", "answer": 3}\n')
    r = CliRunner().invoke(app, ["score", "--dataset", "webqa", str(jsonl), str(tsv)])
    assert r.exit_code == 2 and "p.jsonl, row 2, field 'answer'" in r.output and "Traceback" not in r.output


def test_vlp_baseline_on_real_val(shared_data, tmp_path):
    """Reference row of docs/method.md: the official VLP outputs scored on WebQA val (builtin lemmatiser)."""
    from mmrag_rft.cli import app

    out = tmp_path / "vlp.json"
    r = CliRunner().invoke(app, ["score", "--dataset", "webqa", "--baseline", "--lemmatizer", "builtin",
                                 str(shared_data / "webqa/val_img_queries.tsv.gz"),
                                 str(shared_data / "webqa/val_txt_queries.tsv.gz"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    got = {c: (s["n"], round(100 * s["qa_acc"], 2)) for c, s in res["per_category"].items()}
    assert got == {"YesNo": (735, 57.41), "choose": (440, 69.50), "color": (165, 25.84), "shape": (61, 10.93),
                   "number": (236, 22.20), "Others": (587, 26.44), "text": (2455, 42.73)}
    assert res["overall"]["n"] == 4679
