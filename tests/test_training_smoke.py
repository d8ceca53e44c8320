"""2-step GRPO smoke runs of both stages on a tiny random model: real TRL updates, checkpoints, kill + resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mmrag_rft.data.schema import Candidate, Sample

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Killed(RuntimeError):
    pass


def _kill_on_save(what: str):
    """A callback that raises right after the Trainer writes a checkpoint: a kill at that moment."""
    from transformers import TrainerCallback

    class KillOnSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise Killed(f"killed after saving step {state.global_step}{what}")

    return KillOnSave()


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, tiny_samples):
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    tmp = tmp_path_factory.mktemp("train")
    data = tiny_samples
    out = tmp / "stage1"
    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml", [f"data.path={data}", f"output_dir={out}"])

    with pytest.raises(Killed):
        train(cfg, stage=1, callbacks=[_kill_on_save("")])
    assert (out / "checkpoint-1").is_dir() and not (out / "merged").exists()
    logged_before = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    res = train(cfg, stage=1, resume=True)
    return cfg, res, logged_before


def test_stage1_resumes_after_kill_and_logs_rewards(stage1_run):
    cfg, res, logged_before = stage1_run
    assert [r["step"] for r in logged_before] == [1]
    assert res.resumed_from and res.resumed_from.endswith("checkpoint-1")
    assert res.global_step == 2
    rows = [json.loads(x) for x in Path(res.log_path).read_text().splitlines()]
    steps = [r for r in rows if "train_runtime" not in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        for key in ("rewards/stage1_format_reward/mean", "rewards/stage1_accuracy_reward/mean",
                    "frac_reward_zero_std", "completions/mean_length", "loss", "step_time"):
            assert key in r, key
        assert math.isfinite(r["loss"])
        assert 0.1 < r["peak_memory_gb"] < 64  # a process with torch and a model loaded, in GB (not KiB or bytes)
    assert res.warmup is not None and math.isfinite(res.warmup["loss_last"])
    assert (Path(res.output_dir) / "checkpoint-2").is_dir()
    # the text model ran its prompts once per group of 2 completions
    assert res.metrics["share_prompt"] == "on"
    rows_run = res.metrics["shared_prompt_rows"]
    assert 0 < rows_run["logprob_prompt_rows"] < rows_run["logprob_rows"]


def test_resuming_a_finished_run_trains_nothing(stage1_run):
    from mmrag_rft.training.grpo import train

    cfg, res, _ = stage1_run
    log_before = Path(res.log_path).read_text()
    again = train(cfg, stage=1, resume=True)
    assert again.global_step == 2 and again.merged_dir == res.merged_dir
    assert not (Path(res.output_dir) / "checkpoint-3").exists()  # the Trainer alone would run a third step
    assert Path(res.log_path).read_text() == log_before


def test_kill_between_the_last_save_and_the_export_resumes_without_training(tmp_path, tiny_samples):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    out = tmp_path / "run"
    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml",
                            [f"data.path={tiny_samples}", f"output_dir={out}", "grpo.max_steps=1"])

    with pytest.raises(Killed):
        train(cfg, stage=1, callbacks=[_kill_on_save(", before the export")])
    assert (out / "checkpoint-1").is_dir() and not (out / "merged").exists()
    log_before = (out / "log.jsonl").read_text()
    # one step of a random tiny model may leave LoRA's B at zero: make the checkpoint's adapter visibly trained,
    # so an export of the untrained base could not pass for it
    from safetensors.torch import load_file, save_file

    weights = out / "checkpoint-1" / "adapter_model.safetensors"
    sd = load_file(weights)
    save_file({k: v + 0.05 * torch.randn_like(v) if "lora_B" in k else v for k, v in sd.items()}, weights)
    res = train(cfg, stage=1, resume=True)
    assert res.global_step == 1 and not (out / "checkpoint-2").exists()  # the Trainer alone would train step 2
    assert res.metrics["exported_from_checkpoint"].endswith("checkpoint-1")
    assert (out / "log.jsonl").read_text() == log_before
    # the export is the checkpoint's weights, not the untrained base
    tok = AutoTokenizer.from_pretrained(res.merged_dir)
    ids = tok("Question: what?", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(res.merged_dir)(**ids).logits
        ckpt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "warmup"),
                                         out / "checkpoint-1")(**ids).logits
        base = AutoModelForCausalLM.from_pretrained(out / "warmup")(**ids).logits
    assert torch.allclose(merged, ckpt, atol=1e-4)
    assert not torch.allclose(merged, base, atol=1e-3)


def test_stage1_checkpoint_and_merged_model_reload(stage1_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, res, _ = stage1_run
    tok = AutoTokenizer.from_pretrained(res.merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(res.merged_dir)
    base = AutoModelForCausalLM.from_pretrained(Path(res.output_dir) / "warmup")
    adapted = PeftModel.from_pretrained(base, Path(res.output_dir) / "checkpoint-2")
    ids = tok("Question: what?", return_tensors="pt")
    with torch.no_grad():
        a = merged(**ids).logits
        b = adapted(**ids).logits
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-4)  # merging the adapter of the last checkpoint gives the saved model


def test_stage2_starts_from_stage1_run(stage1_run, tmp_path):
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg1, res1, _ = stage1_run
    cfg = load_train_config(ROOT / "configs/stage2_tiny.yaml",
                            [f"data.path={cfg1.data.path}", f"output_dir={tmp_path / 'stage2'}",
                             "data.negatives=stage1", "data.permutations=2",
                             "rewards.funcs={format: 1.0, ranking: 1.0, answer: 1.0, grounding: 0.5}"])
    res = train(cfg, stage=2, init=res1.output_dir)
    assert res.global_step == 2
    rows = [json.loads(x) for x in Path(res.log_path).read_text().splitlines() if "train_runtime" not in x]
    assert {"rewards/stage2_format_reward/mean", "rewards/ranking_reward/mean",
            "rewards/answer_reward/mean", "rewards/grounding_reward/mean"} <= set(rows[0])
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (Path(res.merged_dir) / "config.json").is_file()
    # negatives were ordered by the stage-1 model; its scores are cached for a resume, keyed by that model
    cache = json.loads((tmp_path / "stage2" / "stage1_scores.json").read_text())
    assert cache["model"].endswith("merged") and cache["scores"]
    assert all(0.0 <= p <= 1.0 for q in cache["scores"].values() for p in q.values())


def test_train_eval_compares_a_run_with_its_start_model_on_held_out_questions(stage1_run, tmp_path):
    """`mmrag train eval RUN`: the run's start model and its trained model, on the questions its split held out."""
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    cfg1, res1, _ = stage1_run
    run = Path(res1.output_dir)
    r = CliRunner().invoke(app, ["train", "eval", str(run), "--out", str(tmp_path / "s1.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "s1.json").read_text())
    held = set(json.loads((run / "split.json").read_text())["val"])
    assert doc["stage"] == 1 and doc["heldout_questions"] == len(held) > 0
    assert set(doc["models"]) == {"start", "merged"} and doc["models"]["merged"]["model"].endswith("merged")
    assert all(0.0 <= m["score_mode"]["auc"] <= 1.0 for m in doc["models"].values())
    # stage 2 on the same run's questions, an unfinished run named by --stage, a folder that is no run
    r = CliRunner().invoke(app, ["train", "eval", str(run), "--stage", "2", "--model", "tiny-lm", "--orders", "2",
                                 "--out", str(tmp_path / "s2.json")])
    assert r.exit_code == 0, r.output
    s2 = json.loads((tmp_path / "s2.json").read_text())
    assert s2["orders"] == 2 and s2["models"]["tiny-lm"]["n"] == 2 * len(held)  # every question in two orders
    assert s2["references"]["ndcg_random_permutation"] > 0 and "first_is_gold_chance" in s2["models"]["tiny-lm"]["selection"]
    lik = s2["models"]["tiny-lm"]["likelihood"]
    assert 0.0 <= lik["first_is_gold"] <= 1.0 and 0.0 < lik["first_is_gold_chance"] <= 1.0 and 0.0 < lik["ndcg"] <= 1.0
    assert 0.0 <= lik["gold_first_every_rotation"] <= lik["same_first_every_rotation"] <= 1.0
    r = CliRunner().invoke(app, ["train", "eval", str(tmp_path)])
    assert r.exit_code == 2 and "not a training run folder" in r.output
    r = CliRunner().invoke(app, ["train", "eval", str(run), "--model", str(tmp_path / "no-such-model")])
    assert r.exit_code == 2 and "no such model folder" in r.output and "Traceback" not in r.output


def test_stage2_negatives_can_come_from_another_model_than_the_policy(stage1_run, tmp_path):
    """One model per stage: the stage-1 run orders the negatives of a stage-2 run whose policy is another model."""
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg1, res1, _ = stage1_run
    cfg = load_train_config(ROOT / "configs/stage2_tiny.yaml",
                            [f"data.path={cfg1.data.path}", f"output_dir={tmp_path / 'reader'}", "model.path=tiny-lm",
                             "data.negatives=stage1", f"data.negatives_model={res1.output_dir}",
                             "warmup.enabled=false"])
    res = train(cfg, stage=2)
    assert res.global_step == 2
    cache = json.loads((tmp_path / "reader" / "stage1_scores.json").read_text())
    assert cache["model"].startswith(str(res1.output_dir)) and cache["scores"]


def test_stage2_advantage_over_both_orders_of_a_question(tiny_samples, tmp_path):
    """`grpo.advantage_group: question`: a real stage-2 run whose steps hold one question in both orders."""
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg = load_train_config(ROOT / "configs/stage2_tiny.yaml",
                            [f"data.path={tiny_samples}", f"output_dir={tmp_path / 'q'}", "warmup.enabled=false",
                             "data.balanced_steps=true", "data.permutations=2", "data.max_gold=1",
                             "grpo.per_device_train_batch_size=4", "grpo.advantage_group=question"])
    res = train(cfg, stage=2)
    assert res.global_step == 2
    rows = [json.loads(x) for x in Path(res.log_path).read_text().splitlines() if "train_runtime" not in x]
    assert all(0.0 <= r["frac_question_reward_zero_std"] <= 1.0 and math.isfinite(r["loss"]) for r in rows)


def test_stage1_scores_cache_is_reused(stage1_run, tmp_path):
    from mmrag_rft.models.loading import load_model, load_processor
    from mmrag_rft.training.grpo import load_split
    from mmrag_rft.training.negatives import stage1_scores_with_model

    cfg1, res1, _ = stage1_run
    train_samples, _ = load_split(cfg1)
    src = Path(res1.merged_dir)
    model = load_model(src)
    proc = load_processor(src)
    cache = tmp_path / "s.json"
    first = stage1_scores_with_model(lambda: model, proc, train_samples, cache=cache, model_key="m1")
    assert set(first) == {s.qid for s in train_samples}
    # a cached score is returned as is (a changed value proves nothing was recomputed) ...
    saved = json.loads(cache.read_text())
    q0 = next(iter(saved["scores"]))
    c0 = next(iter(saved["scores"][q0]))
    saved["scores"][q0][c0] = 0.123
    cache.write_text(json.dumps(saved))
    assert stage1_scores_with_model(lambda: model, proc, train_samples, cache=cache, model_key="m1")[q0][c0] == 0.123
    # ... without loading the model at all when every question is cached ...
    def no_load():
        raise AssertionError("model loaded although every score was cached")

    assert stage1_scores_with_model(no_load, proc, train_samples, cache=cache, model_key="m1")[q0][c0] == 0.123
    # ... but only for the same model
    assert stage1_scores_with_model(lambda: model, proc, train_samples, cache=cache, model_key="m2")[q0][c0] != 0.123
    # an interrupted scoring by several processes resumes from its shard files, which end merged into the cache
    resumed = tmp_path / "r.json"
    (tmp_path / "r.shard1-of-2.json").write_text(json.dumps({"model": "m1", "scores": {q0: {c0: 0.456}}}))
    got = stage1_scores_with_model(lambda: model, proc, train_samples, cache=resumed, model_key="m1")
    assert got[q0][c0] == 0.456 and set(got) == {s.qid for s in train_samples}
    assert json.loads(resumed.read_text())["scores"][q0][c0] == 0.456
    assert not list(tmp_path.glob("r.shard*"))
    # the stage-1 prompt layout reaches the scorer (another layout, another prompt, other scores)
    plain = stage1_scores_with_model(lambda: model, proc, train_samples[:2], layout="plain")
    default = stage1_scores_with_model(lambda: model, proc, train_samples[:2])
    assert plain.keys() == default.keys() and plain != default


def test_rerun_into_a_run_folder_redoes_a_warmup_made_for_other_settings(stage1_run, tmp_path):
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg1, _, _ = stage1_run
    base = [f"data.path={cfg1.data.path}", f"output_dir={tmp_path / 'run'}", "grpo.max_steps=1",
            "grpo.save_steps=100", "warmup.steps=2"]
    first = train(load_train_config(ROOT / "configs/stage1_tiny.yaml", base), stage=1)
    info = tmp_path / "run" / "warmup" / "warmup.json"
    assert first.warmup["key"]["steps"] == 2 and json.loads(info.read_text())["key"] == first.warmup["key"]
    stamp = info.stat().st_mtime_ns
    # label-balanced steps only reorder the RL prompts (TRL's shuffle off): the warm-up is still the same setup
    with pytest.raises(ValueError, match="already holds a training run.*--overwrite"):
        train(load_train_config(ROOT / "configs/stage1_tiny.yaml", base), stage=1)  # never clobbered silently
    same = train(load_train_config(ROOT / "configs/stage1_tiny.yaml", [*base, "data.balanced_steps=true"]), stage=1,
                 overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "result.json").is_file() and (aside[0] / "log.jsonl").is_file()
    new_steps = [json.loads(x).get("step") for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
                 if "train_runtime" not in x]
    assert new_steps == [1]  # the new log is not appended to the old one
    assert info.stat().st_mtime_ns == stamp and same.warmup == first.warmup  # same setup: reused
    assert same.global_step == 1
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["balanced_steps"] is True
    other = train(load_train_config(ROOT / "configs/stage1_tiny.yaml", [*base, "warmup.steps=3"]), stage=1,
                  overwrite=True)
    assert other.warmup["key"]["steps"] == 3 and json.loads(info.read_text())["key"]["steps"] == 3  # redone


def test_plot_training_writes_png(stage1_run, tmp_path):
    from mmrag_rft.training.plot import plot_training

    _, res, _ = stage1_run
    png = plot_training(res.output_dir, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage1_tiny_vlm_with_pixels(tmp_path):
    """The tiny Qwen2-VL through its processor: PIL images in the `images` column reach TRL's generation."""
    from mmrag_rft.data.loaders import demo_corpus_dir
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    imgs = sorted(p for p in (demo_corpus_dir() / "images").iterdir() if p.suffix in (".jpg", ".png"))[:3]
    rows = []
    for q in range(4):
        cands = [Candidate(id=f"q{q}-i{i}", modality="image", title=f"picture {i}", image_path=str(imgs[i]))
                 for i in range(3)]
        rows.append(Sample(qid=f"v{q}", question=f"what is shown {q}?", answers=["x"], candidates=cands,
                           gold_ids=[f"q{q}-i{q % 3}"]).to_dict())
    data = tmp_path / "v.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml",
                            ["model.path=tiny-vlm", f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                             "grpo.save_steps=5", "warmup.enabled=false"])
    res = train(cfg, stage=1)
    assert res.global_step == 2
    assert "vision-language" in res.metrics["share_prompt"]  # TRL's own per-row passes for pixels
    steps = [json.loads(x) for x in Path(res.log_path).read_text().splitlines() if "train_runtime" not in x]
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert (Path(res.merged_dir) / "preprocessor_config.json").is_file() or \
        (Path(res.merged_dir) / "processor_config.json").is_file()


def test_a_finished_run_exports_as_the_shipped_model_kind(stage1_run, tmp_path):
    """`mmrag train export` (the recipe's last step): adapter + manifest + card, loadable as a model spec whose
    settings reach the pipeline config."""
    from typer.testing import CliRunner

    from mmrag_rft.cli import app
    from mmrag_rft.models.loading import load_backend, model_settings
    from mmrag_rft.pipeline import pipeline_config

    _, res, _ = stage1_run
    op = tmp_path / "op.json"
    op.write_text(json.dumps({"chosen_fused_point": {"pipeline_settings": {"filter.threshold": 0.0,
                                                                           "filter.top_k": 9}}}))
    dest = tmp_path / "shipped"
    r = CliRunner().invoke(app, ["train", "export", res.output_dir, "--to", str(dest), "--base", "tiny-lm",
                                 "--operating-point", str(op), "--name", "tiny-stage1", "--command", "test"])
    assert r.exit_code == 0, r.output
    card = (dest / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "captions stand in for pixels" in card
    s = model_settings(str(dest))
    assert s["stage"] == 1 and s["prompt"]["think"] is stage1_run[0].data.think and s["training"]["steps"] == 2
    cfg = pipeline_config(str(dest))
    assert (cfg.filter.threshold, cfg.filter.top_k) == (0.0, 9)
    want = load_backend(res.output_dir)
    got = load_backend(str(dest))
    from mmrag_rft.data.schema import Candidate
    from mmrag_rft.prompts import stage1_prompt

    p = [stage1_prompt("q?", Candidate(id="a", modality="text", text="some passage"), style="score")]
    assert got.score_yes_no(p) == pytest.approx(want.score_yes_no(p), abs=1e-4)
    assert s["name"] == "tiny-stage1"
    r = CliRunner().invoke(app, ["train", "export", res.output_dir, "--to", str(tmp_path / "unnamed"), "--base",
                                 "tiny-lm"])
    assert r.exit_code == 0, r.output  # unnamed, a user's export is named after its run, not after the shipped model
    assert model_settings(str(tmp_path / "unnamed"))["name"] == Path(res.output_dir).resolve().name
    bad = CliRunner().invoke(app, ["train", "export", str(tmp_path), "--to", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a finished training run" in bad.output


# Only what a CPU cannot have (bf16, vLLM, a GPU-sized model) and what makes it quick changes; every other key of
# the paper-scale files runs as written (G=8, beta, LoRA r64 on all projections, max_pixels, gradient
# checkpointing, accumulation, cosine schedule, strict format reward).
PAPER_SCALE_CPU = ["model.path=tiny-vlm25", "model.dtype=float32", "grpo.bf16=false", "grpo.use_vllm=false",
                   "grpo.max_steps=2", "grpo.max_completion_length=12", "grpo.save_steps=2"]


def _demo_pools(tmp: Path, n_questions: int = 4) -> Path:
    """Demo questions, each over the whole demo corpus: images with real pixels beside text and tables (a log-prob
    chunk without any image is what TRL's VLM path once failed on)."""
    from mmrag_rft.data.jsonl import load_corpus, load_samples_jsonl
    from mmrag_rft.data.loaders import demo_corpus_dir

    pool = [c.to_dict() for c in load_corpus(demo_corpus_dir() / "corpus.jsonl")]
    rows = [{**s.to_dict(), "candidates": pool}
            for s in list(load_samples_jsonl(demo_corpus_dir() / "questions.jsonl"))[:n_questions]]
    p = tmp / "paper.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_paper_scale_configs_train_both_stages_on_a_tiny_qwen25_vl(tmp_path):
    """configs/stage{1,2}_qwen2.5-vl-3b.yaml on Qwen2_5_VLForConditionalGeneration (windowed vision attention,
    its own rope index), pixels through the vision tower, stage 2 from the stage-1 run; then the pipeline."""
    from mmrag_rft.models.loading import load_backend
    from mmrag_rft.pipeline import Pipeline, PipelineConfig
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    data = _demo_pools(tmp_path)
    runs = {}
    for stage in (1, 2):
        cfg = load_train_config(ROOT / f"configs/stage{stage}_qwen2.5-vl-3b.yaml",
                                PAPER_SCALE_CPU + [f"data.path={data}", f"output_dir={tmp_path / f's{stage}'}"])
        assert cfg.lora.r == 64 and cfg.grpo.num_generations == 8 and cfg.model.max_pixels == 401408
        res = train(cfg, stage=stage, init=str(runs[1].output_dir) if stage == 2 else None)
        assert res.global_step == 2
        steps = [json.loads(x) for x in Path(res.log_path).read_text().splitlines() if "train_runtime" not in x]
        assert steps and all(math.isfinite(r["loss"]) for r in steps)
        merged = json.loads((Path(res.merged_dir) / "config.json").read_text())
        assert merged["model_type"] == "qwen2_5_vl"
        runs[stage] = res
    backend = load_backend(str(runs[2].output_dir))
    assert backend.supports_images
    s = Sample.from_dict(json.loads(data.read_text().splitlines()[0]))
    r = Pipeline(backend, config=PipelineConfig(top_n=9, stage2_max_new_tokens=8)).ask(s.question,
                                                                                       candidates=s.candidates)
    assert len(r.judgements) == 9 and all(0.0 <= j.score <= 1.0 for j in r.judgements)


def test_log_probs_of_a_chunk_without_images_drop_the_image_inputs():
    """The chunk split `_logps_chunk_by_chunk` uses: only Qwen-style inputs with an imageless chunk take it."""
    import torch

    from mmrag_rft.training.shared_prompt import _has_imageless_chunk

    grid = torch.tensor([[1, 2, 2], [1, 2, 2]])
    mm = {"pixel_values": torch.zeros(8, 3), "image_grid_thw": grid, "num_images": [1, 1, 0, 0]}
    assert _has_imageless_chunk(mm, rows=4, batch_size=2)  # rows 2-3: no image
    assert not _has_imageless_chunk({**mm, "num_images": [1, 0, 1, 0]}, rows=4, batch_size=2)
    assert not _has_imageless_chunk({"num_images": [0, 0]}, rows=2, batch_size=1)  # a text-only batch: no pixels
