"""The filter sweep's bookkeeping: which cached scores it trusts and which operating point it carries over."""

from __future__ import annotations

import json
import os

import pytest

from mmrag_rft.evaluation import filter_sweep as fs


def _p(saved: float, recall: float, w: float, k: int = 5) -> dict:
    return {"tokens_saved": saved, "gold_recall": recall, "retrieval_weight": w, "top_k": k, "threshold": 0.0}


def test_choose_fused_point_takes_most_saved_then_recall_then_weight_nearest_one():
    pts = {"0.5": _p(0.60, 0.96, 0.5), "1.0": _p(0.55, 0.99, 1.0), "2.0": None}
    assert fs.choose_fused_point(pts)["retrieval_weight"] == 0.5
    tie = {"0.25": _p(0.6, 0.96, 0.25), "2.0": _p(0.6, 0.96, 2.0), "4.0": _p(0.6, 0.97, 4.0)}
    assert fs.choose_fused_point(tie)["retrieval_weight"] == 4.0  # higher recall first
    tie["4.0"] = _p(0.6, 0.96, 4.0)
    assert fs.choose_fused_point(tie)["retrieval_weight"] == 2.0  # |log 2| < |log 0.25|
    assert fs.choose_fused_point({"1.0": None}) is None


def test_read_operating_point_round_trip_and_clear_errors(tmp_path):
    good = tmp_path / "train.json"
    good.write_text(json.dumps({"chosen_fused_point": {**_p(0.6, 0.96, 0.5, k=7), "chosen_on": {"side": "train"}}}))
    assert fs.read_operating_point(good) == {"retrieval_weight": 0.5, "top_k": 7, "chosen_on": {"side": "train"}}
    with pytest.raises(ValueError, match="no such file"):
        fs.read_operating_point(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"chosen_fused_point": None}))
    with pytest.raises(ValueError, match="other.json: not a filter sweep"):
        fs.read_operating_point(other)


def test_model_key_changes_when_a_folder_is_re_exported(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 10)
    first = fs.model_key(str(folder), "merged")
    assert fs.model_key(str(folder), "merged") == first
    (folder / "README.md").write_text("notes")  # not weights: the cache stays valid
    assert fs.model_key(str(folder), "merged") == first
    weights.write_bytes(b"b" * 12)  # a longer run exported new weights to the same path
    os.utime(weights, ns=(1, 1))
    assert fs.model_key(str(folder), "merged") != first
    assert fs.model_key("default", "SmolLM2-135M-Instruct").startswith("SmolLM2-135M-Instruct-")


def test_filter_sweep_chooses_on_training_questions_and_carries_the_point_to_held_out_ones(tmp_path, shared_data):
    """`mmrag filter-sweep` as the stage-1 recipe runs it: a point chosen on the train side, measured on the val side
    from the same score cache (tiny model, real WebQA pools; captions stand in for pixels)."""
    import gzip

    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    records = shared_data / "webqa" / "val_records.json.gz"
    qids = list(json.loads(gzip.open(records).read()))
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"train": qids[:2], "val": qids[2:3]}))
    base = ["filter-sweep", str(records), "--model", "tiny-lm", "--heldout", str(run), "--limit", "0"]
    r = CliRunner().invoke(app, [*base, "--side", "train", "--out", str(run / "operating_point.json")])
    assert r.exit_code == 0, r.output
    train = json.loads((run / "operating_point.json").read_text())
    assert train["questions"] == 2 and train["side"] == "train" and (run / "operating_point.png").is_file()
    chosen = train["chosen_fused_point"]
    assert chosen["gold_recall"] >= fs.RECALL_TARGET and chosen["chosen_on"]["side"] == "train"
    r = CliRunner().invoke(app, [*base, "--operating-point", str(run / "operating_point.json"),
                                 "--out", str(run / "heldout.json")])
    assert r.exit_code == 0, r.output
    held = json.loads((run / "heldout.json").read_text())
    assert held["questions"] == 1 and held["fixed_operating_point"]["top_k"] == chosen["top_k"]
    assert held["stage1_scoring"]["cache"] == train["stage1_scoring"]["cache"]  # one cache for both sides
    r = CliRunner().invoke(app, [*base, "--operating-point", str(run / "split.json"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a filter sweep" in r.output and "Traceback" not in r.output
