"""`mmrag index` (build a hybrid index from a corpus or a benchmark file) and `mmrag search` (query one)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from mmrag_rft.cli._common import console, fail, open_index_or_fail, open_query_image_or_fail, out



def _retrieval_config(path: Optional[Path], overrides: list[str]) -> Any:
    from mmrag_rft.config import ConfigError, load
    from mmrag_rft.retrieval.layout import RetrievalConfig

    try:
        return load(RetrievalConfig, path, overrides)
    except ConfigError as e:
        raise fail(str(e)) from None


def _candidates(path: Path, fmt: str, *, skip_bad: bool, images_tsv: Optional[Path],
                report: list[Any]) -> tuple[Iterator[Any], int | None, str]:
    """(candidate stream, total if cheaply known, format used). Sample files give the union of their pools."""
    from mmrag_rft.data.datasets import readers
    from mmrag_rft.data.jsonl import count_lines, load_corpus
    from mmrag_rft.data.loaders import detect_format, load_samples

    detected = detect_format(path) if fmt in ("auto", "jsonl") else fmt
    if fmt == "jsonl" and detected == "corpus":
        fmt = "corpus"
    elif fmt == "auto":
        fmt = detected
    if fmt == "corpus":
        total = count_lines(path)
        return load_corpus(path, skip_bad=skip_bad, report=report), total, fmt
    kw: dict[str, Any] = {}
    if images_tsv is not None:
        if "images_tsv" not in readers()[fmt][1].options:
            raise fail(f"--images-tsv applies to WebQA files only, not {fmt}")
        kw["images_tsv"] = images_tsv
    samples = load_samples(path, fmt, skip_bad=skip_bad, report=report, **kw)  # type: ignore[arg-type]

    def pools() -> Iterator[Any]:
        for s in samples:
            yield from s.candidates

    return pools(), None, fmt


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a `kill`, a container stop) raises SystemExit, so the half-built index is cleaned away."""
    import signal
    import sys

    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    except ValueError:  # not the main thread (an embedding caller): its own handling applies
        pass


def register(app: typer.Typer) -> None:
    @app.command()
    def index(
        corpus: Path = typer.Argument(..., help="Corpus JSONL (one candidate per line) or a WebQA/MMQA/samples "
                                                "file (its candidate pools are indexed, deduplicated)."),
        out_dir: Path = typer.Option(..., "--out", help="Index folder to create (replaced atomically if it is one)."),
        format: str = typer.Option("auto", "--format", help="auto, corpus, or a dataset's format (jsonl, webqa, webqa-tsv, mmqa, ...)."),
        config: Optional[Path] = typer.Option(None, "--config", help="Retrieval YAML (RetrievalConfig keys)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set use_bm25=false."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Candidates per batch."),
        embedder: Optional[str] = typer.Option(None, help="Sentence-transformers folder or id (default: bundled "
                                                          "all-MiniLM-L6-v2)."),
        image_encoder: Optional[str] = typer.Option(None, help="'efficientnet-lite0' to fuse image pixels in."),
        images_tsv: Optional[Path] = typer.Option(None, help="WebQA imgs.tsv with the pictures' bytes."),
        skip_bad: bool = typer.Option(False, help="Skip malformed rows (reported) instead of stopping."),
        image_dir: list[Path] = typer.Option([], "--image-dir", help="A folder image_paths may point into besides "
                                                                     "the corpus file's own (repeatable)."),
        allow_outside_images: bool = typer.Option(False, "--allow-outside-images",
                                                  help="Index image_paths anywhere on disk (the server will serve "
                                                       "them): only for a corpus you trust."),
    ) -> None:
        """Build a hybrid (dense + BM25) retrieval index over a corpus."""
        from mmrag_rft.data.loaders import formats
        from mmrag_rft.data.schema import DataError
        from mmrag_rft.retrieval.build import build_index
        from mmrag_rft.retrieval.layout import IndexLoadError

        if format not in (*formats(), "corpus"):
            raise fail(f"--format: expected one of {[*formats(), 'corpus']}, got {format!r}")
        if not corpus.is_file():
            raise fail(f"{corpus}: no such file")
        overrides = list(set_)
        if batch_size is not None:
            overrides.append(f"batch_size={batch_size}")
        if embedder is not None:
            overrides.append(f"embedder={json.dumps(embedder)}")
        if image_encoder is not None:
            overrides.append(f"image_encoder={json.dumps(image_encoder)}")
        cfg = _retrieval_config(config, overrides)
        _exit_cleanly_on_sigterm()
        report: list[Any] = []
        t0 = time.perf_counter()
        try:
            stream, total, used = _candidates(corpus, format, skip_bad=skip_bad, images_tsv=images_tsv, report=report)
            manifest = build_index(stream, out_dir, cfg, base_dir=corpus.resolve().parent, total=total,
                                   image_roots=image_dir, allow_outside_images=allow_outside_images)
        except (DataError, IndexLoadError) as e:
            raise fail(str(e)) from None
        except ValueError as e:  # empty corpus, bad config values
            raise fail(f"{corpus}: {e}") from None
        except RuntimeError as e:  # an embedder or image encoder that cannot be loaded
            raise fail(str(e)) from None
        except OSError as e:  # a full disk or a read-only output folder; the half-built index is already gone
            raise fail(f"{e.filename or out_dir}: {e.strerror or e}") from None
        dt = time.perf_counter() - t0
        from rich.table import Table

        t = Table(title=f"index {out_dir}", show_header=False)
        t.add_row("source", f"{corpus} ({used})")
        t.add_row("candidates", f"{manifest.count:,}")
        t.add_row("embedder", f"{manifest.embedder or '(none: BM25 only)'} ({manifest.dim}-d)")
        t.add_row("retrievers", " + ".join(n for n, on in (("dense", cfg.use_dense), ("bm25", cfg.use_bm25)) if on))
        t.add_row("images", f"{manifest.num_images} stored, {manifest.num_image_vectors} encoded from pixels"
                  + (f" ({manifest.image_encoder})" if manifest.image_encoder else ""))
        t.add_row("time", f"{dt:.1f} s ({manifest.count / max(dt, 1e-9):,.0f} candidates/s)")
        t.add_row("corpus hash", manifest.corpus_hash[:16])
        out.print(t)
        if report:
            console.print(f"[yellow]{len(report)} malformed row(s) skipped[/], first: {report[0]}")

    @app.command()
    def verify(index_dir: Path = typer.Argument(..., help="Index folder built by `mmrag index`.")) -> None:
        """Check an index end to end: every file against its checksum, every record under its own id, every vector
        finite (loading checks only the small files)."""
        from mmrag_rft.retrieval.index import HybridIndex

        try:
            with HybridIndex.load(index_dir) as idx:
                info = idx.verify()
        except Exception as e:  # corrupt, stale or missing: one line naming the file
            raise fail(f"index {index_dir}: {e}") from None
        out.print(f"[green]ok[/] {index_dir}: {info['records']:,} records, {info['vectors']:,} vectors, "
                  f"{len(info['checksummed_files'])} files match their checksums")

    @app.command()
    def search(
        query: str = typer.Argument(..., help="The query text."),
        index_dir: Path = typer.Option(..., "--index", help="Index folder built by `mmrag index`."),
        top_n: int = typer.Option(10, "--top-n", min=1, max=1000),
        mode: str = typer.Option("hybrid", help="hybrid | dense | bm25"),
        image: Optional[Path] = typer.Option(None, help="Optional query image (fused through the image encoder)."),
        as_json: bool = typer.Option(False, "--json", help="Print hits as JSON lines."),
    ) -> None:
        """Query an index and print the fused ranking (dense and BM25 ranks shown side by side)."""
        if mode not in ("hybrid", "dense", "bm25"):
            raise fail(f"--mode: expected hybrid, dense or bm25, got {mode!r}")
        if not query.strip():
            raise fail("query is empty")
        idx = open_index_or_fail(index_dir)
        if mode == "dense" and idx.dense is None:
            raise fail(f"{index_dir}: built without dense vectors (use_dense=false); use --mode bm25 or hybrid")
        if mode == "bm25" and idx.bm25 is None:
            raise fail(f"{index_dir}: built without BM25 (use_bm25=false); use --mode dense or hybrid")
        query_image = open_query_image_or_fail(image)
        try:
            hits = idx.search(query, top_n=top_n, query_image=query_image, use_dense=mode != "bm25",
                              use_bm25=mode != "dense")
        except RuntimeError as e:  # a missing embedder, a corrupt index (IndexCorruptError)
            raise fail(str(e)) from None
        if as_json:
            for h in hits:
                print(json.dumps({"id": h.id, "score": h.score, "dense_rank": h.dense_rank, "bm25_rank": h.bm25_rank,
                                  "modality": h.candidate.modality, "title": h.candidate.title,
                                  "text": h.candidate.text, "image_path": h.candidate.image_path},
                                 ensure_ascii=False))
            return
        from rich.table import Table

        t = Table(title=f"{query!r} in {index_dir} ({len(idx):,} candidates, {mode})")
        for col, kw in (("#", {"justify": "right"}), ("id", {}), ("mod", {}), ("score", {"justify": "right"}),
                        ("dense", {"justify": "right"}), ("bm25", {"justify": "right"}), ("title / text", {})):
            t.add_column(col, **kw)
        for i, h in enumerate(hits, 1):
            c = h.candidate
            body = c.display_text().replace("\n", " ")
            t.add_row(str(i), h.id, c.modality, f"{h.score:.4f}", str(h.dense_rank or "-"), str(h.bm25_rank or "-"),
                      body[:117] + ("..." if len(body) > 117 else ""))
        out.print(t)
        if not hits:
            console.print("no hits")
