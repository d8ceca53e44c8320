"""Resume picks the newest complete checkpoint: a kill mid-save must not cost the run."""

from __future__ import annotations


def test_resume_skips_a_checkpoint_torn_by_a_kill_mid_save(tmp_path):
    from mmrag_rft.training.grpo import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((5, True), (10, True), (15, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    (tmp_path / "checkpoint-15" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-15"
