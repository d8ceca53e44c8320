"""The evaluation runner's resume contract and the metrics glue, independent of any model."""

from __future__ import annotations

import json

import pytest

from mmrag_rft.data.schema import Candidate, Sample
from mmrag_rft.evaluation.evaluate import filter_stats, score_rows
from mmrag_rft.evaluation.runner import prediction_row, read_predictions, run
from mmrag_rft.pipeline import Judgement, Result


def _sample(i: int) -> Sample:
    cands = [Candidate(id=f"q{i}-a", modality="text", text="red"), Candidate(id=f"q{i}-b", modality="image",
                                                                           text="a blue ball")]
    return Sample(qid=f"q{i}", question=f"What color is thing {i}?", answers=["It is red."],
                  candidates=cands, gold_ids=[f"q{i}-a"], category="color", dataset="webqa")


def _answer(s: Sample) -> Result:
    a, b = s.candidates
    js = [Judgement(id=a.id, score=0.9, relevant=True, kept=True), Judgement(id=b.id, score=0.2, relevant=False,
                                                                             kept=False)]
    return Result(question=s.question, answer="red", rank=[a.id], reasoning="", judgements=js, kept_ids=[a.id])


def test_runner_resumes_and_drops_torn_line(tmp_path):
    samples = [_sample(i) for i in range(4)]
    calls: list[str] = []

    def ask(s):
        calls.append(s.qid)
        if s.qid == "q2":
            raise KeyboardInterrupt  # a kill in the middle of question 3
        return _answer(s)

    with pytest.raises(KeyboardInterrupt):
        run(samples, ask, tmp_path, progress=False)
    assert list(read_predictions(tmp_path / "predictions.jsonl")) == ["q0", "q1"]
    with (tmp_path / "predictions.jsonl").open("a") as f:  # a torn write left by a crash
        f.write('{"qid": "q9", "ans')
    calls.clear()
    done = run(samples, lambda s: (calls.append(s.qid), _answer(s))[1], tmp_path, progress=False)
    assert calls == ["q2", "q3"]
    assert sorted(done) == ["q0", "q1", "q2", "q3"]
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x)["qid"].startswith("q") for x in lines)


def test_score_rows_webqa_and_filter_stats():
    rows = [prediction_row(s, _answer(s)) for s in (_sample(0), _sample(1))]
    rows[1]["answer"] = "blue"
    m = score_rows(rows, dataset="webqa")
    assert m["per_question_acc"] == pytest.approx([1.0, 0.0], abs=1e-4)  # official F1 has an epsilon
    assert m["overall"]["retr_f1"] == pytest.approx(1.0)
    f = filter_stats(rows)
    assert f["removed_fraction"] == pytest.approx(0.5)
    assert f["gold_recall_after_filter"] == pytest.approx(1.0)
    assert f["stage1_ndcg@5"] == pytest.approx(1.0)


def test_prediction_rows_score_whether_the_reasoning_is_about_the_candidates_shown():
    s = _sample(0)
    s.candidates[0].text = "a red apple on a wooden table"
    restated = prediction_row(s, _answer(s))  # empty reasoning
    r = _answer(s)
    r.reasoning = "[1] shows a red apple on a wooden table."  # names [1], takes apple/wooden/table from it
    grounded = prediction_row(s, r)
    assert (restated["reasoning_grounding"], grounded["reasoning_grounding"]) == (0.0, 1.0)
    assert filter_stats([restated, grounded])["reasoning_grounding"] == pytest.approx(0.5)
