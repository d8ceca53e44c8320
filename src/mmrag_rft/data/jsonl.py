"""Our own JSONL formats (see docs/data-format.md) and the file helpers every loader shares.

Two files: a *samples* file (one question per line, candidate pool inline or left to an index) and a
*corpus* file (one candidate per line). Relative `image_path`s are resolved against the file's own folder
so a corpus folder can be moved as a whole.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from mmrag_rft.config import atomic_writer
from mmrag_rft.data.schema import Candidate, DataError, Sample

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """By magic bytes, not by extension: renamed or extension-less gzip files are common in data dumps."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as e:
        raise DataError(f"cannot open ({e.strerror or e})", file=str(path)) from None


def open_bytes(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a file for reading bytes, gunzipping transparently; a missing file or a folder is a DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.is_dir():
        raise DataError("is a folder, expected a file", file=str(p))
    return gzip.open(p, "rb") if is_gzip(p) else open(p, "rb")


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a text file for reading, gunzipping transparently."""
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8")


def read_head(path: str | os.PathLike[str], n: int = 65536) -> str:
    """The first `n` characters (decompressed), for format sniffing without reading the whole file."""
    try:
        with open_text(path) as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"unreadable ({e})", file=str(path)) from None


def count_lines(path: str | os.PathLike[str]) -> int:
    """Non-blank lines (for a progress bar's total), read as bytes so no encoding problem can stop the count."""
    p = Path(path)
    try:
        with open_bytes(p) as f:
            return sum(1 for raw in f if raw.strip())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"unreadable ({e}); is the file truncated?", file=str(p)) from None


def iter_lines(path: str | os.PathLike[str], *, skip_bad: bool = False, report: list[DataError] | None = None,
               quiet: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for non-blank lines; a truncated gzip stream is a DataError, not EOFError.

    Lines are decoded one by one, so a bad UTF-8 byte is an error of its own line (skipped with `skip_bad`),
    not of the whole file. `quiet`: drop such lines silently (a pre-pass whose main pass reports them)."""
    p = Path(path)
    f = open_bytes(p)
    lineno = 0
    try:
        with f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if quiet:
                        continue
                    bad_row(DataError(f"not valid UTF-8 (byte {e.start} of the line)", file=str(p), row=lineno),
                            skip_bad, report)
                    continue
                if lineno == 1:
                    line = line.lstrip("\ufeff")
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"unreadable after line {lineno} ({e}); is the file truncated?", file=str(p)) from None


def iter_json_lines(path: str | os.PathLike[str], *, skip_bad: bool = False,
                    report: list[DataError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per JSONL row; a line that is not a JSON object is a row error."""
    for lineno, line in iter_lines(path, skip_bad=skip_bad, report=report):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad_row(DataError(f"not valid JSON ({e.msg}: column {e.colno})", file=str(path), row=lineno),
                    skip_bad, report)
            continue
        if not isinstance(obj, dict):
            bad_row(DataError(f"expected a JSON object, got {type(obj).__name__}", file=str(path), row=lineno),
                    skip_bad, report)
            continue
        yield lineno, obj


def bad_row(err: DataError, skip_bad: bool, report: list[DataError] | None) -> None:
    """Raise, or (skip_bad) record and warn: a skipped row is never silent."""
    if not skip_bad:
        raise err
    if report is not None:
        report.append(err)
    log.warning("skipping bad row: %s", err)


def located(err: DataError, *, file: str, row: int | str) -> DataError:
    """Re-anchor an error raised by the schema (which knows only the field) at a file and row."""
    return DataError(err.reason, file=file, row=row, field=err.field)


def _resolve_path(p: Any, base: Path) -> str | None:
    if p is None or p == "":
        return None
    if not isinstance(p, str):
        raise DataError(f"must be a string path, got {type(p).__name__}", field="image_path")
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def candidate_from_row(d: dict[str, Any], base: Path) -> Candidate:
    c = Candidate.from_dict(d)
    c.image_path = _resolve_path(d.get("image_path"), base)
    return c


def _load_rows(path: str | os.PathLike[str], parse: Callable[[dict, Path], Any], key: str, key_name: str, *,
               skip_bad: bool, report: list[DataError] | None, limit: int | None) -> Iterator[Any]:
    """One parsed item per JSONL row, ids (`key`) unique across the file, bad rows located by file and line."""
    p = Path(path)
    base = p.resolve().parent
    seen: set[str] = set()
    n = 0
    for lineno, obj in iter_json_lines(p, skip_bad=skip_bad, report=report):
        if limit is not None and n >= limit:
            return
        try:
            item = parse(obj, base)
            if getattr(item, key) in seen:
                raise DataError(f"duplicate {key_name} {getattr(item, key)!r}", field=key)
        except DataError as e:
            bad_row(located(e, file=str(p), row=lineno), skip_bad, report)
            continue
        seen.add(getattr(item, key))
        n += 1
        yield item


def load_corpus(path: str | os.PathLike[str], *, skip_bad: bool = False, report: list[DataError] | None = None,
                limit: int | None = None) -> Iterator[Candidate]:
    """Candidates from a corpus JSONL file; `image_path` relative to the file's folder becomes absolute."""
    return _load_rows(path, candidate_from_row, "id", "candidate id", skip_bad=skip_bad, report=report, limit=limit)


def _sample_from_row(obj: dict, base: Path) -> Sample:
    s = Sample.from_dict(obj)
    for i, (c, raw) in enumerate(zip(s.candidates, obj.get("candidates") or [])):
        try:
            c.image_path = _resolve_path(raw.get("image_path"), base)
        except DataError as e:
            raise DataError(e.reason, field=f"candidates[{i}].image_path") from None
    return s


def load_samples_jsonl(path: str | os.PathLike[str], *, skip_bad: bool = False,
                       report: list[DataError] | None = None, limit: int | None = None) -> Iterator[Sample]:
    """Samples from our samples JSONL; inline candidates' relative image paths resolve against the file."""
    return _load_rows(path, _sample_from_row, "qid", "qid", skip_bad=skip_bad, report=report, limit=limit)


def _relativise(d: dict[str, Any], base: Path | None) -> dict[str, Any]:
    if base is not None and d.get("image_path"):
        try:
            d["image_path"] = os.path.relpath(d["image_path"], base)
        except ValueError:  # another drive on Windows: keep absolute
            pass
    return d


def _write_rows(items: Iterable[Any], path: str | os.PathLike[str], to_row: Callable[[Any], dict]) -> int:
    n = 0
    with atomic_writer(path) as f:
        for item in items:
            f.write(json.dumps(to_row(item), ensure_ascii=False) + "\n")
            n += 1
    return n


def write_samples_jsonl(samples: Iterable[Sample], path: str | os.PathLike[str], *, with_bytes: bool = False,
                        relative_paths: bool = True) -> int:
    """Write samples atomically; returns how many. Image paths are stored relative to the output folder."""
    base = Path(path).resolve().parent if relative_paths else None

    def row(s: Sample) -> dict:
        d = s.to_dict(with_bytes=with_bytes)
        d["candidates"] = [_relativise(c, base) for c in d["candidates"]]
        return d

    return _write_rows(samples, path, row)


def write_corpus_jsonl(candidates: Iterable[Candidate], path: str | os.PathLike[str], *, with_bytes: bool = False,
                       relative_paths: bool = True) -> int:
    """Write a corpus file atomically; returns how many candidates."""
    base = Path(path).resolve().parent if relative_paths else None
    return _write_rows(candidates, path, lambda c: _relativise(c.to_dict(with_bytes=with_bytes), base))
