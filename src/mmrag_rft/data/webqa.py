"""WebQA (Chang et al. 2022) in its official release formats.

- `WebQA_train_val.json` / `WebQA_test.json`: a dict keyed by Guid. Train/val rows label their evidence
  (`img_posFacts`/`img_negFacts`, `txt_posFacts`/`txt_negFacts`); test rows have unlabelled `img_Facts`/
  `txt_Facts` and no answer.
- `imgs.tsv` + `imgs.lineidx`: every image as `image_id<TAB>base64`; line i of the lineidx holds the byte
  offset of tsv row i, and the official code reads image `image_id` at row `image_id % 10_000_000`.
- `val_{img,txt}_queries.tsv`: question, answers, answer keywords and the official VLP baseline's
  outputs, without evidence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmrag_rft.data.jsonl import bad_row, iter_lines, open_text
from mmrag_rft.data.schema import Candidate, DataError, Sample, as_id, as_text

log = logging.getLogger(__name__)

LINEIDX_MODULUS = 10_000_000


def strip_quotes(s: str) -> str:
    """WebQA wraps many questions and answers in a stray pair of double quotes: `"\\"Where is ...?\\""`."""
    s = s.strip()
    while len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1].strip()
    return s


class WebQAImages:
    """Random access into WebQA's `imgs.tsv` by seeking to the offset its `imgs.lineidx` gives.

    Only the offsets (one int per image) are held in memory; pixels are read when asked for.
    """

    def __init__(self, tsv: str | os.PathLike[str], lineidx: str | os.PathLike[str] | None = None):
        self.tsv = Path(tsv)
        self.lineidx = Path(lineidx) if lineidx is not None else self.tsv.with_suffix(".lineidx")
        if not self.tsv.is_file():
            raise DataError("image tsv not found", file=str(self.tsv))
        if not self.lineidx.is_file():
            raise DataError("lineidx not found (expected beside the tsv)", file=str(self.lineidx))
        offsets = []
        with open(self.lineidx, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    offsets.append(int(line))
                except ValueError:
                    raise DataError(f"not a byte offset: {line[:40]!r}", file=str(self.lineidx), row=i) from None
        self.offsets = offsets
        self._by_id: dict[str, int] | None = None  # built only if the tsv does not follow the id % 1e7 layout
        self._fh = open(self.tsv, "rb")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> WebQAImages:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.offsets)

    def _read_row(self, offset: int) -> tuple[str, bytes]:
        self._fh.seek(offset)
        line = self._fh.readline().rstrip(b"\r\n")
        key, sep, payload = line.partition(b"\t")
        if not sep:
            raise DataError("row has no tab between image id and base64", file=str(self.tsv), row=f"@{offset}")
        return key.decode("utf-8", "replace").strip(), payload

    def _scan(self) -> dict[str, int]:
        log.warning("%s: rows are not at image_id %% %d; indexing the ids by a full scan", self.tsv,
                    LINEIDX_MODULUS)
        by_id = {}
        for off in self.offsets:
            key, _ = self._read_row(off)
            by_id[key] = off
        return by_id

    def get_bytes(self, image_id: str | int) -> bytes:
        """Decoded image file bytes (JPEG/PNG) for `image_id`; DataError if absent or corrupt."""
        key = str(image_id).strip()
        payload = None
        if self._by_id is None and key.isdigit():
            row = int(key) % LINEIDX_MODULUS
            if row < len(self.offsets):
                found, data = self._read_row(self.offsets[row])
                if found == key:
                    payload = data
        if payload is None:
            if self._by_id is None:
                self._by_id = self._scan()
            if key not in self._by_id:
                raise DataError(f"image {key} not in the image tsv", file=str(self.tsv), field="image_id")
            _, payload = self._read_row(self._by_id[key])
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise DataError(f"image {key}: base64 payload is corrupt ({e})", file=str(self.tsv)) from None


def _facts(row: dict[str, Any], key: str, guid: str, path: str) -> list[dict[str, Any]]:
    v = row.get(key, [])
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise DataError("must be a list of objects", file=path, row=guid, field=key)
    return v


def _fields(f: dict[str, Any], guid: str, path: str, key: str, i: int, **spec: str) -> dict[str, Any]:
    """Type-checked fields of one fact: `name=kind` with kind id | text | url; errors name the fact's field."""
    out: dict[str, Any] = {}
    for name, kind in spec.items():
        try:
            v = f.get(name)
            out[name] = (as_id(v, name) if kind == "id" else as_text(v, name) if kind == "text"
                         else (as_text(v, name) or None))
        except DataError as e:
            raise DataError(e.reason, file=path, row=guid, field=f"{key}[{i}].{name}") from None
    return out


def _img_candidate(f: dict[str, Any], guid: str, path: str, key: str, i: int) -> Candidate:
    if f.get("image_id") in (None, ""):
        raise DataError("missing image_id", file=path, row=guid, field=f"{key}[{i}].image_id")
    v = _fields(f, guid, path, key, i, image_id="id", title="text", caption="text", imgUrl="url", url="url")
    return Candidate(id=v["image_id"], modality="image", title=v["title"], text=v["caption"],
                     image_url=v["imgUrl"] or v["url"], source=v["url"] or "")


def _txt_candidate(f: dict[str, Any], guid: str, path: str, key: str, i: int) -> Candidate:
    if f.get("snippet_id") in (None, ""):
        raise DataError("missing snippet_id", file=path, row=guid, field=f"{key}[{i}].snippet_id")
    if not isinstance(f.get("fact", ""), str):
        raise DataError("must be a string", file=path, row=guid, field=f"{key}[{i}].fact")
    v = _fields(f, guid, path, key, i, snippet_id="id", title="text", fact="text", url="url")
    return Candidate(id=v["snippet_id"], modality="text", title=v["title"], text=v["fact"], source=v["url"] or "")


def _pool_order(guid: str, cid: str) -> str:
    return hashlib.sha1(f"{guid}\x00{cid}".encode()).hexdigest()


def webqa_sample(guid: str, row: Any, *, path: str = "<webqa>", shuffle: bool = True) -> Sample:
    """One WebQA record as a Sample; raises DataError naming path, Guid and field."""
    if not isinstance(row, dict):
        raise DataError(f"record must be an object, got {type(row).__name__}", file=path, row=guid)
    q = row.get("Q")
    if not isinstance(q, str) or not strip_quotes(q):
        raise DataError("missing or empty question" if q in (None, "") or isinstance(q, str)
                        else f"must be a string, got {type(q).__name__}", file=path, row=guid, field="Q")
    a = row.get("A", [])
    if isinstance(a, str):
        a = [a]
    if not isinstance(a, list) or not all(isinstance(x, str) for x in a):
        raise DataError("must be a list of strings", file=path, row=guid, field="A")
    gid = row.get("Guid", guid)
    if str(gid) != str(guid):
        raise DataError(f"Guid {gid!r} differs from its key", file=path, row=guid, field="Guid")
    cands: list[Candidate] = []
    gold: list[str] = []
    labelled = any(k in row for k in ("img_posFacts", "img_negFacts", "txt_posFacts", "txt_negFacts"))
    if labelled:
        groups = [("img_posFacts", True), ("img_negFacts", False), ("txt_posFacts", True), ("txt_negFacts", False)]
    else:
        groups = [("img_Facts", False), ("txt_Facts", False)]
    for key, pos in groups:
        make = _img_candidate if key.startswith("img") else _txt_candidate
        for i, f in enumerate(_facts(row, key, guid, path)):
            c = make(f, guid, path, key, i)
            cands.append(c)
            if pos:
                gold.append(c.id)
    seen: set[str] = set()
    for c in cands:
        if c.id in seen:
            raise DataError(f"candidate id {c.id!r} appears twice", file=path, row=guid, field="candidates")
        seen.add(c.id)
    if shuffle:  # pos facts come first in the file: do not let pool position give the gold away
        cands.sort(key=lambda c: _pool_order(guid, c.id))
    meta: dict[str, Any] = {"split": row.get("split", ""), "topic": row.get("topic", ""), "labelled": labelled}
    for k in ("Keywords_A", "keywords"):
        if k in row:
            meta["keywords"] = row[k]
    return Sample(qid=str(guid), question=strip_quotes(q), answers=[strip_quotes(x) for x in a], candidates=cands,
                  gold_ids=gold, category=str(row.get("Qcate") or ""), dataset="webqa", meta=meta)


def _load_json(path: Path) -> Any:
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg}: line {e.lineno} column {e.colno}); is the file truncated?",
                        file=str(path)) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"unreadable ({e}); is the file truncated?", file=str(path)) from None


def load_webqa(path: str | os.PathLike[str], *, images_tsv: str | os.PathLike[str] | None = None,
               images_lineidx: str | os.PathLike[str] | None = None, split: str | None = None,
               shuffle: bool = True, skip_bad: bool = False, report: list[DataError] | None = None,
               limit: int | None = None) -> Iterator[Sample]:
    """Samples from an official WebQA JSON file (train/val/test style).

    The dict is parsed once (json cannot stream a dict) but Samples are built one at a time. With
    `images_tsv`, each image candidate's `image_bytes` is read from the tsv when its sample is yielded.
    `split` keeps only records of that split (WebQA_train_val.json holds both).
    """
    p = Path(path)
    data = _load_json(p)
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object keyed by Guid, got {type(data).__name__}", file=str(p))
    store = WebQAImages(images_tsv, images_lineidx) if images_tsv is not None else None
    n = 0
    try:
        for guid, row in data.items():
            if limit is not None and n >= limit:
                return
            if split is not None and isinstance(row, dict) and row.get("split") != split:
                continue
            try:
                s = webqa_sample(guid, row, path=str(p), shuffle=shuffle)
                if store is not None:
                    for c in s.candidates:
                        if c.modality == "image":
                            try:
                                c.image_bytes = store.get_bytes(c.id)
                            except DataError as e:
                                raise DataError(e.reason, file=str(p), row=guid,
                                                field=f"image {c.id} in {store.tsv.name}") from None
            except DataError as e:
                bad_row(e, skip_bad, report)
                continue
            n += 1
            yield s
    finally:
        if store is not None:
            store.close()


TSV_COLUMNS = ("Guid", "Qcate", "Q", "A", "Keywords_A", "Output_conf", "Output")


def _json_cell(cell: str, *, path: str, row: Any, field: str) -> Any:
    cell = cell.strip()
    if len(cell) >= 2 and cell[0] == '"' and cell[-1] == '"' and cell[1:2] in "[{":  # CSV-quoted JSON
        cell = cell[1:-1].replace('""', '"')
    try:
        return json.loads(cell)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", file=path, row=row, field=field) from None


def load_webqa_tsv(path: str | os.PathLike[str], *, skip_bad: bool = False, report: list[DataError] | None = None,
                   limit: int | None = None) -> Iterator[Sample]:
    """Question-only samples from WebQA's `val_{img,txt}_queries.tsv(.gz)`.

    meta: `keywords` (Keywords_A, what the official QA-Acc matches; "" where the file says TBD),
    `baseline_output` (the VLP baseline's beam outputs, best first) and `baseline_conf` (their scores).
    """
    p = Path(path)
    header: list[str] | None = None
    n = 0
    for lineno, line in iter_lines(p):
        cells = line.rstrip("\r\n").split("\t")
        if header is None:
            header = [c.strip() for c in cells]
            missing = [c for c in ("Guid", "Qcate", "Q", "A") if c not in header]
            if missing:
                raise DataError(f"header lacks columns {missing} (expected {list(TSV_COLUMNS)})", file=str(p),
                                row=lineno)
            continue
        if limit is not None and n >= limit:
            return
        try:
            if len(cells) != len(header):
                raise DataError(f"{len(cells)} columns, header has {len(header)}", file=str(p), row=lineno)
            r = dict(zip(header, cells))
            guid = r["Guid"].strip()
            if not guid:
                raise DataError("empty", file=str(p), row=lineno, field="Guid")
            q = strip_quotes(r["Q"])
            if not q:
                raise DataError("empty question", file=str(p), row=lineno, field="Q")
            a = _json_cell(r["A"], path=str(p), row=lineno, field="A")
            if isinstance(a, str):
                a = [a]
            if not isinstance(a, list):
                raise DataError("must be a JSON list of strings", file=str(p), row=lineno, field="A")
            meta: dict[str, Any] = {"split": "val"}
            if "Keywords_A" in r:
                kw = r["Keywords_A"].strip()
                meta["keywords"] = "" if kw == "TBD" else kw
            if r.get("Output", "").strip():
                meta["baseline_output"] = [str(x) for x in
                                           _as_list(_json_cell(r["Output"], path=str(p), row=lineno, field="Output"))]
            if r.get("Output_conf", "").strip():
                meta["baseline_conf"] = _as_list(_json_cell(r["Output_conf"], path=str(p), row=lineno,
                                                            field="Output_conf"))
            s = Sample(qid=guid, question=q, answers=[strip_quotes(str(x)) for x in a],
                       category=r["Qcate"].strip(), dataset="webqa", meta=meta)
        except DataError as e:
            bad_row(e if e.file else DataError(e.reason, file=str(p), row=lineno, field=e.field), skip_bad, report)
            continue
        n += 1
        yield s


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]
