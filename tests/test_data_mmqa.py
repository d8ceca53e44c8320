"""MMQA loader on the real dev file and on a small synthetic release with texts/tables/images files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from mmrag_rft.data import DataError, load_mmqa, load_samples
from mmrag_rft.data.images import load_image
from mmrag_rft.data.mmqa import linearise_table


def test_dev_real(shared_data: Path) -> None:
    samples = {s.qid: s for s in load_mmqa(shared_data / "mmqa" / "MMQA_dev.jsonl.gz")}
    assert len(samples) == 2441
    img_q = samples["bc2bade34338dadc9536bc852ec50919"]
    assert img_q.category == "ImageQ" and img_q.answers == ["horses"]
    assert img_q.gold_ids == ["5588a1833b8fa95fe1b0ed520e447d64"]
    gold = img_q.candidate("5588a1833b8fa95fe1b0ed520e447d64")
    assert gold.modality == "image" and gold.title == "Kentucky Derby"  # from the sibling MMQA_images file
    table_q = samples["a33985b1e8b2502fc18cc8147dc27db8"]
    assert table_q.answers == ["Mask"] and table_q.meta["type"] == "TableQ"
    assert table_q.meta["gold_all"] == ["8513db80c11ea439ab11eba406ec00d9"]
    assert table_q.gold_ids == []  # no tables file offline: the table candidate cannot exist
    assert len(table_q.candidates) == 14 and {c.modality for c in table_q.candidates} == {"image"}
    assert sum(1 for s in samples.values() if s.gold_ids) == 939


def test_dev_without_images_file(shared_data: Path) -> None:
    (s,) = load_mmqa(shared_data / "mmqa" / "MMQA_dev.jsonl.gz", images=False, limit=1)
    assert len(s.candidates) == 14 and all(c.title == "" for c in s.candidates)


def _release(tmp_path: Path) -> Path:
    q = {"qid": "q1", "question": "Which film?",
         "answers": [{"answer": "Mask", "type": "string", "modality": "table"},
                     {"answer": 3.0, "type": "number", "modality": "text"}],
         "metadata": {"type": "Compose(TableQ,TextQ)", "modalities": ["table", "text"],
                      "image_doc_ids": ["i1", "i2"], "text_doc_ids": ["t1", "t9"], "table_id": "tab1"},
         "supporting_context": [{"doc_id": "tab1", "doc_part": "table"}, {"doc_id": "t1", "doc_part": "text"},
                                {"doc_id": "t_missing", "doc_part": "text"}]}
    (tmp_path / "MMQA_dev.jsonl.gz").write_bytes(gzip.compress((json.dumps(q) + "\n").encode()))
    (tmp_path / "MMQA_texts.jsonl").write_text(
        json.dumps({"id": "t1", "title": "Ben Piazza", "text": "He acted in Mask.", "url": "u"}) + "\n"
        + json.dumps({"id": "zz", "title": "unused", "text": "x", "url": "u"}) + "\n")
    table = {"id": "tab1", "title": "Ben Piazza", "url": "u",
             "table": {"table_name": "Filmography", "header": [{"column_name": "Title"}, {"column_name": "Role"}],
                       "table_rows": [[{"text": "Mask"}, {"text": "Mr. Simms"}], [{"text": "Rocky"}, {"text": "-"}]]}}
    (tmp_path / "MMQA_tables.jsonl").write_text(json.dumps(table) + "\n")
    (tmp_path / "MMQA_images.jsonl").write_text(
        json.dumps({"id": "i1", "title": "Poster", "url": "u", "path": "i1.png"}) + "\n")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (5, 5), (0, 128, 0)).save(tmp_path / "imgs" / "i1.png")
    return tmp_path / "MMQA_dev.jsonl.gz"


def test_full_release_shape(tmp_path: Path) -> None:
    dev = _release(tmp_path)
    (s,) = load_samples(dev, image_dir=tmp_path / "imgs")
    assert [c.id for c in s.candidates] == ["tab1", "t1", "i1", "i2"]  # t9 has no passage: left out
    tab = s.candidate("tab1")
    assert tab.modality == "table" and tab.title == "Ben Piazza - Filmography"
    assert tab.text == "Title | Role\nMask | Mr. Simms\nRocky | -"
    assert s.candidate("t1").text == "He acted in Mask."
    assert s.gold_ids == ["tab1", "t1"] and s.meta["gold_all"] == ["tab1", "t1", "t_missing"]
    assert s.answers == ["Mask", "3"]
    assert s.meta["answer_modalities"] == ["table", "text"] and s.category == "Compose(TableQ,TextQ)"
    assert load_image(s.candidate("i1")).getpixel((2, 2)) == (0, 128, 0)
    assert s.candidate("i2").image_path is None and load_image(s.candidate("i2")) is None


def test_bad_rows(tmp_path: Path) -> None:
    good = {"qid": "a", "question": "q?", "answers": [{"answer": "x"}],
            "metadata": {"image_doc_ids": [], "text_doc_ids": []}, "supporting_context": []}
    no_meta = {"qid": "b", "question": "q?", "answers": []}
    p = tmp_path / "MMQA_dev.jsonl"
    p.write_text("\n".join([json.dumps(good), json.dumps(no_meta), "{not json", json.dumps(dict(good, qid="c"))]))
    with pytest.raises(DataError) as ei:
        list(load_mmqa(p))
    assert (ei.value.row, ei.value.field) == (2, "metadata")
    report: list[DataError] = []
    assert [s.qid for s in load_mmqa(p, skip_bad=True, report=report)] == ["a", "c"]
    assert [e.row for e in report] == [2, 3] and "not valid JSON" in str(report[1])


def test_linearise_table_empty_header() -> None:
    assert linearise_table({"table_rows": [[{"text": "a"}, {"text": "b"}]]}) == "a | b"
