"""Resume picks the newest checkpoint it can resume from: a kill mid-save or a damaged file must not cost the run."""

from __future__ import annotations

import json


def _checkpoint(root, step, *, state=True, weights=True):
    import torch
    from safetensors.torch import save_file

    d = root / f"checkpoint-{step}"
    d.mkdir()
    if weights:
        save_file({"w": torch.zeros(2)}, str(d / "adapter_model.safetensors"))
    if state:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def test_resume_skips_a_checkpoint_torn_by_a_kill_mid_save(tmp_path):
    from mmrag_rft.training.checkpoints import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 10)
    torn = _checkpoint(tmp_path, 15, state=False)
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    (torn / "trainer_state.json").write_text(json.dumps({"global_step": 15}))
    assert last_checkpoint(tmp_path) == torn


def test_resume_falls_back_past_a_corrupt_state_or_weights_file_and_names_it(tmp_path, caplog):
    from mmrag_rft.training.checkpoints import checkpoint_problem, last_checkpoint

    good = _checkpoint(tmp_path, 10)
    bad_state = _checkpoint(tmp_path, 20)
    (bad_state / "trainer_state.json").write_text('{"global_step": 2')  # torn JSON
    bad_weights = _checkpoint(tmp_path, 30)
    (bad_weights / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    assert "trainer_state.json is unreadable" in checkpoint_problem(bad_state)
    assert "adapter_model.safetensors is unreadable" in checkpoint_problem(bad_weights)
    with caplog.at_level("WARNING"):
        assert last_checkpoint(tmp_path) == good
    assert "checkpoint-30 cannot be resumed from" in caplog.text and "checkpoint-20" in caplog.text
