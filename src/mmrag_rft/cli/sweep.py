"""`mmrag filter-sweep`: the coarse filter's operating point, chosen on a run's training questions and measured,
fixed, on its held-out ones (evaluation/filter_sweep.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import MODEL_HELP, fail, out


def register(app: typer.Typer) -> None:
    @app.command("filter-sweep")
    def filter_sweep(
        path: Path = typer.Argument(..., help="Benchmark file with candidate pools, e.g. "
                                              "../shared/data/webqa/val_records.json.gz."),
        dataset: str = typer.Option("webqa", "--dataset", help="A registered dataset (data/datasets.py)."),
        model: str = typer.Option("default", help=MODEL_HELP),
        heldout: Optional[str] = typer.Option(None, "--heldout", help="A training run or model folder, or a model "
                                                                       "spec: keep one side of its question split."),
        side: str = typer.Option("val", "--side", help="With --heldout: val (never trained on) or train (to choose "
                                                       "an operating point)."),
        limit: int = typer.Option(30, "--limit", min=0, help="Questions (0 = all)."),
        choose: str = typer.Option("k", "--choose", help="What chosen_fused_point picks: k (top-k at "
                                                         "--retrieval-weight) or weight_and_k."),
        operating_point: Optional[Path] = typer.Option(None, "--operating-point",
                                                       help="A sweep JSON (of --side train): measure its "
                                                            "chosen_fused_point, fixed, on these questions."),
        out_path: Path = typer.Option(Path("out/filter_sweep.json"), "--out", help="Result JSON."),
        plot_path: Optional[Path] = typer.Option(None, "--plot", help="PNG (default: beside --out)."),
        cache: Optional[Path] = typer.Option(None, "--cache", help="Stage-1 score cache JSONL (default: beside "
                                                                   "--out, one per model)."),
        layout: Optional[str] = typer.Option(None, "--layout", help="Stage-1 prompt layout (default: the one the "
                                                                    "model was trained with)."),
        rrf_k: int = typer.Option(60, "--rrf-k", min=1, help="Fused order: reciprocal-rank fusion constant."),
        retrieval_weight: float = typer.Option(1.0, "--retrieval-weight", help="Fused order: the retriever's "
                                                                               "weight."),
    ) -> None:
        """The coarse filter's trade-off: candidates removed and stage-2 tokens saved against gold recall kept,
        for stage 1's order, the retriever's and their fusion; JSON, a table and a PNG."""
        from mmrag_rft.cli._common import check_dataset, load_backend_or_fail, progress_bar
        from mmrag_rft.config import atomic_write_text
        from mmrag_rft.data.loaders import load_samples
        from mmrag_rft.evaluation import filter_sweep as fs
        from mmrag_rft.evaluation.evaluate import RunMismatch, split_qids
        from mmrag_rft.models.loading import trained_layout
        from mmrag_rft.prompts import STAGE1_LAYOUTS

        check_dataset(dataset)
        if side not in ("val", "train"):
            raise fail(f"--side must be val or train, got {side!r}")
        if side == "train" and not heldout:
            raise fail("--side train needs --heldout RUN (the training run whose split.json names the sides)")
        if choose not in ("k", "weight_and_k"):
            raise fail(f"--choose must be k or weight_and_k, got {choose!r}")
        if not path.exists():
            raise fail(f"{path}: file not found")
        try:
            layout = layout or trained_layout(model) or "default"
            fixed = fs.read_operating_point(operating_point) if operating_point else None
            keep = split_qids(heldout, side) if heldout else None
            samples = [s for s in load_samples(str(path))
                       if keep is None or s.qid in keep][: limit or None]
        except (ValueError, RunMismatch, FileNotFoundError) as e:  # DataError is a ValueError
            raise fail(str(e)) from None
        if layout not in STAGE1_LAYOUTS:
            raise fail(f"--layout must be one of {', '.join(STAGE1_LAYOUTS)}, got {layout!r}")
        if not samples:
            raise fail(f"{path}: no questions{' on the ' + side + ' side of ' + heldout if heldout else ''}")
        backend = load_backend_or_fail(model)
        model_id = getattr(backend, "model_id", model)
        name = fs.model_key(model, model_id) + ("" if layout == "default" else f"-{layout}")
        cache = cache or out_path.parent / "filter_sweep_scores" / f"{name}.jsonl"
        with progress_bar() as bar:
            res, qs = fs.run_filter_sweep(
                samples, backend, cache=cache, layout=layout, rrf_k=rrf_k, retrieval_weight=retrieval_weight,
                choose=choose, fixed=fixed, progress=bar,
                chosen_on={"side": side if heldout else "all", "run": heldout, "model": model})
        plot_path = plot_path or out_path.with_suffix(".png")
        title = f"Coarse filter on {dataset} ({len(qs)} questions, {model_id}; captions stand in for pixels)"
        fs.plot_curves(res, plot_path, title)
        doc = {"benchmark": "filter_sweep", "command": " ".join(["mmrag", *sys.argv[1:]]), "model": model_id,
               "model_spec": model, "note": "captions stand in for pixels", "data": str(path), "layout": layout,
               "heldout_of": heldout, "side": side if heldout else None, **res, "plot": str(plot_path)}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path, json.dumps(doc, indent=2) + "\n")
        from rich.table import Table

        t = Table(title=title)
        for h in ("operating point", "threshold", "top-k", "removed", "tokens saved", "gold recall"):
            t.add_column(h)
        for r in fs.summary_rows(res, qs):
            t.add_row(*[f"{x:.3f}" if isinstance(x, float) else str(x) for x in r])
        out.print(t)
        chosen = res["chosen_fused_point"]
        if chosen:
            out.print(f"chosen fused point on these questions: retrieval weight {chosen['retrieval_weight']:g}, "
                      f"top-k {chosen['top_k']} ({chosen['tokens_saved']:.3f} saved at recall "
                      f"{chosen['gold_recall']:.3f})")
        if res["fixed_operating_point"]:
            fp = res["fixed_operating_point"]
            out.print(f"fixed point from {operating_point}: {fp['tokens_saved']:.3f} saved at recall "
                      f"{fp['gold_recall']:.3f}; goal met: {res['goal_met_at_fixed_operating_point']}")
        out.print(f"wrote {out_path} and {plot_path}")
