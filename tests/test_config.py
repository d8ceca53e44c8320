from __future__ import annotations

import pytest

from mmrag_rft.config import ConfigError, atomic_write_text, load
from mmrag_rft.pipeline import PipelineConfig


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("top_n: 7\nfilter:\n  threshold: 0.3\n")
    cfg = load(PipelineConfig, p, ["filter.top_k=2", "stage1_mode=reason"])
    assert (cfg.top_n, cfg.filter.threshold, cfg.filter.top_k, cfg.stage1_mode) == (7, 0.3, 2, "reason")


@pytest.mark.parametrize("text, needle", [
    ("top_nn: 3\n", "unknown key(s) ['top_nn']"),
    ("filter:\n  treshold: 0.3\n", "filter: unknown key(s) ['treshold']"),
    ("stage1_mode: fast\n", "stage1_mode: must be one of ['score', 'reason']"),
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
