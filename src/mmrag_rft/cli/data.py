"""`mmrag data stats|convert`: look inside a benchmark or corpus file, or turn it into our JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import console, fail, out

_FORMAT_HELP = "auto | webqa | webqa-tsv | mmqa | jsonl (auto reads the file's content)."
_STATS_FORMAT_HELP = "auto | webqa | webqa-tsv | mmqa | jsonl | corpus (auto reads the file's content)."


def _loader_options(images_tsv: Optional[Path], image_dir: Optional[Path]) -> dict[str, object]:
    return {"images_tsv": images_tsv, "image_dir": image_dir}


def _check_format(format: str, extra: tuple[str, ...] = ()) -> None:
    from mmrag_rft.data.loaders import formats

    if format not in formats() + extra:
        raise fail(f"--format must be one of {', '.join(formats() + extra)}; got {format!r}")


def _report_skipped(report: list) -> None:
    if report:
        console.print(f"[yellow]skipped {len(report)} bad row(s)[/]; first: {report[0]}", highlight=False,
                      soft_wrap=True)


def stats(
    path: Path = typer.Argument(..., help="WebQA JSON/TSV, MMQA jsonl, our samples JSONL, or a corpus JSONL."),
    format: str = typer.Option("auto", "--format", "-f", help=_STATS_FORMAT_HELP),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report and skip malformed rows instead of stopping."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON here."),
    images_tsv: Optional[Path] = typer.Option(None, "--images-tsv", help="WebQA imgs.tsv (lineidx beside it)."),
    image_dir: Optional[Path] = typer.Option(None, "--image-dir", help="MMQA images folder."),
) -> None:
    """Print JSON counts: samples, candidates per sample (overall and by modality), gold per sample, categories."""
    from mmrag_rft.config import atomic_write_text
    from mmrag_rft.data.jsonl import load_corpus
    from mmrag_rft.data.loaders import detect_format, load_samples, summarize, summarize_corpus
    from mmrag_rft.data.schema import DataError

    _check_format(format, extra=("corpus",))
    report: list[DataError] = []
    try:
        fmt = detect_format(path) if format == "auto" else format
        if fmt == "corpus":
            result = {"file": str(path), "format": "corpus",
                      **summarize_corpus(load_corpus(path, skip_bad=skip_bad, report=report))}
        else:
            samples = load_samples(path, fmt, skip_bad=skip_bad, report=report,
                                   **_loader_options(images_tsv, image_dir))
            result = {"file": str(path), "format": fmt, **summarize(samples)}
    except DataError as e:
        raise fail(str(e)) from None
    if skip_bad:
        result["bad_rows"] = len(report)
        result["bad_row_errors"] = [str(e) for e in report[:20]]
    _report_skipped(report)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out_file is not None:
        try:
            atomic_write_text(out_file, text + "\n")
        except OSError as e:
            raise fail(f"{e.filename or out_file}: {e.strerror or e}") from None
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def convert(
    path: Path = typer.Argument(..., help="Input: WebQA JSON/TSV, MMQA jsonl or our JSONL."),
    out_path: Path = typer.Option(..., "--out", help="Output samples JSONL (written atomically)."),
    format: str = typer.Option("auto", "--format", "-f", help=_FORMAT_HELP),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report and skip malformed rows instead of stopping."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N samples."),
    with_bytes: bool = typer.Option(False, "--with-bytes", help="Embed image bytes (base64) in the JSONL."),
    images_tsv: Optional[Path] = typer.Option(None, "--images-tsv", help="WebQA imgs.tsv (lineidx beside it)."),
    image_dir: Optional[Path] = typer.Option(None, "--image-dir", help="MMQA images folder."),
) -> None:
    """Convert a benchmark file into our samples JSONL (docs/data-format.md)."""
    from mmrag_rft.data.jsonl import write_samples_jsonl
    from mmrag_rft.data.loaders import load_samples
    from mmrag_rft.data.schema import DataError

    _check_format(format)
    if out_path.is_dir():
        raise fail(f"--out {out_path}: is a folder; name the samples JSONL file to write")
    if out_path.exists() and path.exists() and out_path.resolve() == path.resolve():
        raise fail(f"--out {out_path}: is the input file; converting would replace it (write elsewhere)")
    report: list[DataError] = []
    try:
        samples = load_samples(path, format, skip_bad=skip_bad, report=report, limit=limit,
                               **_loader_options(images_tsv, image_dir))
        n = write_samples_jsonl(samples, out_path, with_bytes=with_bytes)
    except DataError as e:
        raise fail(str(e)) from None
    except OSError as e:  # a read-only or full output folder
        raise fail(f"{e.filename or out_path}: {e.strerror or e}") from None
    _report_skipped(report)
    console.print(f"wrote {n} samples to {out_path}", highlight=False)


def pools(
    path: Path = typer.Argument(..., help="Samples whose gold_ids name corpus ids (our JSONL, without 'candidates')."),
    index: Path = typer.Option(..., "--index", help="Index built by `mmrag index` from that corpus."),
    out_path: Path = typer.Option(..., "--out", help="Output samples JSONL with each question's pool (atomic)."),
    top_n: int = typer.Option(20, "--top-n", min=1, max=200, help="Candidates retrieved per question."),
    format: str = typer.Option("auto", "--format", "-f", help=_FORMAT_HELP),
) -> None:
    """Give each question without candidates a pool: the index's top N for it, plus any gold piece the search
    missed; the file then trains stage 1 and stage 2 (`data.path`) and evaluates without an index."""
    from rich.progress import track

    from mmrag_rft.cli._common import open_index_or_fail
    from mmrag_rft.data.jsonl import write_samples_jsonl
    from mmrag_rft.data.loaders import load_samples
    from mmrag_rft.data.schema import DataError
    from mmrag_rft.retrieval.pool import pool_from_index

    _check_format(format)
    if out_path.exists() and path.exists() and out_path.resolve() == path.resolve():
        raise fail(f"--out {out_path}: is the input file; writing would replace it (write elsewhere)")
    idx = open_index_or_fail(index)
    try:
        samples = list(load_samples(path, format))
    except DataError as e:
        raise fail(str(e)) from None
    pooled, gold, missed = [], 0, 0
    for s in track(samples, description="retrieving pools", console=console, transient=True):
        try:
            p, m = pool_from_index(s, idx, top_n)
        except KeyError as e:  # a gold id the index does not hold
            raise fail(f"{path}: question {s.qid}: {e.args[0]} (an index of another corpus?)") from None
        pooled.append(p)
        gold, missed = gold + (len(set(s.gold_ids)) if not s.candidates else 0), missed + m
    try:
        n = write_samples_jsonl(pooled, out_path)
    except OSError as e:
        raise fail(f"{e.filename or out_path}: {e.strerror or e}") from None
    added = f"; the {missed} it missed were added to their pools" if missed else ""
    console.print(f"wrote {n} samples to {out_path}; the top {top_n} held {gold - missed} of {gold} gold pieces{added}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect and convert benchmark and corpus files.", no_args_is_help=True)
    data_app.command("stats")(stats)
    data_app.command("convert")(convert)
    data_app.command("pools")(pools)
    app.add_typer(data_app, name="data")
