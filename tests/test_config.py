from __future__ import annotations

import re

import pytest

from mmrag_rft.config import ConfigError, atomic_write_text, load
from mmrag_rft.pipeline import PipelineConfig


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("top_n: 7\nfilter:\n  threshold: 0.3\n")
    cfg = load(PipelineConfig, p, ["filter.top_k=2", "stage1_mode=reason"])
    assert (cfg.top_n, cfg.filter.threshold, cfg.filter.top_k, cfg.stage1_mode) == (7, 0.3, 2, "reason")


def test_a_config_is_an_overlay_on_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("top_n: 7\nfilter:\n  threshold: 0.3\n  top_k: 4\n")
    (tmp_path / "sub").mkdir()
    over = tmp_path / "sub" / "over.yaml"
    over.write_text("base: ../base.yaml\nfilter:\n  top_k: 2\n")
    cfg = load(PipelineConfig, over, ["top_n=9"])
    assert (cfg.top_n, cfg.filter.threshold, cfg.filter.top_k) == (9, 0.3, 2)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load(PipelineConfig, loop)
    (tmp_path / "gone.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load(PipelineConfig, tmp_path / "gone.yaml")


def test_the_shipped_overlays_load():
    from pathlib import Path

    from mmrag_rft.training.config import load_train_config

    root = Path(__file__).resolve().parent.parent / "configs"
    reader = load_train_config(root / "stage2_reader_cpu.yaml")
    assert reader.model.path == "qwen2.5-coder-0.5b" and reader.rewards.ranking_metric == "ndcg_penalized"
    assert reader.data.num_candidates == load_train_config(root / "stage2_cpu.yaml").data.num_candidates


@pytest.mark.parametrize("text, needle", [
    ("top_nn: 3\n", "unknown key(s) ['top_nn']"),
    ("filter:\n  treshold: 0.3\n", "filter: unknown key(s) ['treshold']"),
    ("stage1_mode: fast\n", "stage1_mode: must be one of ['score', 'reason', 'skip']"),
    ("top_n: many\n", "top_n: expected int"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(PipelineConfig, p)
    assert needle in str(e.value)


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_text(tmp_path / "a" / "x.json", "{}")
    assert [f.name for f in (tmp_path / "a").iterdir()] == ["x.json"]


def test_bad_override_is_named_as_typed_even_inside_a_list_or_section(tmp_path):
    from mmrag_rft.training.config import TrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("top_n: 7\n")
    with pytest.raises(ConfigError, match=r"^override filter.threshold=high: expected float"):
        load(PipelineConfig, p, ["filter.threshold=high"])
    typed = r"^override lora.target_modules=\[q_proj, \[1\]\] "
    with pytest.raises(ConfigError, match=typed + r"\(lora.target_modules\[1\]\): expected a string"):
        load(TrainConfig, None, ["lora.target_modules=[q_proj, [1]]"])
    with pytest.raises(ConfigError, match=r"^override filter=\{threshold: x\} \(filter.threshold\): expected float"):
        load(PipelineConfig, p, ["filter={threshold: x}"])
    p.write_text("top_n: many\n")
    with pytest.raises(ConfigError) as e:  # the file's own error stays the file's
        load(PipelineConfig, p, ["filter.top_k=2"])
    assert str(e.value).startswith(f"{p}.top_n: expected int") and "(with overrides filter.top_k=2)" in str(e.value)


@pytest.mark.parametrize("override", ["filter.threshold=5", "top_n=-3", "filter.top_k=-1", "stage1_batch_size=0",
                                      "stage1_samples=0", "stage2_temperature=-1", "stage2_max_new_tokens=-5",
                                      "stage2_temperature=.nan", "filter.retrieval_weight=.inf", "max_sources=-1"])
def test_every_numeric_pipeline_setting_is_range_checked(override):
    from mmrag_rft.config import ConfigError, load
    from mmrag_rft.pipeline import PipelineConfig

    with pytest.raises(ConfigError, match=rf"override {re.escape(override)}: (must be|expected a finite)"):
        load(PipelineConfig, None, [override])


def test_every_ranged_field_exists_and_its_default_fits():
    """RANGES name real fields (a typo would silently check nothing) and the defaults pass their own bounds."""
    import dataclasses

    from mmrag_rft.config import range_problem
    from mmrag_rft.pipeline import FilterConfig, PipelineConfig
    from mmrag_rft.training import config as tc

    for cls in (PipelineConfig, FilterConfig, tc.ModelSection, tc.DataSection, tc.GRPOSection, tc.LoraSection,
                tc.WarmupSection, tc.TrainConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert cls.RANGES and set(cls.RANGES) <= set(fields), cls
        for name in cls.RANGES:
            f = fields[name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert range_problem(cls, name, default) is None, (cls, name)
    with pytest.raises(ValueError, match="top_k"):
        FilterConfig(top_k=-1)  # built in Python, not only through YAML


@pytest.mark.parametrize("override", ["grpo.learning_rate=-1", "grpo.learning_rate=.nan",
                                      "grpo.per_device_train_batch_size=0", "grpo.max_completion_length=0",
                                      "lora.r=0", "warmup.batch_size=0", "data.val_fraction=1.5"])
def test_training_values_are_refused_before_anything_loads(override):
    from mmrag_rft.config import ConfigError
    from mmrag_rft.training.config import load_train_config

    with pytest.raises(ConfigError, match=re.escape(override)):
        load_train_config(None, [override])


def test_a_run_with_nothing_to_train_is_refused():
    from mmrag_rft.config import ConfigError
    from mmrag_rft.training.config import load_train_config

    with pytest.raises(ConfigError, match="nothing to train"):
        load_train_config(None, ["grpo.max_steps=0"])
    with pytest.raises(ConfigError, match="nothing to train"):
        load_train_config(None, ["grpo.num_train_epochs=0"])


def test_an_empty_string_setting_is_never_the_string_none():
    with pytest.raises(ConfigError, match="expected a string, got null"):
        load(PipelineConfig, None, ["stage2_model="])
    assert load(PipelineConfig, None, ['stage2_model=""']).stage2_model == ""


def test_config_show_prints_every_key_with_its_default_and_help():
    import json as _json

    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    from pathlib import Path

    reader_cfg = str(Path(__file__).resolve().parent.parent / "configs" / "stage2_reader_cpu.yaml")
    r = CliRunner().invoke(app, ["config", "show", "stage2", "--config", reader_cfg, "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["key"]: x for x in _json.loads(r.output)}
    assert rows["model.path"]["value"] == "qwen2.5-coder-0.5b" and rows["model.path"]["default"] == "default"
    assert "K: gold" in rows["data.num_candidates"]["help"]
    assert rows["grpo.beta"]["help"] and rows["lora.r"]["help"] == "LoRA rank"  # ours and TRL's own help
    changed = CliRunner().invoke(app, ["config", "show", "pipeline", "--set", "top_n=7", "--changed", "--json"])
    assert [x["key"] for x in _json.loads(changed.output)] == ["top_n"]
    bad = CliRunner().invoke(app, ["config", "show", "stage3"])
    assert bad.exit_code == 2 and "stage1, stage2, pipeline" in bad.output
