"""`mmrag ask` / `mmrag evaluate` as a user runs them (tiny model; the default model runs in the demo)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmrag_rft.cli import app
from mmrag_rft.data import demo_corpus_dir

runner = CliRunner()


def test_ask_json_over_built_index(tmp_path):
    idx = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(demo_corpus_dir() / "corpus.jsonl"), "--out", str(idx)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ask", "What colour is the triangle?", "--index", str(idx), "--model", "tiny-lm",
                            "--top-n", "4", "--threshold", "0", "--top-k", "2", "--set", "stage2_max_new_tokens=8",
                            "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert len(res["judgements"]) == 4 and len(res["kept_ids"]) == 2
    assert res["models"]["retriever"]


def test_evaluate_questions_over_an_index_when_they_have_no_pool_of_their_own(tmp_path):
    """The demo's questions name corpus ids and carry no candidates: `--index` is what they retrieve from."""
    questions = demo_corpus_dir() / "questions.jsonl"
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(demo_corpus_dir() / "corpus.jsonl"), "--out", str(idx)]).exit_code == 0
    args = ["evaluate", str(questions), "--dataset", "jsonl", "--limit", "2", "--model", "tiny-lm",
            "--set", "top_n=4", "--set", "stage2_max_new_tokens=8"]
    r = runner.invoke(app, args + ["--out", str(tmp_path / "no_index")])
    assert r.exit_code == 2 and "no question has 'candidates'" in r.output and "--index" in r.output
    r = runner.invoke(app, args + ["--out", str(tmp_path / "held"), "--index", str(idx), "--heldout", "default"])
    assert r.exit_code == 2 and "`--heldout none` asks every one" in " ".join(r.output.split())
    r = runner.invoke(app, args + ["--out", str(tmp_path / "ev"), "--index", str(idx), "--heldout", "none"])
    assert r.exit_code == 0, r.output
    preds = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(len(p["judgements"]) == 4 for p in preds)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["filter"]["gold_recall_retrieved"] > 0
    report = (tmp_path / "ev" / "report.html").read_text()  # the explanation of each answer, as the demo writes
    assert all(p["question"] in report for p in preds) and "Cited evidence" in report and "unknown id" not in report
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "modality": "text", "text": "Another corpus."}) + "\n")
    assert runner.invoke(app, ["index", str(other), "--out", str(tmp_path / "other")]).exit_code == 0
    r = runner.invoke(app, args + ["--out", str(tmp_path / "ev2"), "--index", str(tmp_path / "other")])
    assert r.exit_code == 2 and "is not in the index" in r.output and "Traceback" not in r.output


def test_ask_missing_index_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["ask", "q?", "--index", str(tmp_path / "nope"), "--model", "tiny-lm"])
    assert r.exit_code == 2
    assert "index" in r.output and "Traceback" not in r.output


def test_ask_bad_config_key(tmp_path):
    r = runner.invoke(app, ["ask", "q?", "--index", str(tmp_path), "--set", "filter.treshold=0.2"])
    assert r.exit_code == 2 and "treshold" in r.output


def test_evaluate_heldout_asks_only_the_questions_a_run_never_trained_on(tmp_path, shared_data):
    import gzip

    records = shared_data / "webqa" / "val_records.json.gz"
    qids = list(json.loads(gzip.open(records).read()))
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"train": qids[:-2], "val": [qids[-1], qids[-2], "not-in-file"]}))
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", str(records), "--dataset", "webqa", "--heldout", str(run), "--out", str(out),
                            "--model", "tiny-lm", "--set", "top_n=3", "--set", "filter.threshold=0", "--set",
                            "filter.top_k=2", "--set", "stage2_max_new_tokens=4"])
    assert r.exit_code == 0, r.output
    asked = {json.loads(x)["qid"] for x in (out / "predictions.jsonl").read_text().splitlines()}
    assert asked == {qids[-1], qids[-2]}
    assert "held out by" in json.loads((out / "metrics.json").read_text())["note"]
    bad = runner.invoke(app, ["evaluate", str(records), "--dataset", "webqa", "--heldout", str(tmp_path),
                              "--out", str(tmp_path / "ev2"), "--model", "tiny-lm"])
    assert bad.exit_code == 2 and "split.json" in bad.output and "Traceback" not in bad.output


def test_evaluate_resumes_without_reloading(tmp_path, shared_data):
    out = tmp_path / "ev"
    args = ["evaluate", str(shared_data / "webqa" / "val_records.json.gz"), "--dataset", "webqa", "--limit", "2",
            "--out", str(out), "--model", "tiny-lm", "--set", "top_n=4", "--set", "filter.threshold=0",
            "--set", "filter.top_k=2", "--set", "stage2_max_new_tokens=8"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["overall"]["n"] == 2 and "retr_f1" in m["overall"] and "qa_acc" in m["overall"]
    assert "captions stand in for pixels" in m["note"]
    first = (out / "predictions.jsonl").read_text()
    r = runner.invoke(app, args)  # a re-run with the same settings only re-scores
    assert r.exit_code == 0
    assert (out / "predictions.jsonl").read_text() == first
    # other settings would be reported as if they had made the old predictions: refused, naming what changed
    r = runner.invoke(app, args[:-1] + ["stage2_max_new_tokens=9"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "stage2_max_new_tokens: 8 -> 9" in " ".join(r.output.split())
    assert (out / "predictions.jsonl").read_text() == first
    r = runner.invoke(app, args[:-2] + ["--model", "tiny-vlm"] + args[-2:])
    assert r.exit_code == 2 and "model: 'tiny-lm' -> 'tiny-vlm'" in " ".join(r.output.split())
    sub = json.loads((out / "submission.json").read_text())
    assert len(sub) == 2 and all(set(v) == {"sources", "answer"} for v in sub.values())


def test_evaluate_heldout_default_is_the_shipped_models_split(tmp_path, shared_data):
    """`--heldout default`: the questions the shipped stage-1 adapter never trained on (its split.json)."""
    from mmrag_rft.evaluation.evaluate import heldout_qids
    from mmrag_rft.models.loading import shipped_model

    held = heldout_qids("default")
    split = json.loads((shipped_model(1) / "split.json").read_text())
    assert held == set(split["val"]) and len(held) == 51 and not held & set(split["train"])
    bad = runner.invoke(app, ["evaluate", str(shared_data / "webqa" / "val_records.json.gz"), "--dataset", "webqa",
                              "--heldout", "no-such-model/x/y", "--out", str(tmp_path / "e"), "--model", "tiny-lm"])
    assert bad.exit_code == 2 and "no-such-model" in bad.output and "Traceback" not in bad.output


def test_ablate_runs_each_system_once_and_scores_the_stage2_view(tmp_path, shared_data):
    """The ablation over 2 held-out questions with the tiny model standing in for every spec: one folder per system,
    the view re-scored from its system's predictions (no second run), a table, JSON and a PNG."""
    from mmrag_rft.evaluation.ablate import System, run_ablation
    from mmrag_rft.models.loading import load_backend

    base = ["top_n=4", "filter.threshold=0", "filter.top_k=2", "stage2_max_new_tokens=4"]
    systems = [System("retriever_topk", "retriever", "tiny-lm", base + ["stage1_mode=skip"]),
               System("stage1", "stage 1", "tiny-lm", base + ["sources=filter"]),
               System("stage1_rank", "stage 2's order", "tiny-lm", base, view_of="stage1",
                      sources=lambda row: ["not-a-source"])]
    asked = []

    def load(spec):
        asked.append(spec)
        return load_backend(spec)

    out = tmp_path / "abl"
    s = run_ablation(shared_data / "webqa" / "val_records.json.gz", dataset="webqa", out_dir=out, heldout="default",
                     limit=2, systems=systems, load=load, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["retriever_topk", "stage1"]
    assert set(s["systems"]) == {"retriever_topk", "stage1", "stage1_rank"} and s["questions"] == 2
    assert s["systems"]["stage1_rank"]["retrieval_f1"] == 0.0  # the view's sources, not the system's
    assert "captions stand in for pixels" in s["note"]
    assert (out / "ablation.png").stat().st_size > 1000 and "| stage1_rank |" in (out / "ablation.md").read_text()
    n = len(asked)
    again = run_ablation(shared_data / "webqa" / "val_records.json.gz", dataset="webqa", out_dir=out,
                         heldout="default", limit=2, systems=systems, load=load, progress=False)
    assert len(asked) == n and again["systems"] == s["systems"]  # a finished ablation re-scores, loads nothing
    fewer = run_ablation(shared_data / "webqa" / "val_records.json.gz", dataset="webqa", out_dir=out,
                         heldout="default", limit=1, systems=systems, load=load, progress=False)
    assert fewer["questions"] == 1 and all(r["n"] == 1 for r in fewer["systems"].values())  # not the older 2


def test_every_ablation_system_is_a_pipeline_config_that_loads():
    from mmrag_rft.evaluation.ablate import default_systems
    from mmrag_rft.pipeline import pipeline_config

    cfgs = {s.name: pipeline_config(s.model, None, s.overrides)
            for s in default_systems("qwen2.5-coder-0.5b", candidates={"c": "runs/x"}) if not s.view_of}
    assert cfgs["closed_book"].closed_book and not cfgs["retriever_topk"].closed_book
    unfiltered = cfgs["stage2_unfiltered"]
    assert unfiltered.stage1_mode == "skip" and unfiltered.filter.top_k == 9 and unfiltered.sources == "stage2"
    assert {c.stage2_model for n, c in cfgs.items() if n in ("closed_book", "stage2_unfiltered")} == \
        {"qwen2.5-coder-0.5b"}


def test_a_candidate_stage2_model_reads_the_same_survivors_as_the_shipped_one():
    from mmrag_rft.evaluation.ablate import default_systems

    plain = {s.name: s for s in default_systems("qwen2.5-coder-0.5b")}
    assert "candidate_stage2" not in plain
    both = {s.name: s for s in default_systems("qwen2.5-coder-0.5b", candidates={"candidate_stage2": "runs/r2"})}
    cand, shipped = both["candidate_stage2"], both["shipped"]
    assert cand.model == shipped.model and cand.overrides == ['stage2_model="runs/r2"']  # only the reader differs
    assert both["candidate_stage2_rank"].view_of == "candidate_stage2"
    assert both["candidate_stage2_rank"].sources({"stage2_rank": ["b", "a", "c"], "kept_ids": ["a"]}) == ["b", "a"]
    assert "candidate_stage2_written" not in both  # the written list is the ranking already


def test_a_candidate_read_by_another_ranking_also_shows_the_list_it_wrote():
    from mmrag_rft.evaluation.ablate import default_systems

    both = {s.name: s for s in default_systems("qwen2.5-coder-0.5b", candidates={"c": "runs/r2"},
                                               candidate_ranking="consistent")}
    assert both["c"].overrides == ['stage2_model="runs/r2"', "stage2_ranking=consistent"]
    assert "stage2_ranking" not in " ".join(both["shipped"].overrides)  # the shipped row reads as it ships
    row = {"stage2_rank": ["b", "a"], "stage2_written": ["a", "b"], "kept_ids": ["a", "b"]}
    assert both["c_rank"].sources(row) == ["b", "a"] and both["c_written"].sources(row) == ["a", "b"]
    assert both["c_written"].sources({**row, "stage2_written": []}) == ["a", "b"]  # unusable: the filter's order


def test_ablate_names_an_unknown_stage2_ranking(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    r = runner.invoke(app, ["ablate", str(data), "--dataset", "jsonl", "--stage2-model", "runs/r2",
                            "--stage2-ranking", "vote", "--reader", "", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--stage2-ranking 'vote'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("entry, says", [("shipped=runs/r2", "that name is a system already"),
                                         ("bad name=runs/r2", "give SPEC or NAME=SPEC"),
                                         ("x=", "give SPEC or NAME=SPEC")])
def test_ablate_stage2_model_names_are_checked_before_anything_loads(tmp_path, entry, says):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    r = runner.invoke(app, ["ablate", str(data), "--dataset", "jsonl", "--stage2-model", entry, "--reader", "",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output


def test_ablate_stage2_models_by_name_each_get_a_row_and_a_rank_view():
    from mmrag_rft.evaluation.ablate import default_systems

    rows = {s.name: s for s in default_systems("r", candidates={"released": "qwen2.5-coder-0.5b", "new": "runs/x"})}
    assert rows["released"].overrides == ['stage2_model="qwen2.5-coder-0.5b"']
    assert rows["new"].overrides == ['stage2_model="runs/x"'] and rows["new_rank"].view_of == "new"


def test_ask_blank_question_is_one_clear_line(tmp_path):
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(demo_corpus_dir() / "corpus.jsonl"), "--out", str(idx)]).exit_code == 0
    r = runner.invoke(app, ["ask", "   ", "--index", str(idx), "--model", "tiny-lm"])
    assert r.exit_code == 2 and "question is empty" in r.output and "Traceback" not in r.output


def test_a_failed_first_evaluate_does_not_block_the_corrected_one(tmp_path, shared_data):
    out = tmp_path / "ev"
    args = ["evaluate", str(shared_data / "webqa" / "val_records.json.gz"), "--dataset", "webqa", "--limit", "1",
            "--out", str(out), "--set", "top_n=3", "--set", "filter.threshold=0", "--set", "stage2_max_new_tokens=4"]
    r = runner.invoke(app, args + ["--model", str(tmp_path / "no-such-model")])
    assert r.exit_code == 2 and "no-such-model" in r.output
    r = runner.invoke(app, args + ["--model", "tiny-lm"])
    assert r.exit_code == 0, r.output
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1


def test_two_evaluates_into_one_folder_are_refused_and_out_must_be_a_folder(tmp_path, shared_data):
    from mmrag_rft.evaluation.evaluate import run_lock

    out = tmp_path / "ev"
    out.mkdir()
    args = ["evaluate", str(shared_data / "webqa" / "val_records.json.gz"), "--dataset", "webqa", "--limit", "1",
            "--model", "tiny-lm", "--set", "top_n=3"]
    with run_lock(out):  # another evaluate is writing there
        r = runner.invoke(app, args + ["--out", str(out)])
    assert r.exit_code == 2 and "another evaluate" in r.output and not (out / "predictions.jsonl").exists()
    (tmp_path / "file").write_text("x")
    r = runner.invoke(app, args + ["--out", str(tmp_path / "file")])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output


def test_ablate_on_mmqa_asks_every_question_with_heldout_none(tmp_path, shared_data):
    """MMQA is a benchmark no model here trained on: `--heldout none` asks its questions, scored by list EM/F1."""
    out = tmp_path / "ab"
    r = runner.invoke(app, ["ablate", str(shared_data / "mmqa" / "MMQA_dev.jsonl.gz"), "--dataset", "mmqa",
                            "--heldout", "none", "--model", "tiny-lm", "--reader", "tiny-lm", "--limit", "2",
                            "--only", "closed_book", "--only", "retriever_topk", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["questions"] == 2 and "no split applied" in summary["note"]
    closed, topk = summary["systems"]["closed_book"], summary["systems"]["retriever_topk"]
    assert 0.0 <= topk["list_f1"] <= 1.0 and "qa_acc" not in topk and topk["retrieval_f1"] is not None
    assert closed["retrieval_f1"] == 0.0  # nothing retrieved, nothing cited
    assert "list_f1" in (out / "ablation.md").read_text()


def test_with_gold_asks_only_questions_whose_gold_is_among_their_candidates(tmp_path, shared_data):
    """MMQA offline has image candidates only: `--with-gold` keeps the questions stage 1 can find evidence for."""
    from mmrag_rft.data.loaders import load_samples

    path = shared_data / "mmqa" / "MMQA_dev.jsonl.gz"
    first = [s for _, s in zip(range(30), load_samples(path, format="mmqa"))]
    with_gold = [s.qid for s in first if set(s.gold_ids) & {c.id for c in s.candidates}][:2]
    assert len(with_gold) == 2 and with_gold != [s.qid for s in first[:2]]  # the filter skips questions here
    out = tmp_path / "ev"
    args = ["evaluate", str(path), "--dataset", "mmqa", "--limit", "2", "--model", "tiny-lm", "--set", "top_n=3",
            "--out", str(out)]
    r = runner.invoke(app, args + ["--with-gold"])
    assert r.exit_code == 0, r.output
    asked = [json.loads(line)["qid"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert asked == with_gold
    assert "with gold among their candidates" in json.loads((out / "metrics.json").read_text())["note"]
    r = runner.invoke(app, args)  # the same folder without the filter would mix two question sets
    assert r.exit_code == 2 and "Traceback" not in r.output
