"""`mmrag score`: official WebQA / MMQA metrics for a predictions file against gold data."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import typer

from mmrag_rft.cli._common import fail, out


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open("r", encoding="utf-8")


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """{qid: {"answer": str | list, "sources": [ids]}} from a WebQA-style JSON object or JSONL rows
    ({qid, answer, sources}; the evaluation runner's rows, whose `rank` holds the sources, work too)."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    preds: dict[str, dict[str, Any]] = {}

    def add(qid: Any, row: Any, where: str) -> None:
        if isinstance(row, str):
            row = {"answer": row}
        if not isinstance(row, dict):
            raise ValueError(f"{path}, {where}: prediction must be an object or a string")
        ans = row.get("answer", "")
        if ans is None:
            ans = ""
        if not isinstance(ans, (str, list)):
            raise ValueError(f"{path}, {where}, field 'answer': must be a string or a list of strings")
        src = row.get("sources", row.get("rank", []))
        if src is None:
            src = []
        if not isinstance(src, list):
            raise ValueError(f"{path}, {where}, field 'sources': must be a list of ids")
        preds[str(qid)] = {"answer": ans, "sources": [str(s) for s in src]}

    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # perhaps JSONL
        if isinstance(obj, dict) and "qid" not in obj:
            for qid, row in obj.items():
                add(qid, row, f"key {qid!r}")
            return preds
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, row {n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "qid" not in row:
            raise ValueError(f"{path}, row {n}, field 'qid': missing")
        add(row["qid"], row, f"row {n}")
    return preds


def read_gold(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Gold rows from any file the data loaders read (WebQA JSON or val TSV, MMQA jsonl, our JSONL)."""
    from mmrag_rft.data.loaders import load_samples

    rows = []
    for s in load_samples(str(path), format=fmt or "auto"):
        meta = s.meta or {}
        modalities = meta.get("answer_modalities") or []
        rows.append({
            "qid": s.qid, "qcate": s.category, "answers": list(s.answers), "gold_sources": list(s.gold_ids),
            "keywords": meta.get("keywords"), "outputs": meta.get("baseline_output"),
            "qtype": meta.get("type") or s.category,
            "modality": meta.get("answer_modality") or (modalities[0] if modalities else ""),
        })
    return rows


def score(dataset: str, preds: dict[str, dict[str, Any]] | None, gold: list[dict[str, Any]], *,
          output_idx: int = 0, domain_fallback: bool = False, fluency: list[float] | None = None) -> dict[str, Any]:
    """preds=None scores the VLP baseline outputs carried by the gold TSV rows."""
    from mmrag_rft.metrics.mmqa import score_mmqa
    from mmrag_rft.metrics.webqa import references_for, score_webqa

    missing = 0
    items = []
    for i, g in enumerate(gold):
        if preds is None:
            outs = g.get("outputs") or []
            p = {"answer": outs[output_idx] if len(outs) > output_idx else "", "sources": []}
        else:
            p = preds.get(g["qid"])
            if p is None:
                missing += 1
        if dataset == "webqa":
            ans = (p or {}).get("answer", "")
            items.append({"qid": g["qid"], "qcate": g["qcate"],
                          "prediction": " ".join(ans) if isinstance(ans, list) else ans,
                          "references": references_for(g.get("keywords"), g["answers"]),
                          "pred_sources": (p or {}).get("sources", []), "gold_sources": g.get("gold_sources", []),
                          "fluency": fluency[i] if fluency else None})
        else:
            items.append({"qid": g["qid"], "prediction": None if p is None else p.get("answer"),
                          "gold": g["answers"], "qtype": g.get("qtype", ""), "modality": g.get("modality", "")})
    result = score_webqa(items, domain_fallback=domain_fallback) if dataset == "webqa" else score_mmqa(items)
    result["missing_predictions"] = missing
    if preds is not None:
        result["unknown_predictions"] = len(set(preds) - {g["qid"] for g in gold})
    return result


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
        dataset: str = typer.Option(..., "--dataset", "-d", help="webqa or mmqa"),
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
        from mmrag_rft.metrics.text import set_lemmatizer

        if dataset not in ("webqa", "mmqa"):
            raise fail(f"--dataset must be webqa or mmqa, got {dataset!r}")
        try:
            set_lemmatizer(lemmatizer)
        except ValueError as e:
            raise fail(f"--lemmatizer: {e}") from None
        if baseline:
            if dataset != "webqa":
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
            preds = read_predictions(pred_path) if pred_path else None
        except ImportError as e:
            raise fail(f"cannot read {gold_paths[0]}: the data loaders are unavailable ({e})") from None
        except ValueError as e:  # DataError is a ValueError and names file/row/field
            raise fail(str(e)) from None
        if not gold:
            raise fail(f"{gold_paths[0]}: no gold questions")
        if baseline and not all(g.get("outputs") for g in gold):
            raise fail("--baseline needs WebQA val TSV files with an `Output` column "
                       "(Guid, Qcate, Q, A, Keywords_A, Output_conf, Output)")
        fluency = None
        if bart_checkpoint and dataset == "webqa":
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
        result = score(dataset, preds, gold, output_idx=output_idx, domain_fallback=domain_fallback, fluency=fluency)
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
