"""The shipped demo corpus: loads, is consistent, has real pictures, stays small."""

from __future__ import annotations

from collections import Counter

from mmrag_rft.data import demo_corpus_dir, detect_format, load_corpus, load_samples
from mmrag_rft.data.images import load_image

WEBQA_CATEGORIES = {"color", "shape", "number", "YesNo", "choose", "Others", "text"}


def test_demo_corpus_consistent() -> None:
    d = demo_corpus_dir()
    assert detect_format(d / "corpus.jsonl") == "corpus" and detect_format(d / "questions.jsonl") == "jsonl"
    corpus = {c.id: c for c in load_corpus(d / "corpus.jsonl")}
    assert len(corpus) == 40
    assert Counter(c.modality for c in corpus.values()) == {"text": 25, "image": 13, "table": 2}
    for c in corpus.values():
        assert c.title and c.text, c.id
        if c.modality == "image":
            im = load_image(c)
            assert im is not None and im.mode == "RGB" and max(im.size) <= 256, c.id
    questions = list(load_samples(d / "questions.jsonl"))
    assert len(questions) == 14
    cats = Counter(q.category for q in questions)
    assert set(cats) <= WEBQA_CATEGORIES and len(cats) >= 6
    for q in questions:
        assert q.answers and q.gold_ids, q.qid
        assert all(g in corpus for g in q.gold_ids), q.qid
    # every image question's answer keyword is readable from a gold caption or passage (text-only models)
    for q in questions:
        kw = q.meta.get("keywords")
        if kw and kw not in ("yes", "no"):
            gold_text = " ".join(corpus[g].display_text().lower() for g in q.gold_ids)
            assert kw.lower() in gold_text or q.answers[-1].lower() in gold_text, q.qid


def test_demo_corpus_small_with_readme() -> None:
    d = demo_corpus_dir()
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert size < 1_500_000
    readme = (d / "README.md").read_text()
    assert "CC0" in readme and "scikit-image" in readme
