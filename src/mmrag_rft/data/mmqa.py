"""MultimodalQA (Talmor et al. 2021): `MMQA_<split>.jsonl` plus its texts/tables/images jsonl files.

Each question's candidate pool comes from its own metadata: `image_doc_ids`, `text_doc_ids` and one
`table_id`. What a candidate can say depends on which auxiliary files are present:

- images (`MMQA_images.jsonl`: id, title, url, path): image candidates are always kept (their ids are in
  the question); the file adds titles, and `image_dir` adds pixels (`image_dir/path`, when it exists).
- texts (`MMQA_texts.jsonl`: id, title, text, url): text candidates exist only when this file is present;
  an id-only passage carries nothing to read or retrieve.
- tables (`MMQA_tables.jsonl`): the question's table becomes one "table" candidate, linearised to text,
  only when this file is present.

Gold ids are the `supporting_context` doc ids that are among the candidates; `meta["gold_all"]` keeps
them all, so a caller can see evidence that the available files could not supply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mmrag_rft.data.jsonl import bad_row, iter_json_lines, iter_lines
from mmrag_rft.data.schema import Candidate, DataError, Sample

AUX_NAMES = {"texts": "MMQA_texts", "tables": "MMQA_tables", "images": "MMQA_images"}
AuxArg = str | os.PathLike[str] | Literal[False] | None


def find_aux(dev_path: str | os.PathLike[str], kind: str) -> Path | None:
    """The sibling `MMQA_<kind>.jsonl[.gz]` of a questions file, if there is one."""
    folder = Path(dev_path).resolve().parent
    for ext in (".jsonl", ".jsonl.gz"):
        p = folder / f"{AUX_NAMES[kind]}{ext}"
        if p.is_file():
            return p
    return None


def _aux_path(arg: AuxArg, dev_path: Path, kind: str) -> Path | None:
    if arg is False:
        return None
    if arg is None:
        return find_aux(dev_path, kind)
    p = Path(arg)
    if not p.is_file():
        raise DataError(f"MMQA {kind} file not found", file=str(p))
    return p


def linearise_table(table: dict[str, Any], *, max_rows: int | None = None) -> str:
    """`col | col` header line then one line per row: readable by a text model and by BM25."""
    header = [str((h or {}).get("column_name", "")).strip() for h in table.get("header") or []]
    lines = [" | ".join(header)] if any(header) else []
    rows = table.get("table_rows") or []
    for row in rows[:max_rows] if max_rows is not None else rows:
        lines.append(" | ".join(str((cell or {}).get("text", "")).strip() for cell in row))
    return "\n".join(lines)


def _answer_text(a: Any) -> str:
    v = a.get("answer") if isinstance(a, dict) else a
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _load_aux(path: Path | None, wanted: set[str], kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path is None:
        return out
    for lineno, obj in iter_json_lines(path):
        cid = obj.get("id")
        if cid is None:
            raise DataError("missing required field", file=str(path), row=lineno, field="id")
        if str(cid) in wanted:
            out[str(cid)] = obj
    return out


def _needed_ids(path: Path) -> set[str]:
    """Ids the questions reference: a quiet pre-pass over the whole file (bad rows are reported by the main
    pass; with --limit and skipped rows, which rows make the cut is only known then)."""
    ids: set[str] = set()
    for _, line in iter_lines(path, quiet=True):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        md = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(md, dict):
            for key in ("image_doc_ids", "text_doc_ids"):
                if isinstance(md.get(key), list):
                    ids.update(str(x) for x in md[key])
            if md.get("table_id"):
                ids.add(str(md["table_id"]))
    return ids


def mmqa_sample(obj: dict[str, Any], *, path: str, row: int | str, texts: dict[str, dict[str, Any]] | None,
                tables: dict[str, dict[str, Any]] | None, images: dict[str, dict[str, Any]] | None,
                image_dir: Path | None = None) -> Sample:
    """One MMQA row as a Sample. `texts`/`tables` None means that file is absent (no such candidates)."""
    def err(msg: str, field: str | None = None) -> DataError:
        return DataError(msg, file=path, row=row, field=field)

    for key in ("qid", "question"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise err("missing or not a non-empty string", key)
    answers = obj.get("answers", [])
    if not isinstance(answers, list):
        raise err("must be a list", "answers")
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or "answer" not in a:
            raise err("must be an object with an 'answer'", f"answers[{i}]")
    md = obj.get("metadata")
    if not isinstance(md, dict):
        raise err("missing or not an object", "metadata")
    for key in ("image_doc_ids", "text_doc_ids"):
        if not isinstance(md.get(key, []), list):
            raise err("must be a list", f"metadata.{key}")
    sc = obj.get("supporting_context", [])
    if not isinstance(sc, list) or not all(isinstance(x, dict) and "doc_id" in x for x in sc):
        raise err("must be a list of {doc_id, doc_part}", "supporting_context")

    cands: list[Candidate] = []
    seen: set[str] = set()

    def add(c: Candidate) -> None:
        if c.id not in seen:
            seen.add(c.id)
            cands.append(c)

    if tables is not None and md.get("table_id"):
        tid = str(md["table_id"])
        t = tables.get(tid)
        if t is not None:
            tab = t.get("table") or {}
            title = " - ".join(x for x in (str(t.get("title") or ""), str(tab.get("table_name") or "")) if x)
            add(Candidate(id=tid, modality="table", title=title, text=linearise_table(tab),
                          source=str(t.get("url") or "")))
    if texts is not None:
        for tid in md.get("text_doc_ids", []):
            t = texts.get(str(tid))
            if t is not None:
                add(Candidate(id=str(tid), modality="text", title=str(t.get("title") or ""),
                              text=str(t.get("text") or ""), source=str(t.get("url") or "")))
    for iid in md.get("image_doc_ids", []):
        info = (images or {}).get(str(iid), {})
        image_path = None
        if image_dir is not None:
            for name in (info.get("path"), f"{iid}.jpg", f"{iid}.png"):
                if name and (image_dir / name).is_file():
                    image_path = str((image_dir / name).resolve())
                    break
        add(Candidate(id=str(iid), modality="image", title=str(info.get("title") or ""), text="",
                      image_path=image_path, source=str(info.get("url") or "")))

    gold_all: list[str] = []
    for x in sc:
        d = str(x["doc_id"])
        if d not in gold_all:
            gold_all.append(d)
    meta = {
        "type": str(md.get("type") or ""),
        "modalities": list(md.get("modalities") or []),
        "answer_modalities": [str(a.get("modality") or "") for a in answers],
        "answer_types": [str(a.get("type") or "") for a in answers],
        "gold_all": gold_all,
        "gold_parts": [str(x.get("doc_part") or "") for x in sc],
    }
    return Sample(qid=obj["qid"], question=obj["question"].strip(), answers=[_answer_text(a) for a in answers],
                  candidates=cands, gold_ids=[g for g in gold_all if g in seen], category=meta["type"],
                  dataset="mmqa", meta=meta)


def load_mmqa(path: str | os.PathLike[str], *, texts: AuxArg = None, tables: AuxArg = None, images: AuxArg = None,
              image_dir: str | os.PathLike[str] | None = None, skip_bad: bool = False,
              report: list[DataError] | None = None, limit: int | None = None) -> Iterator[Sample]:
    """Samples from an MMQA questions jsonl(.gz).

    texts/tables/images: a path, None to use a sibling `MMQA_<kind>.jsonl[.gz]` if one exists, or False to
    ignore. Only the auxiliary rows the questions reference are kept in memory.
    """
    p = Path(path)
    aux = {k: _aux_path(a, p, k) for k, a in (("texts", texts), ("tables", tables), ("images", images))}
    wanted = _needed_ids(p) if any(aux.values()) else set()
    text_rows = _load_aux(aux["texts"], wanted, "texts") if aux["texts"] else None
    table_rows = _load_aux(aux["tables"], wanted, "tables") if aux["tables"] else None
    image_rows = _load_aux(aux["images"], wanted, "images") if aux["images"] else None
    idir = Path(image_dir) if image_dir is not None else None
    if idir is not None and not idir.is_dir():
        raise DataError("image folder not found", file=str(idir))
    n = 0
    seen: set[str] = set()
    for lineno, obj in iter_json_lines(p, skip_bad=skip_bad, report=report):
        if limit is not None and n >= limit:
            return
        try:
            s = mmqa_sample(obj, path=str(p), row=lineno, texts=text_rows, tables=table_rows, images=image_rows,
                            image_dir=idir)
            if s.qid in seen:
                raise DataError(f"duplicate qid {s.qid!r}", file=str(p), row=lineno, field="qid")
        except DataError as e:
            bad_row(e if e.file else DataError(e.reason, file=str(p), row=lineno, field=e.field), skip_bad, report)
            continue
        seen.add(s.qid)
        n += 1
        yield s
