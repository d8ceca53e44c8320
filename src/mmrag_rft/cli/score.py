"""`mmrag score`: official WebQA / MMQA metrics for a predictions file against gold data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from mmrag_rft.cli._common import check_dataset, fail, out


def _fmt(x: Any, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * scale:.2f}" if isinstance(x, float) else str(x)


def print_tables(result: dict[str, Any], title: str) -> None:
    from rich.table import Table

    if result["dataset"] == "webqa":
        cols = [("n", "n", 1.0), ("QA-Acc", "qa_acc", 100.0)]
        if "retr_f1" in result["overall"]:
            cols += [("Retr P", "retr_p", 100.0), ("Retr R", "retr_r", 100.0), ("Retr F1", "retr_f1", 100.0)]
        if "qa_fl" in result["overall"]:
            cols += [("QA-FL", "qa_fl", 100.0), ("QA", "qa", 100.0)]
        t = Table(title=f"{title} (x100; lemmatizer: {result['lemmatizer']})")
        t.add_column("category")
        for name, _, _ in cols:
            t.add_column(name, justify="right")
        for cat, s in result["per_category"].items():
            t.add_row(cat, *[_fmt(s.get(k), sc) for _, k, sc in cols])
        t.add_row("[bold]overall[/]", *[_fmt(result["overall"].get(k), sc) for _, k, sc in cols])
        out.print(t)
        return
    for section in ("per_modality", "per_hop", "per_type"):
        t = Table(title=f"{title}: {section.replace('per_', 'by ')} (x100)")
        for c in ("group", "n", "list EM", "list F1"):
            t.add_column(c, justify="left" if c == "group" else "right")
        for k, s in result[section].items():
            t.add_row(k, str(s["n"]), _fmt(s["list_em"]), _fmt(s["list_f1"]))
        t.add_row("[bold]overall[/]", str(result["overall"]["n"]), _fmt(result["overall"]["list_em"]),
                  _fmt(result["overall"]["list_f1"]))
        out.print(t)


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_cmd(
        paths: list[Path] = typer.Argument(..., help="PREDICTIONS GOLD, or with --baseline: one or more WebQA TSVs"),
        dataset: str = typer.Option(..., "--dataset", "-d", help="a registered dataset: webqa, mmqa, jsonl, ..."),
        out_path: Path | None = typer.Option(None, "--out", "-o", help="write the metrics as JSON here"),
        gold_format: str | None = typer.Option(None, "--format", help="gold loader format (as `mmrag data stats`); "
                                                                       "default: detected"),
        baseline: bool = typer.Option(False, "--baseline", help="score the TSV's own VLP `Output` column"),
        output_idx: int = typer.Option(0, "--output-idx", help="which of the baseline's beam outputs to score"),
        lemmatizer: str = typer.Option("auto", "--lemmatizer", help="auto, spacy, simplemma or builtin"),
        domain_fallback: bool = typer.Option(False, "--domain-fallback",
                                             help="RagVL variant: full bags when a reference has no domain word"),
        bart_checkpoint: str | None = typer.Option(None, "--bart-checkpoint", help="bart-large-cnn folder: adds QA-FL"),
        bart_parabank: str | None = typer.Option(None, "--bart-parabank", help="BARTScore ParaBank bart.pth"),
        per_question: bool = typer.Option(True, "--per-question/--no-per-question",
                                          help="keep per-question scores in the JSON"),
    ) -> None:
        """Score predictions with the official metrics: WebQA QA-Acc per category + retrieval P/R/F1
        (+ QA-FL with BART weights), MMQA list EM/F1 by modality, hop and question type."""
        from mmrag_rft.config import atomic_write_text
        from mmrag_rft.data.datasets import get_dataset
        from mmrag_rft.evaluation.scoring import read_gold, read_submission, score_submission
        from mmrag_rft.metrics.text import set_lemmatizer

        check_dataset(dataset)
        metric_set = get_dataset(dataset).metric_set
        try:
            set_lemmatizer(lemmatizer)
        except ValueError as e:
            raise fail(f"--lemmatizer: {e}") from None
        if baseline:
            if metric_set != "webqa":
                raise fail("--baseline scores WebQA's val TSVs: use --dataset webqa")
            gold_paths, pred_path = paths, None
        else:
            if len(paths) != 2:
                raise fail(f"expected PREDICTIONS GOLD (2 paths), got {len(paths)}")
            pred_path, gold_paths = paths[0], [paths[1]]
        for p in [*gold_paths, *([pred_path] if pred_path else [])]:
            if not p.exists():
                raise fail(f"{p}: file not found")
        try:
            gold: list[dict[str, Any]] = []
            for g in gold_paths:
                gold.extend(read_gold(g, gold_format))
            preds = read_submission(pred_path) if pred_path else None
        except ValueError as e:  # DataError is a ValueError and names file/row/field
            raise fail(str(e)) from None
        if not gold:
            raise fail(f"{gold_paths[0]}: no gold questions")
        if baseline and not all(g.get("outputs") for g in gold):
            raise fail("--baseline needs WebQA val TSV files with an `Output` column "
                       "(Guid, Qcate, Q, A, Keywords_A, Output_conf, Output)")
        fluency = None
        if bart_checkpoint and metric_set == "webqa":
            from mmrag_rft.metrics.webqa import FluencyUnavailable, qa_fluency

            cands = []
            for g in gold:
                p = (preds or {}).get(g["qid"], {}) if preds is not None else {
                    "answer": (g.get("outputs") or [""])[output_idx]}
                a = p.get("answer", "")
                cands.append(" ".join(a) if isinstance(a, list) else a)
            try:
                fluency = qa_fluency(cands, [g["answers"] for g in gold], checkpoint=bart_checkpoint,
                                     parabank=bart_parabank)
            except FluencyUnavailable as e:
                raise fail(str(e)) from None
        result = score_submission(dataset, preds, gold, output_idx=output_idx, domain_fallback=domain_fallback, fluency=fluency)
        result["gold"] = [str(p) for p in gold_paths]
        result["predictions"] = "VLP baseline (TSV Output column, index %d)" % output_idx if baseline else str(pred_path)
        print_tables(result, f"{dataset}: {result['predictions']}")
        if result["missing_predictions"]:
            out.print(f"[yellow]{result['missing_predictions']} gold questions have no prediction (scored 0)[/]")
        if not per_question:
            result.pop("per_question", None)
        if out_path:
            atomic_write_text(out_path, json.dumps(result, indent=2, ensure_ascii=False, default=float))
            out.print(f"metrics written to {out_path}")
