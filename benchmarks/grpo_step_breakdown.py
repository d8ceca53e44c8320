"""GRPO step breakdown (generation, reward, reference/old log-probs, loss forward, backward, optimizer) per stage.

Runs the project's own trainer (`mmrag_rft.training.grpo.train`, TRL GRPOTrainer) on the CPU default configs
(configs/stage1_cpu.yaml, configs/stage2_cpu.yaml) for a few steps on WebQA (captions stand in for pixels), with
timers wrapped around the trainer's phases for the duration of the run only:
- generation        GRPOTrainer._generate (tokenise prompts, model.generate, decode)
- reward            GRPOTrainer._calculate_rewards (all reward functions)
- ref/old log-probs GRPOTrainer._get_per_token_logps_and_entropies called while scoring completions
- loss forward      GRPOTrainer.compute_loss
- backward          Accelerator.backward
- optimizer + rest  the remainder of the step (clip, optimizer, scheduler, logging)
and every `generate` call counted with its batch size (is the group generated in one batched call?).
The format warm-up is switched off and checkpoints are not saved inside the timed steps.

    .venv/bin/python benchmarks/grpo_step_breakdown.py                  # 3 steps per stage
    .venv/bin/python benchmarks/grpo_step_breakdown.py --steps 5 --stages 1
    .venv/bin/python benchmarks/grpo_step_breakdown.py --stages 1 --config configs/stage1_cpu_nothink_top8.yaml \
        --out benchmarks/results/grpo_steps_nothink_top8.json      # another config (one stage at a time)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

PHASES = ["generation", "reward", "ref_old_logprobs", "loss_forward", "backward", "optimizer_and_rest"]


class StepTimes:
    """Per-step phase seconds, filled by the wrappers and the step callback."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.cur: dict[str, Any] | None = None
        self.in_scoring = 0
        self.t0 = 0.0
        self.trainer: Any = None  # the run's trainer, recorded by the wrapped __init__

    def begin(self) -> None:
        self.cur = {p: 0.0 for p in PHASES[:-1]} | {"generate_calls": 0, "generate_batch_sizes": []}
        self.t0 = time.perf_counter()

    def end(self) -> None:
        if self.cur is None:
            return
        total = time.perf_counter() - self.t0
        self.cur["step_s"] = total
        self.cur["optimizer_and_rest"] = max(0.0, total - sum(self.cur[p] for p in PHASES[:-1]))
        self.steps.append(self.cur)
        self.cur = None

    def add(self, phase: str, s: float) -> None:
        if self.cur is not None:
            self.cur[phase] += s


def _timed(times: StepTimes, phase: str | None, fn: Any, *, scoring: bool = False) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        ph = phase
        if ph is None:  # log-prob passes: only those made while scoring completions (ref/old), not the loss's own
            if not times.in_scoring:
                return fn(*a, **kw)
            ph = "ref_old_logprobs"
        if scoring:
            times.in_scoring += 1
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            if scoring:
                times.in_scoring -= 1
            if ph:
                times.add(ph, time.perf_counter() - t0)
    return wrapper


@contextlib.contextmanager
def instrumented(times: StepTimes) -> Iterator[Any]:
    """Wrap the phases on the classes for this run only; always restored."""
    from accelerate import Accelerator
    from transformers import TrainerCallback
    from transformers.generation.utils import GenerationMixin
    from trl import GRPOTrainer

    from mmrag_rft.training.shared_prompt import SharedPromptGRPOTrainer

    saved: list[tuple[Any, str, Any]] = []

    def wrap(cls: Any, name: str, new: Any) -> None:
        saved.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, new)

    def wrap_entry(name: str, phase: str | None, **kw: Any) -> None:
        # the project's trainer is the one that runs: time its method where it overrides TRL's (only there, so
        # a call through to TRL's is not counted twice), TRL's otherwise
        cls = SharedPromptGRPOTrainer if name in SharedPromptGRPOTrainer.__dict__ else GRPOTrainer
        wrap(cls, name, _timed(times, phase, cls.__dict__[name], **kw))

    wrap_entry("_generate", "generation")
    wrap_entry("_calculate_rewards", "reward")
    wrap_entry("_get_per_token_logps_and_entropies", None)
    wrap_entry("_generate_and_score_completions", "", scoring=True)
    wrap_entry("compute_loss", "loss_forward")
    init = SharedPromptGRPOTrainer.__init__

    @functools.wraps(init)
    def recording_init(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        times.trainer = self

    wrap(SharedPromptGRPOTrainer, "__init__", recording_init)
    wrap(Accelerator, "backward", _timed(times, "backward", Accelerator.backward))
    orig_generate = GenerationMixin.generate

    @functools.wraps(orig_generate)
    def counted_generate(self: Any, *a: Any, **kw: Any) -> Any:
        if times.cur is not None:
            ids = kw.get("input_ids", a[0] if a else None)
            times.cur["generate_calls"] += 1
            times.cur["generate_batch_sizes"].append(int(ids.shape[0]) if ids is not None else None)
        return orig_generate(self, *a, **kw)

    wrap(GenerationMixin, "generate", counted_generate)

    class StepCallback(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.end()

    try:
        yield StepCallback()
    finally:
        for cls, name, old in reversed(saved):
            setattr(cls, name, old)


def summarise(steps: list[dict[str, Any]], skip_first: bool) -> dict[str, Any]:
    use = steps[1:] if skip_first and len(steps) > 1 else steps
    total = sum(s["step_s"] for s in use)
    return {"steps_counted": len(use), "mean_step_s": total / len(use),
            "seconds": {p: sum(s[p] for s in use) for p in PHASES},
            "share": {p: sum(s[p] for s in use) / total for p in PHASES}}


def run_stage(stage: int, args: argparse.Namespace, tmp: Path, extra: list[str] | None = None,
              tag: str = "") -> dict[str, Any]:
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg_path = Path(args.config).resolve() if args.config else common.ROOT / f"configs/stage{stage}_cpu.yaml"
    overrides = [f"data.path={args.data}", f"data.limit={args.questions}", f"grpo.max_steps={args.steps}",
                 "warmup.enabled=false", f"grpo.save_steps={10 ** 6}", f"output_dir={tmp / f'stage{stage}{tag}'}"]
    if stage == 2:
        overrides.append(f"data.negatives={args.stage2_negatives}")
    overrides += args.overrides  # last, so an explicit --set wins
    overrides += extra or []
    cfg = load_train_config(cfg_path, overrides)
    times = StepTimes()
    t0 = time.perf_counter()
    with instrumented(times) as cb:
        res = train(cfg, stage=stage, callbacks=[cb])
    t = times.trainer
    wall = time.perf_counter() - t0
    g = cfg.grpo
    steps = times.steps
    batched = all(s["generate_calls"] == 1 and s["generate_batch_sizes"][0] == g.per_device_train_batch_size
                  for s in steps)
    return {
        "config": str(cfg_path.relative_to(common.ROOT)), "overrides": overrides,
        "num_generations": g.num_generations, "per_device_train_batch_size": g.per_device_train_batch_size,
        "prompts_per_step": g.per_device_train_batch_size // g.num_generations,
        "max_completion_length": g.max_completion_length, "beta": g.beta, "lora": cfg.lora.enabled,
        "lora_top_layers": cfg.lora.top_layers,
        "train_examples": res.train_examples, "wall_s_including_setup": wall,
        "steps": steps, "all_steps": summarise(steps, False), "after_first_step": summarise(steps, True),
        "generation_batched_across_group": batched,
        "generate_calls_per_step": [s["generate_calls"] for s in steps],
        "generate_batch_sizes": [s["generate_batch_sizes"] for s in steps],
        "share_prompt": t.share_prompt, "share_prompt_off_reason": t.share_prompt_off_reason,
        "shared_prompt_rows": dict(t.shared_prompt_stats),
        # what the trainer logged per step: with the same seed both arms of --share-prompt both sample the same
        # completions, so these agree when the shared passes compute what TRL's do
        "logged": [{k: row.get(k) for k in ("step", "reward", "kl", "loss", "entropy")}
                   for row in map(json.loads, Path(res.log_path).read_text().splitlines())],
    }


def compare_share_prompt(stage: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The same steps with TRL's per-row passes and with the prompt shared by its group, arms interleaved."""
    arms: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for rep in range(args.repeats):
        for arm in ("off", "on") if rep % 2 == 0 else ("on", "off"):
            arms[arm].append(run_stage(stage, args, tmp, [f"grpo.share_prompt={'true' if arm == 'on' else 'false'}"],
                                       tag=f"-{arm}{rep}"))

    def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
        steps = [s for r in runs for s in (r["steps"][1:] if len(r["steps"]) > 1 else r["steps"])]
        return summarise(steps, False)
    off, on = pooled(arms["off"]), pooled(arms["on"])
    speedup = {p: (off["seconds"][p] / on["seconds"][p] if on["seconds"][p] > 0 else None)
               for p in PHASES if p != "reward"}
    return {"repeats": args.repeats, "off": off, "on": on, "speedup_step": off["mean_step_s"] / on["mean_step_s"],
            "speedup_by_phase": speedup, "runs": arms,
            "logged_first_run": {arm: runs[0]["logged"] for arm, runs in arms.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per stage")
    ap.add_argument("--questions", type=int, default=20, help="WebQA questions read (train/val split inside)")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--stage2-negatives", default="retrieval", choices=["stage1", "retrieval", "pool"],
                    help="stage-2 negatives ('stage1' would first score every pool with the model: setup, not steps)")
    ap.add_argument("--config", default=None, help="training YAML instead of configs/stage{N}_cpu.yaml (one stage only)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override KEY=VALUE")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/grpo_steps.json)")
    ap.add_argument("--compare-share-prompt", action="store_true",
                    help="run each stage with grpo.share_prompt off and on (arms interleaved) and report the speed-up")
    ap.add_argument("--repeats", type=int, default=1, help="with --compare-share-prompt: runs per arm")
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    if args.config and "," in args.stages:
        ap.error("--config applies to one stage: give --stages 1 or --stages 2")
    common.set_threads(args.threads)

    stages = [int(s) for s in args.stages.split(",") if s.strip()]
    out: dict[str, Any] = {"note": common.CAPTION_NOTE, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="mmrag-grpo-bench-") as tmp:
        for st in stages:
            if args.compare_share_prompt:
                cmp = compare_share_prompt(st, args, Path(tmp))
                out.setdefault("share_prompt_comparison", {})[f"stage{st}"] = cmp
                out["stages"][f"stage{st}"] = cmp["runs"]["on"][0]  # the default (shared) for the breakdown
            else:
                out["stages"][f"stage{st}"] = run_stage(st, args, Path(tmp))
    targets = {}
    for name, r in out["stages"].items():
        share = r["after_first_step"]["share"]["reward"]
        targets[name] = {"reward_share": share, "reward_below_2pct": share < 0.02,
                         "generation_batched_across_group": r["generation_batched_across_group"]}
    out["targets"] = targets
    path = common.write_result("grpo_steps", out, args.out)

    rows = []
    for name, r in out["stages"].items():
        s = r["after_first_step"]
        rows.append([name, s["steps_counted"], s["mean_step_s"], *[f"{100 * s['share'][p]:.2f}%" for p in PHASES],
                     " ".join(f"{len(b)}x{'+'.join(map(str, b))}" for b in r["generate_batch_sizes"])])
    common.print_table(f"GRPO step breakdown, {args.config or 'CPU default configs'} (steps after the first; "
                       f"{common.CAPTION_NOTE})",
                       ["stage", "steps", "s/step", "generate", "reward", "ref/old logp", "loss fwd", "backward",
                        "optim+rest", "generate calls x rows"], rows)
    for name, t in targets.items():
        print(f"{name}: reward share {100 * t['reward_share']:.3f}% (target < 2%: {t['reward_below_2pct']}); "
              f"generation batched across the group: {t['generation_batched_across_group']}")
    for name, c in out.get("share_prompt_comparison", {}).items():
        common.print_table(
            f"{name}: TRL's per-row passes vs the prompt shared by its group ({c['repeats']} run(s) per arm, "
            f"interleaved; steps after the first of each run)",
            ["arm", "steps", "s/step", *[p for p in PHASES if p != "reward"]],
            [[arm, c[arm]["steps_counted"], c[arm]["mean_step_s"],
              *[f"{c[arm]['seconds'][p]:.1f}" for p in PHASES if p != "reward"]] for arm in ("off", "on")]
            + [["speed-up", "", f"{c['speedup_step']:.2f}x",
                *[f"{v:.2f}x" if v else "-" for p, v in c["speedup_by_phase"].items()]]])
        lo, ln = c["logged_first_run"]["off"], c["logged_first_run"]["on"]
        print(f"{name}: logged reward per step, off {[r['reward'] for r in lo]} / on {[r['reward'] for r in ln]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
