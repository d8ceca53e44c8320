"""A training run never clobbers another: a fresh run into a run folder needs --overwrite (old run moved aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag_rft.training.checkpoints import prepare_output

ROOT = Path(__file__).resolve().parent.parent


def test_fresh_run_into_a_run_folder_is_refused_then_moved_aside(tmp_path):
    out = tmp_path / "a"
    (out / "checkpoint-60").mkdir(parents=True)
    (out / "log.jsonl").write_text('{"step": 60}\n')
    (out / "warmup").mkdir()  # a keyed cache: stays for the new run to reuse or redo
    with pytest.raises(ValueError, match="already holds a training run.*--resume.*--overwrite"):
        prepare_output(out, resume=False, overwrite=False)
    assert (out / "log.jsonl").is_file()  # nothing touched
    assert prepare_output(out, resume=True, overwrite=False) is None
    aside = prepare_output(out, resume=False, overwrite=True)
    assert (aside / "checkpoint-60").is_dir() and (aside / "log.jsonl").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["warmup"]
    with pytest.raises(ValueError, match="give one of them"):
        prepare_output(out, resume=True, overwrite=True)


def test_empty_or_new_folder_is_fine(tmp_path):
    assert prepare_output(tmp_path / "new", resume=False, overwrite=False) is None
    (tmp_path / "empty").mkdir()
    assert prepare_output(tmp_path / "empty", resume=False, overwrite=False) is None


def test_cli_names_the_folder_and_the_way_out(tmp_path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)
    r = CliRunner().invoke(app, ["train", "stage1", "--config", str(ROOT / "configs/stage1_tiny.yaml"), "--set",
                                 "data.path=x.json", "--output", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "already holds a training run" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output


def test_resume_refuses_a_changed_config_and_names_the_keys(tmp_path):
    from mmrag_rft.config import dump
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.checkpoints import check_resume_config

    base = [f"output_dir={tmp_path}", "data.path=a.json"]
    dump(load_train_config(ROOT / "configs/stage1_tiny.yaml", base), tmp_path / "config.yaml")
    # how long it runs and how it saves may change
    check_resume_config(tmp_path / "config.yaml",
                        load_train_config(ROOT / "configs/stage1_tiny.yaml", [*base, "grpo.max_steps=99",
                                                                              "grpo.save_steps=7"]))
    for change, key in (("data.path=b.json", "data.path"), ("grpo.learning_rate=0.5", "grpo.learning_rate"),
                        ("lora.r=3", "lora.r"), ("data.split_seed=3", "data.split_seed"),
                        ("model.path=tiny-vlm", "model.path")):
        with pytest.raises(ValueError, match=rf"--resume with another config \({key}: .*grpo.max_steps"):
            check_resume_config(tmp_path / "config.yaml",
                                load_train_config(ROOT / "configs/stage1_tiny.yaml", [*base, change]))


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_at_step_0(tmp_path):
    """A stage-2 run killed while scoring its negatives has a config and a scores cache but no checkpoint yet:
    --resume continues it (the cache kept); a folder with no run at all is still refused."""
    from mmrag_rft.config import dump
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import open_run_folder

    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml", [f"output_dir={tmp_path / 'run'}", "data.path=a.json"])
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        open_run_folder(cfg, resume=True, overwrite=False)
    dump(cfg, tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "stage1_scores.json").write_text("{}")
    assert open_run_folder(cfg, resume=True, overwrite=False) == (tmp_path / "run", None)
    assert (tmp_path / "run" / "stage1_scores.json").is_file()
    other = load_train_config(ROOT / "configs/stage1_tiny.yaml", [f"output_dir={tmp_path / 'run'}", "data.path=b.json"])
    with pytest.raises(ValueError, match="data.path"):
        open_run_folder(other, resume=True, overwrite=False)
