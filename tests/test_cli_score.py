"""`mmrag score` as a user runs it: the VLP baseline's own predictions reproduce the README's reference row."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mmrag_rft.cli import app


def test_score_baseline_reproduces_the_reference_row_and_refuses_unknown_datasets(tmp_path, shared_data):
    tsv = shared_data / "webqa" / "val_img_queries.tsv.gz"
    out = tmp_path / "vlp.json"
    r = CliRunner().invoke(app, ["score", "--dataset", "webqa", "--baseline", "--lemmatizer", "builtin", str(tsv),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["overall"]["n"] == 2224 and abs(res["overall"]["qa_acc"] - 0.4428) < 5e-4  # README: image all 44.28
    r = CliRunner().invoke(app, ["score", "--dataset", "okvqa", str(tsv), str(tsv)])
    assert r.exit_code == 2 and "unknown dataset 'okvqa'; registered: webqa, mmqa, jsonl" in r.output
    r = CliRunner().invoke(app, ["score", "--dataset", "mmqa", "--baseline", str(tsv)])
    assert r.exit_code == 2 and "use --dataset webqa" in r.output
