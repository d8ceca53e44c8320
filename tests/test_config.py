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
