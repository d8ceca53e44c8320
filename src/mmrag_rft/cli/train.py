"""`mmrag train stage1|stage2` (GRPO on TRL) and `mmrag plot-training RUN_DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import cell, console, fail, out

train_app = typer.Typer(help="Two-stage reinforcement fine-tuning (GRPO on TRL).", no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", help="Training YAML (see configs/).")
_SET = typer.Option(None, "--set", help="Override a config key, e.g. --set grpo.max_steps=10 (repeatable).")
_RESUME = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Start over in an output folder that holds a run (the old run is "
                                                     "moved aside to NAME.old-TIME).")
_OUTPUT = typer.Option(None, "--output", "-o", help="Output folder (overrides output_dir).")
_DRY = typer.Option(False, "--dry-run", help="Check the config, accelerate file and model (no weights loaded) and "
                                             "print the plan; train nothing.")
_ACC = typer.Option(None, "--accelerate-config", help="The accelerate config the run will be launched with (for "
                                                      "--dry-run: processes, DeepSpeed stage, precision).")
_PROCS = typer.Option(None, "--num-processes", min=1, help="Processes the run will use (for --dry-run; default: "
                                                           "the accelerate config's, else 1).")


def _dry_run(stage: int, cfg, init: str | None, accelerate_config: Path | None, num_processes: int | None) -> None:
    from rich.table import Table

    from mmrag_rft.training.dry_run import dry_run

    try:
        r = dry_run(cfg, stage=stage, accelerate_config=accelerate_config, num_processes=num_processes, init=init)
    except ValueError as e:
        raise fail(str(e)) from None
    t = Table(title=f"stage {stage} plan (dry run: nothing trained, no weights loaded)", show_header=False)
    for k, v in r.plan.items():
        t.add_row(k, cell(v))
    out.print(t)
    from rich.markup import escape

    for n in r.notes:
        console.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)
    for p in r.problems:
        console.print(f"[bold red]error:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if r.problems:
        raise typer.Exit(2)
    console.print("[green]dry run ok[/]: nothing found that would stop this run before its first step")


def _run(stage: int, config: Path, overrides: list[str] | None, resume: bool, output: Path | None,
         init: str | None, overwrite: bool = False, dry: bool = False, accelerate_config: Path | None = None,
         num_processes: int | None = None) -> None:
    from mmrag_rft.config import ConfigError
    from mmrag_rft.data.schema import DataError
    from mmrag_rft.training.config import load_train_config

    ovs = list(overrides or [])
    if output is not None:
        ovs.append(f"output_dir={output}")
    try:
        cfg = load_train_config(config, ovs)
    except ConfigError as e:
        raise fail(str(e)) from None
    if init is not None and not Path(init).exists():
        raise fail(f"--init {init}: no such checkpoint folder")
    if dry:
        return _dry_run(stage, cfg, init, accelerate_config, num_processes)
    from mmrag_rft.training.grpo import train

    try:
        res = train(cfg, stage=stage, init=init, resume=resume, overwrite=overwrite)
    except (DataError, FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    except OSError as e:  # a read-only or full output folder
        raise fail(f"{e.filename or cfg.output_dir}: {e.strerror or e}") from None
    out.print_json(json.dumps(res.to_dict(), default=str))
    console.print(f"stage {stage}: {res.global_step} steps; merged model in {res.merged_dir}; "
                  f"log {res.log_path} (draw it with `mmrag plot-training {res.output_dir}`)")
    if res.stopped_early:
        console.print(f"[yellow]stopped early at {res.stopped_early}[/yellow]; the checkpoints before it are in "
                      f"{res.output_dir} (stop_after_zero_std_steps: null never stops)")


@train_app.command("stage1")
def stage1(config: Path = _CONFIG, overrides: Optional[list[str]] = _SET, resume: bool = _RESUME,
           output: Optional[Path] = _OUTPUT,
           init: Optional[str] = typer.Option(None, "--init", help="Start from this model/run instead of model.path."),
           overwrite: bool = _OVERWRITE, dry: bool = _DRY, accelerate_config: Optional[Path] = _ACC,
           num_processes: Optional[int] = _PROCS) -> None:
    """Stage 1: rule-based GRPO on point-wise yes/no relevance (format + accuracy rewards)."""
    _run(1, config, overrides, resume, output, init, overwrite, dry, accelerate_config, num_processes)


@train_app.command("stage2")
def stage2(config: Path = _CONFIG,
           init: Optional[str] = typer.Option(None, "--init", help="The stage-1 run folder (or its merged/ model)."),
           overrides: Optional[list[str]] = _SET, resume: bool = _RESUME, output: Optional[Path] = _OUTPUT,
           overwrite: bool = _OVERWRITE, dry: bool = _DRY, accelerate_config: Optional[Path] = _ACC,
           num_processes: Optional[int] = _PROCS) -> None:
    """Stage 2: reasoning GRPO on list-wise ranking + answer (format + ranking + answer rewards)."""
    _run(2, config, overrides, resume, output, init, overwrite, dry, accelerate_config, num_processes)


def _run_models(run: Path, cfg) -> list[tuple[str, str]]:
    """(label, spec): the run's model.path (a run started with --init: name that model with --model), and its latest
    model (merged/ when finished, else the last checkpoint)."""
    from mmrag_rft.training.checkpoints import checkpoints

    start = cfg.model.path
    latest = run / "merged" if (run / "merged" / "config.json").is_file() else (checkpoints(run) or [None])[-1]
    if latest is None:
        raise fail(f"{run}: no merged/ model and no checkpoint yet")
    return [("start", str(start)), (Path(latest).name, str(latest))]


@train_app.command("eval")
def eval_run(run_dir: Path = typer.Argument(..., help="A training run folder (config.yaml, split.json)."),
             stage: Optional[int] = typer.Option(None, "--stage", min=1, max=2,
                                                 help="The run's stage (default: its result.json's)."),
             models: Optional[list[str]] = typer.Option(None, "--model", help="Models to compare (repeatable; default: "
                                                                              "the run's start model and its latest)."),
             limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N held-out questions."),
             out_path: Optional[Path] = typer.Option(None, "--out", help="Result JSON (default RUN/heldout_eval.json)."),
             orders: int = typer.Option(1, "--orders", min=1, help="Stage 2: each question shown in this many distinct "
                                                                   "candidate orders (2+ tells reading from position).")
             ) -> None:
    """Held-out evaluation of a run on the questions its split never trained on: stage 1's AUC / accuracy of P(yes),
    stage 2's format, NDCG, first pick against chance and answer accuracy, next to model-free references."""
    from rich.table import Table

    from mmrag_rft.config import ConfigError, atomic_write_text
    from mmrag_rft.cli._common import load_backend_or_fail
    from mmrag_rft.models.loading import trained_layout
    from mmrag_rft.training import heldout as ho
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import load_split

    try:
        cfg = load_train_config(run_dir / "config.yaml")
        split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    except (ConfigError, OSError, ValueError) as e:
        raise fail(f"{run_dir}: not a training run folder ({e})") from None
    if stage is None:
        try:
            stage = int(json.loads((run_dir / "result.json").read_text(encoding="utf-8"))["stage"])
        except (OSError, ValueError, KeyError):
            raise fail(f"{run_dir}: unfinished run (no result.json): pass --stage 1 or 2") from None
    _, val = load_split(cfg)
    keep = set(split["val"])
    val = [s for s in val if s.qid in keep][:limit]
    specs = [(m, m) for m in models] if models else _run_models(run_dir, cfg)
    results: dict[str, object] = {}
    if stage == 1:
        hard, mixed = ho.stage1_pairs(val)
        for label, spec in specs:
            backend = load_backend_or_fail(spec)  # a bad --model fails here, in one line
            with console.status(f"{label}: {spec} on {len(hard)} held-out pairs ..."):
                results[label] = {"model": spec, **ho.evaluate_stage1(
                    backend, hard, mixed, layout=trained_layout(spec) or cfg.data.layout)}
        rows = [[label, r["score_mode"]["auc"], r["score_mode_mixed"]["auc"], r["score_mode"]["accuracy"],
                 r["reason_mode"]["format_reward"]] for label, r in results.items()]  # type: ignore[index]
        header = ["model", "AUC", "AUC (mixed negatives)", "accuracy @0.5", "reason format"]
        refs: dict[str, float] = {}
    else:
        prompts = ho.stage2_prompts(val, num_candidates=cfg.data.num_candidates, max_chars=cfg.data.max_chars,
                                    orders=orders, think=cfg.data.think)
        refs = ho.stage2_baselines(prompts)
        for label, spec in specs:
            backend = load_backend_or_fail(spec)
            with console.status(f"{label}: {spec} on {len(prompts)} held-out questions ..."):
                r = ho.evaluate_stage2(backend, prompts, max_new_tokens=cfg.grpo.max_completion_length,
                                       ranking_metric=cfg.rewards.ranking_metric, samples=val,
                                       max_chars=cfg.data.max_chars)
                results[label] = {"model": spec, **r}
        rows = [[label, r["format_reward"], r["ndcg"], r["selection"]["first_is_gold"],
                 r["selection"]["first_is_gold_chance"], r["selection"]["distinct_lists"],
                 r["likelihood"]["first_is_gold"], r["likelihood"]["gold_first_every_rotation"], r["answer_acc"]]
                for label, r in results.items()]  # type: ignore[index]
        header = ["model", "format", "NDCG", "first pick gold", "chance", "distinct lists",
                  "first pick gold (likelihood)", "gold first, every rotation (likelihood)", "answer acc"]
        if orders > 1:  # reading or position: the same first pick, and gold first, in every order of a question
            header += ["same first pick, every order", "gold first, every order"]
            rows = [[*row, r["selection"].get("same_first_pick_every_order", "-"),  # type: ignore[index]
                     r["selection"].get("gold_first_every_order", "-")]  # type: ignore[index]
                    for row, r in zip(rows, results.values())]
    doc = {"run": str(run_dir), "stage": stage, "heldout_questions": len(val), "note": "captions stand in for pixels",
           **({"orders": orders} if stage == 2 else {}),
           "references": refs, "models": results}
    out_path = out_path or run_dir / "heldout_eval.json"
    atomic_write_text(out_path, json.dumps(doc, indent=2, default=str) + "\n")
    t = Table(title=f"stage {stage}, {len(val)} held-out questions of {run_dir} (captions stand in for pixels)")
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[f"{x:.3f}" if isinstance(x, float) else str(x) for x in r])
    out.print(t)
    if refs:
        out.print("model-free references: " + ", ".join(f"{k} {v:.3f}" for k, v in refs.items()))
    out.print(f"wrote {out_path}")


@train_app.command("export")
def export(run_dir: Path = typer.Argument(..., help="A finished training run folder (merged/, config.yaml)."),
           to: Path = typer.Option(..., "--to", help="Adapter folder to write (the package ships "
                                                        "src/mmrag_rft/trained/stage1)."),
           name: Optional[str] = typer.Option(None, help="The model's name in results and its card (default: the "
                                                         "run folder's name)."),
           operating_point: Optional[Path] = typer.Option(
               None, help="filter_sweep JSON of the run's *training* questions: its chosen_fused_point becomes the "
                          "filter settings the model ships with."),
           heldout: Optional[Path] = typer.Option(None, help="filter_sweep JSON of the held-out questions at that "
                                                             "point: its numbers go into the model card."),
           pipeline_set: Optional[list[str]] = typer.Option(
               None, "--pipeline-set", help="A pipeline setting the model ships with, KEY=VALUE (repeatable), e.g. "
                                             "sources=filter for a model whose stage-2 ranking is not yet trained."),
           base: Optional[str] = typer.Option(None, help="The untrained model the run started from (a model spec; "
                                                            "default: the run's model.path); the adapter is the "
                                                            "difference to it."),
           command: str = typer.Option("", help="The command that trained the run (recorded in the card)."),
           pipeline_note: str = typer.Option("", help="Why the shipped pipeline settings are what they are (card)."),
           commit: str = typer.Option("", help="The commit of the code that trained it (recorded in the card)."),
           dtype: str = typer.Option("float32", help="Precision the adapter's weights are stored in: float32, "
                                                     "float16 (half the size) or bfloat16."),
           ) -> None:
    """Export a run as a small LoRA adapter on the untrained base + manifest + model card (what the package ships)."""
    from mmrag_rft.models.export import export_adapter, manifest_from_run, model_card

    if not (run_dir / "merged" / "config.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise fail(f"{run_dir}: not a finished training run (needs merged/ and config.yaml)")

    def read(p: Optional[Path], what: str) -> dict:
        if p is None:
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise fail(f"--{what} {p}: {e}") from None

    chosen = read(operating_point, "operating-point").get("chosen_fused_point") or {}
    if operating_point is not None and "pipeline_settings" not in chosen:
        raise fail(f"--operating-point {operating_point}: no chosen_fused_point.pipeline_settings (run filter_sweep "
                   "with --side train)")
    held = read(heldout, "heldout")
    fixed = held.get("fixed_operating_point") or {}
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in {
        "questions": held.get("questions"), "candidates": held.get("candidates"), "gold": held.get("gold"),
        "gold_recall_at_operating_point": fixed.get("gold_recall"),
        "stage2_tokens_saved_at_operating_point": fixed.get("tokens_saved"),
        "candidates_removed_at_operating_point": fixed.get("removed"),
        # the simpler alternatives, same questions, same run: each order's best cut at >= 95% gold recall
        "retriever_alone_tokens_saved_at_recall>=0.95": (held.get("best_retriever_at_recall>=0.95") or {}).get(
            "tokens_saved"),
        "stage1_alone_tokens_saved_at_recall>=0.95": (held.get("best_stage1_at_recall>=0.95") or {}).get(
            "tokens_saved"),
        "mean_p_yes_gold": (held.get("mean_p_yes") or {}).get("gold"),
        "mean_p_yes_negatives": (held.get("mean_p_yes") or {}).get("negatives")}.items() if v is not None}
    import yaml

    from mmrag_rft.config import ConfigError
    from mmrag_rft.pipeline import PipelineConfig

    settings = dict(chosen.get("pipeline_settings") or {})
    for kv in pipeline_set or []:
        if "=" not in kv:
            raise fail(f"--pipeline-set {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        settings[k.strip()] = yaml.safe_load(v)
    try:
        from mmrag_rft.config import load

        load(PipelineConfig, None, [f"{k}={json.dumps(v)}" for k, v in settings.items()])  # valid keys and values
    except ConfigError as e:
        raise fail(f"pipeline settings: {e}") from None
    try:
        manifest = manifest_from_run(run_dir, name=name or run_dir.resolve().name, operating_point=settings,
                                     heldout=summary, command=command, commit=commit)
        manifest["base"] = base or manifest["base"]
        if pipeline_note:
            manifest["pipeline_note"] = pipeline_note
        card = model_card(manifest)
        with console.status(f"factoring {run_dir}/merged into a LoRA adapter ..."):
            split = json.loads((run_dir / "split.json").read_text()) if (run_dir / "split.json").is_file() else None
            info = export_adapter(run_dir / "merged", to, base_spec=manifest["base"], manifest=manifest, card=card,
                                  split=split, dtype=dtype)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    out.print_json(json.dumps(info))
    console.print(f"exported {run_dir} to {to}: {info['size_bytes'] / 1e6:.1f} MB, {info['modules']} modules, "
                  f"largest logit difference {info['probe_max_logit_diff']:.2e}")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")

    @app.command("plot-training")
    def plot_training_cmd(run_dir: Path = typer.Argument(..., help="A training run folder (with log.jsonl)."),
                          output: Optional[Path] = typer.Option(None, "--output", "-o", help="PNG path.")) -> None:
        """Draw reward components, KL, completion length and zero-variance share from RUN_DIR/log.jsonl."""
        from mmrag_rft.training.plot import plot_training

        if not (run_dir / "log.jsonl").is_file() and not run_dir.is_file():
            raise fail(f"{run_dir}: no log.jsonl here")
        try:
            dest = plot_training(run_dir, output)
        except ValueError as e:
            raise fail(str(e)) from None
        out.print(str(dest))
