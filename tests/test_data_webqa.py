"""WebQA loaders on the real shared val files and on small hand-made records."""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mmrag_rft.data import DataError, load_samples, load_webqa, load_webqa_tsv
from mmrag_rft.data.images import load_image
from mmrag_rft.data.webqa import WebQAImages, strip_quotes

GUID = "d5cb68e00dba11ecb1e81171463288e9"


def test_val_records_real(shared_data: Path) -> None:
    samples = {s.qid: s for s in load_webqa(shared_data / "webqa" / "val_records.json.gz")}
    assert len(samples) == 293
    s = samples[GUID]
    assert s.question == "Where is the digital clock located at the Genex tower ?"  # stray quotes gone
    assert s.answers == ["The digital clock is located at the Genex tower above the buildings top bridge."]
    assert s.category == "Others" and s.dataset == "webqa"
    assert s.gold_ids == ["30182592"]
    assert Counter(c.modality for c in s.candidates) == {"image": 17, "text": 16}
    gold = s.candidate("30182592")
    assert gold.modality == "image" and gold.title == "Jugotours Beograd Dec 2003"
    assert gold.text.startswith("Jugotours Beograd Dec 2003 Western Gate of Belgrade")
    assert gold.image_url.endswith("476px-Jugotours_Beograd_Dec_2003.jpg") and not gold.has_pixels
    assert s.meta == {"split": "val", "topic": "Unique Skyscrapers", "labelled": True}
    assert sum(len(x.candidates) for x in samples.values()) == 9531
    assert sum(len(x.gold_ids) for x in samples.values()) == 421
    assert Counter(x.category for x in samples.values())["YesNo"] == 95


def test_pool_order_hides_gold_and_is_deterministic(shared_data: Path) -> None:
    path = shared_data / "webqa" / "val_records.json.gz"
    a = [[c.id for c in s.candidates] for s in load_webqa(path, limit=20)]
    b = [[c.id for c in s.candidates] for s in load_webqa(path, limit=20)]
    assert a == b
    first_is_gold = sum(s.candidates[0].id in s.gold_set for s in load_webqa(path, limit=20))
    assert first_is_gold < 20  # file order would put a gold image first every time
    unshuffled = next(iter(load_webqa(path, shuffle=False)))
    assert unshuffled.candidates[0].id == "30182592"


def test_tsv_queries_real(shared_data: Path) -> None:
    img = list(load_webqa_tsv(shared_data / "webqa" / "val_img_queries.tsv.gz"))
    assert len(img) == 2224
    first = img[0]
    assert first.qid == "d5bbc7c80dba11ecb1e81171463288e9" and first.category == "YesNo"
    assert first.answers == ["No, a Minnetonka Rhododendron flower does not have petals in a cup shape."]
    assert first.meta["keywords"] == "No" and not first.candidates
    assert first.meta["baseline_output"][0] == "Yes , the Minnetonka Rhododendron flower has petals in a cup shape ."
    assert len(first.meta["baseline_conf"]) == 5 and first.meta["baseline_conf"][0] == pytest.approx(-2.341594696)
    by_id = {s.qid: s for s in img}
    assert by_id[GUID].meta["keywords"] == "Above the building's top bridge"
    txt = list(load_samples(shared_data / "webqa" / "val_txt_queries.tsv.gz"))  # auto-detected as TSV
    assert len(txt) == 2455 and txt[0].category == "text" and txt[0].meta["keywords"] == ""


def _record(**over):
    r = {"Q": '"Is it red?"', "A": ['"Yes"'], "Qcate": "YesNo", "Guid": "g1", "split": "train", "topic": "t",
         "img_posFacts": [{"image_id": 7, "title": "T7", "caption": "a red ball", "url": "u", "imgUrl": "iu"}],
         "img_negFacts": [{"image_id": 10000008, "title": "T8", "caption": "a blue box", "url": "u", "imgUrl": "iu"}],
         "txt_posFacts": [], "txt_negFacts": [{"title": "Ball", "fact": "Balls are round.", "url": "u",
                                                 "snippet_id": "g1_0"}]}
    r.update(over)
    return r


def _write_json(path: Path, data: dict, gz: bool = False) -> Path:
    raw = json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_small_record_and_gzip_by_magic(tmp_path: Path) -> None:
    # gzip content under a plain .json name: detected by magic bytes
    p = _write_json(tmp_path / "train.json", {"g1": _record()}, gz=True)
    (s,) = load_samples(p)
    assert s.question == "Is it red?" and s.answers == ["Yes"]
    assert sorted(c.id for c in s.candidates) == ["10000008", "7", "g1_0"]
    assert s.gold_ids == ["7"]
    assert s.candidate("g1_0").modality == "text" and s.candidate("g1_0").text == "Balls are round."


def test_test_style_record_has_no_gold(tmp_path: Path) -> None:
    rec = {"Q": "What is it?", "Qcate": "Others", "Guid": "t1", "split": "test",
           "img_Facts": [{"image_id": 3, "title": "x", "caption": "c", "url": "u", "imgUrl": "iu"}],
           "txt_Facts": [{"title": "y", "fact": "f", "url": "u", "snippet_id": "t1_0"}]}
    (s,) = load_webqa(_write_json(tmp_path / "test.json", {"t1": rec}))
    assert s.gold_ids == [] and s.answers == [] and len(s.candidates) == 2 and s.meta["labelled"] is False


def test_split_filter(tmp_path: Path) -> None:
    p = _write_json(tmp_path / "tv.json", {"g1": _record(), "g2": _record(Guid="g2", split="val")})
    assert [s.qid for s in load_webqa(p, split="val")] == ["g2"]


def test_errors_name_file_row_field(tmp_path: Path) -> None:
    bad = _record()
    del bad["Q"]
    p = _write_json(tmp_path / "bad.json", {"g1": _record(), "gbad": bad})
    with pytest.raises(DataError) as ei:
        list(load_webqa(p))
    e = ei.value
    assert (e.file, e.row, e.field) == (str(p), "gbad", "Q")
    assert str(e) == f"{p}, row gbad, field 'Q': missing or empty question"

    report: list[DataError] = []
    got = list(load_webqa(p, skip_bad=True, report=report))
    assert [s.qid for s in got] == ["g1"] and len(report) == 1 and report[0].row == "gbad"

    q = _write_json(tmp_path / "bad2.json", {"g1": _record(img_posFacts=[{"title": "no id"}])})
    with pytest.raises(DataError, match=r"row g1, field 'img_posFacts\[0\]\.image_id'"):
        list(load_webqa(q))


def test_truncated_json_is_one_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "cut.json"
    p.write_text(json.dumps({"g1": _record()})[:150])
    with pytest.raises(DataError, match="not valid JSON .*truncated"):
        list(load_webqa(p))
    g = tmp_path / "cut.json.gz"
    g.write_bytes(gzip.compress(json.dumps({"g1": _record()}).encode())[:60])
    with pytest.raises(DataError, match="truncated"):
        list(load_webqa(g))


def test_strip_quotes() -> None:
    assert strip_quotes('"\\"x\\""') == '\\"x\\"'
    assert strip_quotes('"Where is it?"') == "Where is it?"
    assert strip_quotes('He said "hi"') == 'He said "hi"'
    assert strip_quotes('""') == ""


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buf, "PNG")
    return buf.getvalue()


def _write_tsv(folder: Path, rows: list[tuple[str, bytes]]) -> Path:
    tsv, offsets, pos = bytearray(), [], 0
    for key, data in rows:
        line = f"{key}\t{base64.b64encode(data).decode()}\n".encode()
        offsets.append(pos)
        tsv += line
        pos += len(line)
    (folder / "imgs.tsv").write_bytes(bytes(tsv))
    (folder / "imgs.lineidx").write_text("".join(f"{o}\n" for o in offsets))
    return folder / "imgs.tsv"


def test_lineidx_random_access(tmp_path: Path) -> None:
    # rows at image_id % 1e7, as in WebQA's release: row 0 = 10000000, row 1 = 1, row 2 = 2
    tsv = _write_tsv(tmp_path, [("10000000", _png((255, 0, 0))), ("1", _png((0, 255, 0))),
                                ("2", _png((0, 0, 255)))])
    with WebQAImages(tsv) as store:
        assert len(store) == 3
        assert Image.open(io.BytesIO(store.get_bytes(2))).getpixel((0, 0)) == (0, 0, 255)
        assert Image.open(io.BytesIO(store.get_bytes("10000000"))).getpixel((0, 0)) == (255, 0, 0)
        with pytest.raises(DataError, match="image 5 not in the image tsv"):
            store.get_bytes(5)


def test_lineidx_fallback_scan_for_other_layouts(tmp_path: Path) -> None:
    tsv = _write_tsv(tmp_path, [("30000002", _png((9, 9, 9))), ("7", _png((1, 2, 3)))])
    with WebQAImages(tsv) as store:
        assert Image.open(io.BytesIO(store.get_bytes(7))).getpixel((0, 0)) == (1, 2, 3)


def test_webqa_with_images_tsv(tmp_path: Path) -> None:
    # ids 7 and 10000008 live at rows 7 and 8: pad rows 0..6
    rows = [(str(i), _png((i, i, i))) for i in range(7)] + [("7", _png((200, 10, 10))),
                                                           ("10000008", _png((10, 10, 200)))]
    tsv = _write_tsv(tmp_path, rows)
    p = _write_json(tmp_path / "train.json", {"g1": _record()})
    (s,) = load_webqa(p, images_tsv=tsv)
    img = load_image(s.candidate("7"))
    assert img.mode == "RGB" and img.size == (4, 3) and img.getpixel((0, 0)) == (200, 10, 10)
    assert load_image(s.candidate("10000008")).getpixel((1, 1)) == (10, 10, 200)
    assert s.candidate("g1_0").image_bytes is None

    p2 = _write_json(tmp_path / "missing.json", {"g1": _record(img_negFacts=[
        {"image_id": 4242, "title": "x", "caption": "c", "url": "u", "imgUrl": "i"}])})
    with pytest.raises(DataError) as ei:
        list(load_webqa(p2, images_tsv=tsv))
    assert ei.value.row == "g1" and "4242" in str(ei.value)
