"""`mmrag data stats|convert` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from typer.testing import CliRunner

from mmrag_rft.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["data", *map(str, args)])


def test_stats_webqa_real(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    r = _run("stats", shared_data / "webqa" / "val_records.json.gz", "--out", out)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d == json.loads(out.read_text())
    assert d["format"] == "webqa" and d["samples"] == 293
    assert d["candidates_per_sample"] == {"mean": 32.529, "min": 18, "max": 34, "total": 9531}
    assert d["candidates_by_modality"]["image"]["total"] == 5079
    assert d["candidates_by_modality"]["text"]["total"] == 4452
    assert d["gold_per_sample"] == {"mean": 1.4369, "min": 1, "max": 2, "total": 421}
    assert d["categories"] == {"YesNo": 95, "Others": 90, "choose": 57, "number": 26, "color": 18, "shape": 7}


def test_stats_tsv_and_mmqa_real(shared_data: Path) -> None:
    d = json.loads(_run("stats", shared_data / "webqa" / "val_img_queries.tsv.gz").stdout)
    assert d["format"] == "webqa-tsv" and d["samples"] == 2224 and d["samples_without_candidates"] == 2224
    d = json.loads(_run("stats", shared_data / "mmqa" / "MMQA_dev.jsonl.gz", "--format", "mmqa").stdout)
    assert d["samples"] == 2441 and d["categories"]["TextQ"] == 721


def test_stats_hand_computed(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    rows = [{"qid": "a", "question": "q?", "category": "color", "gold_ids": ["1"],
             "candidates": [{"id": "1", "modality": "image"}, {"id": "2", "modality": "text"},
                            {"id": "3", "modality": "text"}]},
            {"qid": "b", "question": "q?", "category": "color", "gold_ids": ["4", "5"],
             "candidates": [{"id": "4", "modality": "table"}, {"id": "5", "modality": "text"}]},
            {"qid": "c", "question": "q?", "category": "text"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = json.loads(_run("stats", p).stdout)
    assert d["samples"] == 3
    assert d["candidates_per_sample"] == {"mean": 1.6667, "min": 0, "max": 3, "total": 5}
    assert d["candidates_by_modality"]["text"] == {"mean": 1.0, "min": 0, "max": 2, "total": 3}
    assert d["gold_per_sample"] == {"mean": 1.0, "min": 0, "max": 2, "total": 3}
    assert d["gold_by_modality"] == {"text": 1, "image": 1, "table": 1}
    assert d["categories"] == {"color": 2, "text": 1}
    assert d["samples_without_candidates"] == 1 and d["samples_without_gold"] == 1


def test_stats_malformed_one_clear_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text('{"g1": {"Q": "x?", "A": ["y"], "Guid": "g1", "img_posFacts": [{"image_id"')
    r = _run("stats", cut)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cut.json" in lines[0] and "not valid JSON" in lines[0]

    no_q = tmp_path / "noq.json"
    no_q.write_text(json.dumps({"g1": {"Q": "x?", "A": ["y"], "Guid": "g1", "Qcate": "Others",
                                       "img_posFacts": [], "img_negFacts": [], "txt_posFacts": [],
                                       "txt_negFacts": []},
                                "g2": {"A": ["y"], "Guid": "g2", "Qcate": "Others", "img_posFacts": []}}))
    r = _run("stats", no_q, "--format", "webqa")
    assert r.exit_code == 2 and "row g2, field 'Q'" in r.output and "Traceback" not in r.output
    r = _run("stats", no_q, "--skip-bad")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["samples"] == 1 and d["bad_rows"] == 1 and "row g2, field 'Q'" in d["bad_row_errors"][0]
    assert "skipped 1 bad row" in r.stderr

    assert _run("stats", tmp_path / "absent.json").exit_code == 2
    assert _run("stats", no_q, "--format", "csv").exit_code == 2


def test_convert_round_trip(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "webqa.jsonl"
    r = _run("convert", shared_data / "webqa" / "val_records.json.gz", "--out", out, "--limit", "5")
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 5
    d = json.loads(_run("stats", out).stdout)
    assert d["format"] == "jsonl" and d["samples"] == 5 and d["datasets"] == {"webqa": 5}


def test_convert_out_must_be_a_new_file_and_unwritable_folders_are_one_line(tmp_path, shared_data):
    import os

    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    src = tmp_path / "s.jsonl"
    r = CliRunner().invoke(app, ["data", "convert", str(shared_data / "webqa" / "val_records.json.gz"), "--limit",
                                 "2", "--out", str(src)])
    assert r.exit_code == 0, r.output
    before = src.read_bytes()
    r = CliRunner().invoke(app, ["data", "convert", str(src), "--out", str(src)])
    assert r.exit_code == 2 and "is the input file" in r.output and src.read_bytes() == before
    r = CliRunner().invoke(app, ["data", "convert", str(src), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions do not stop writes
            return
        r = CliRunner().invoke(app, ["data", "convert", str(src), "--out", str(ro / "x.jsonl")])
        assert r.exit_code == 2 and "Permission denied" in r.output and "Traceback" not in r.output
    finally:
        os.chmod(ro, 0o700)


def test_a_bad_utf8_byte_is_an_error_of_its_own_line_and_skip_bad_skips_only_it(tmp_path):
    from mmrag_rft.data import DataError, load_corpus

    rows = [json.dumps({"id": f"c{i}", "modality": "text", "text": f"passage {i}"}).encode() for i in range(4)]
    rows[2] = rows[2].replace(b"passage", b"pass\xffage")
    f = tmp_path / "c.jsonl"
    f.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(DataError, match=r"row 3: not valid UTF-8"):
        list(load_corpus(f))
    report: list = []
    assert [c.id for c in load_corpus(f, skip_bad=True, report=report)] == ["c0", "c1", "c3"]
    assert len(report) == 1 and report[0].row == 3


def test_stats_reads_a_corpus_whose_first_line_is_longer_than_64_kb_and_takes_format_corpus(tmp_path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": "long", "modality": "text", "text": "word " * 30_000}) + "\n"
                 + json.dumps({"id": "short", "modality": "text", "text": "hi"}) + "\n")
    for args in ([], ["--format", "corpus"]):
        r = CliRunner().invoke(app, ["data", "stats", str(f), *args])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["format"] == "corpus"


def test_files_and_index_folders_follow_the_umask(tmp_path):
    import os
    import stat

    from mmrag_rft.config import atomic_write_text
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.layout import RetrievalConfig
    from mmrag_rft.data.schema import Candidate

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        build_index([Candidate(id="x", modality="text", text="hello")], tmp_path / "idx",
                    RetrievalConfig(use_dense=False), progress=False)
        assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o755
        assert stat.S_IMODE((tmp_path / "idx" / "manifest.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_embedder_folder_that_does_not_exist_says_so(tmp_path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": "a", "modality": "text", "text": "hi"}) + "\n")
    r = CliRunner().invoke(app, ["index", str(f), "--out", str(tmp_path / "i"), "--embedder", "/nonexistent"])
    assert r.exit_code == 2 and "no such folder" in r.output and "alphanumeric" not in r.output


def test_a_manifest_that_is_not_an_object_is_one_clear_line(tmp_path):
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.index import HybridIndex
    from mmrag_rft.retrieval.layout import IndexLoadError, RetrievalConfig
    from mmrag_rft.data.schema import Candidate

    build_index([Candidate(id="x", modality="text", text="hello")], tmp_path / "idx",
                RetrievalConfig(use_dense=False), progress=False)
    (tmp_path / "idx" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(IndexLoadError, match="expected a JSON object, got list"):
        HybridIndex.load(tmp_path / "idx")


def test_datasets_are_registered_by_name_and_an_unknown_one_is_an_error(tmp_path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app
    from mmrag_rft.data.datasets import DATASETS, get_dataset
    from mmrag_rft.evaluation.evaluate import score_rows

    assert get_dataset("mmqa").metric_set == "mmqa" and "image_dir" in get_dataset("mmqa").loader_options
    assert set(DATASETS) >= {"webqa", "mmqa", "jsonl"}
    with pytest.raises(ValueError, match="unknown dataset 'okvqa'; registered: webqa, mmqa, jsonl"):
        score_rows([], dataset="okvqa")  # never WebQA's metrics by default
    (tmp_path / "x.jsonl").write_text("{}\n")
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "x.jsonl"), "--dataset", "okvqa", "--model", "tiny-lm",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "unknown dataset 'okvqa'" in r.output and "Traceback" not in r.output


def test_pools_gives_questions_that_name_corpus_ids_their_pools_from_an_index(tmp_path: Path) -> None:
    from mmrag_rft.data.loaders import load_samples

    rows = [{"id": "eiffel", "modality": "text", "title": "Eiffel Tower", "text": "A wrought-iron tower in Paris."},
            {"id": "nile", "modality": "text", "title": "Nile", "text": "The Nile is a river in Africa."},
            {"id": "chess", "modality": "text", "title": "Chess", "text": "Chess is a board game for two players."}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / "idx")]).exit_code == 0
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"qid": "q1", "question": "Which tower stands in Paris?", "answers": ["Eiffel"],
                                     "gold_ids": ["eiffel"]}) + "\n" +
                         json.dumps({"qid": "q2", "question": "Which tower stands in Paris?", "answers": ["x"],
                                     "gold_ids": ["chess"]}) + "\n")
    out = tmp_path / "pooled.jsonl"
    r = _run("pools", questions, "--index", tmp_path / "idx", "--out", out, "--top-n", "1")
    assert r.exit_code == 0, r.output
    assert "held 1 of 2 gold pieces; the 1 it missed were added" in " ".join(r.output.split())
    pooled = {s.qid: [c.id for c in s.candidates] for s in load_samples(out)}
    assert pooled == {"q1": ["eiffel"], "q2": ["eiffel", "chess"]}  # the retriever's top 1, then the missed gold
    (tmp_path / "other.jsonl").write_text(json.dumps({"id": "x", "modality": "text", "text": "Other."}) + "\n")
    assert runner.invoke(app, ["index", str(tmp_path / "other.jsonl"), "--out", str(tmp_path / "o")]).exit_code == 0
    r = _run("pools", questions, "--index", tmp_path / "o", "--out", tmp_path / "x.jsonl")
    assert r.exit_code == 2 and "is not in the index" in r.output and "Traceback" not in r.output
