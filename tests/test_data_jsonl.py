"""Our JSONL formats: round trip, path resolution, validation messages, format detection."""

from __future__ import annotations

import gzip
import re
import json
from pathlib import Path

import pytest
from PIL import Image

from mmrag_rft.data import (Candidate, DataError, Sample, detect_format, load_corpus, load_samples,
                            load_samples_jsonl, write_corpus_jsonl, write_samples_jsonl)
from mmrag_rft.data.images import load_image


def _sample(qid: str = "q1", img: str | None = None) -> Sample:
    return Sample(qid=qid, question="What colour?", answers=["red"], category="color", dataset="mine",
                  candidates=[Candidate(id="c1", modality="text", title="T", text="It is red."),
                              Candidate(id="c2", modality="image", title="I", text="a red ball", image_path=img)],
                  gold_ids=["c2"], meta={"keywords": "red"})


def test_round_trip_with_relative_image_paths(tmp_path: Path) -> None:
    (tmp_path / "data" / "images").mkdir(parents=True)
    img = tmp_path / "data" / "images" / "ball.png"
    Image.new("RGB", (3, 3), (255, 0, 0)).save(img)
    out = tmp_path / "data" / "samples.jsonl"
    assert write_samples_jsonl([_sample(img=str(img)), _sample("q2")], out) == 2
    row = json.loads(out.read_text().splitlines()[0])
    assert row["candidates"][1]["image_path"] == "images/ball.png"
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    back = list(load_samples_jsonl(moved / "samples.jsonl"))
    assert [s.qid for s in back] == ["q1", "q2"]
    assert back[0].candidate("c2").image_path == str((moved / "images" / "ball.png").resolve())
    assert load_image(back[0].candidate("c2")).getpixel((1, 1)) == (255, 0, 0)
    expected = _sample(img=back[0].candidate("c2").image_path)
    assert back[0] == expected


def test_round_trip_bytes(tmp_path: Path) -> None:
    s = _sample()
    s.candidates[1].image_bytes = b"\x89PNG fake"
    out = tmp_path / "s.jsonl"
    write_samples_jsonl([s], out, with_bytes=True)
    (b,) = load_samples(out)
    assert b.candidate("c2").image_bytes == b"\x89PNG fake"


def test_corpus_round_trip_and_gzip(tmp_path: Path) -> None:
    cands = [Candidate(id="a", modality="text", text="x"), Candidate(id="b", modality="table", text="h | v")]
    out = tmp_path / "corpus.jsonl"
    assert write_corpus_jsonl(cands, out) == 2
    assert list(load_corpus(out)) == cands
    gz = tmp_path / "corpus.bin"  # no .gz extension: detected by magic bytes
    gz.write_bytes(gzip.compress(out.read_bytes()))
    assert list(load_corpus(gz)) == cands
    assert detect_format(gz) == "corpus" and detect_format(out) == "corpus"


def test_validation_messages(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    rows = [json.dumps({"qid": "a", "question": "ok?"}),
            "",
            json.dumps({"qid": "b"}),
            json.dumps({"qid": "c", "question": "q", "candidates": [{"id": "x", "modality": "video"}]}),
            json.dumps({"qid": "d", "question": "q", "candidates": [{"id": "x", "modality": "text"}],
                        "gold_ids": ["y"]}),
            "[1, 2]",
            json.dumps({"qid": "a", "question": "dup"})]
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as ei:
        list(load_samples_jsonl(p))
    assert str(ei.value) == f"{p}, row 3, field 'question': missing required field"
    report: list[DataError] = []
    got = list(load_samples(p, "jsonl", skip_bad=True, report=report))
    assert [s.qid for s in got] == ["a"]
    assert [(e.row, e.field) for e in report] == [(3, "question"), (4, "candidates[0].modality"),
                                                  (5, "gold_ids"), (6, None), (7, "qid")]
    assert "duplicate qid 'a'" in str(report[-1])


def test_corpus_duplicate_and_missing_fields(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "modality": "text"}\n{"id": "a", "modality": "text"}\n{"modality": "text"}\n')
    report: list[DataError] = []
    assert [c.id for c in load_corpus(p, skip_bad=True, report=report)] == ["a"]
    assert [(e.row, e.field) for e in report] == [(2, "id"), (3, "id")]


def test_limit_and_format_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_text("".join(json.dumps({"qid": f"q{i}", "question": "x?"}) + "\n" for i in range(5)))
    assert len(list(load_samples(p, limit=2))) == 2
    with pytest.raises(DataError, match="do not apply to the jsonl format"):
        load_samples(p, images_tsv="x.tsv")
    with pytest.raises(DataError, match="unknown format"):
        load_samples(p, "csv")  # type: ignore[arg-type]
    e = tmp_path / "empty.jsonl"
    e.write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        detect_format(e)
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_samples(odd)
    with pytest.raises(DataError, match="file not found"):
        load_samples(tmp_path / "nope.jsonl")


def test_truncated_gzip_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl.gz"
    body = "".join(json.dumps({"qid": f"q{i}", "question": "x" * 50}) + "\n" for i in range(200)).encode()
    p.write_bytes(gzip.compress(body)[:300])
    with pytest.raises(DataError, match="truncated"):
        list(load_samples(p, "jsonl"))


_GOOD = {"qid": "q1", "question": "What is red?", "answers": ["a rose"], "gold_ids": ["c1"],
         "candidates": [{"id": "c1", "modality": "text", "text": "Roses are red."}]}


@pytest.mark.parametrize("path, value, field, says", [
    (("qid",), None, "qid", "null"),
    (("candidates", 0, "id"), None, "candidates[0].id", "null"),
    (("candidates", 0, "text"), {"en": "Roses"}, "candidates[0].text", "an object"),
    (("candidates", 0, "title"), ["a", "b"], "candidates[0].title", "a list"),
    (("answers",), [{"answer": "Mask"}], "answers[0]", "an object"),
    (("gold_ids",), [["c1"]], "gold_ids[0]", "a list"),
    (("meta",), [1, 2], "meta", "a list"),
    (("candidates", 0, "image_path"), 7, "candidates[0].image_path", "int"),
])
def test_wrong_types_are_errors_naming_the_field_not_strings(tmp_path: Path, path, value, field, says) -> None:
    """A null id never becomes the id "None", an object text never its Python repr; --skip-bad skips exactly
    that row."""
    import copy

    bad = copy.deepcopy(_GOOD)
    target = bad
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    bad["qid"] = bad["qid"] if path != ("qid",) else None
    f = tmp_path / "s.jsonl"
    other = {**copy.deepcopy(_GOOD), "qid": "q2"}
    f.write_text(json.dumps(bad) + "\n" + json.dumps(other) + "\n")
    with pytest.raises(DataError, match=rf"row 1, field '{re.escape(field)}': .*{says}"):
        list(load_samples_jsonl(f))
    report: list = []
    kept = list(load_samples_jsonl(f, skip_bad=True, report=report))
    assert [s.qid for s in kept] == ["q2"] and len(report) == 1


def test_numeric_ids_are_ids_and_numbers_are_text(tmp_path: Path) -> None:
    s = Sample.from_dict({"qid": 17, "question": "How many?", "answers": [3],
                          "candidates": [{"id": 5, "modality": "text", "text": 1984}], "gold_ids": [5]})
    assert (s.qid, s.answers, s.candidates[0].id, s.candidates[0].text, s.gold_ids) == ("17", ["3"], "5", "1984",
                                                                                        ["5"])


def test_webqa_image_id_that_is_a_list_is_an_error(tmp_path: Path) -> None:
    from mmrag_rft.data.webqa import webqa_sample

    row = {"Q": "q?", "A": ["a"], "img_posFacts": [{"image_id": [1, 2], "caption": "c"}], "txt_negFacts": []}
    with pytest.raises(DataError, match=r"field 'img_posFacts\[0\]\.image_id': must be a string or an integer id"):
        webqa_sample("g1", row)
    row["img_posFacts"][0] = {"image_id": 12, "caption": {"text": "c"}}
    with pytest.raises(DataError, match=r"img_posFacts\[0\]\.caption"):
        webqa_sample("g1", row)


def test_mmqa_read_as_our_jsonl_is_refused_not_stringified(shared_data) -> None:
    """MMQA's answers are objects: read as our JSONL they must be an error, not 2,441 answers like "{'answer': ..."."""
    mmqa = next((shared_data / "mmqa").glob("*dev*.jsonl*"))
    with pytest.raises(DataError, match=r"answers\[0\]|must be"):
        next(iter(load_samples_jsonl(mmqa)))


def test_the_text_evidence_example_has_its_gold_in_text_passages_among_other_modalities() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "text_evidence" / "questions.jsonl"
    samples = list(load_samples(path))
    assert len(samples) == 8
    for s in samples:
        by_id = {c.id: c for c in s.candidates}
        assert [by_id[g].modality for g in s.gold_ids] == ["text"]
        assert {c.modality for c in s.candidates} == {"text", "table", "image"}
        assert any(a.lower() in by_id[s.gold_ids[0]].text.lower() for a in s.answers)
