"""The hybrid index for real: MiniLM embeddings, faiss, bm25s, on-disk store, manifest checks, pool ranking."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval.bm25 import BM25Index
from mmrag_rft.retrieval.embed import DEFAULT_EMBEDDER, canonical_name, get_embedder
from mmrag_rft.retrieval.build import build_index
from mmrag_rft.retrieval.fusion import reciprocal_rank_fusion
from mmrag_rft.retrieval.index import HybridIndex
from mmrag_rft.retrieval.layout import IndexLoadError, RetrievalConfig, corpus_hash
from mmrag_rft.retrieval.pool import rank_pool

PASSAGES = {
    "eiffel": ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
                               "completed in 1889 for the World's Fair."),
    "colosseum": ("Colosseum", "The Colosseum is an elliptical amphitheatre in the centre of Rome, built of "
                               "travertine limestone and concrete."),
    "nile": ("Nile", "The Nile is a major north-flowing river in northeastern Africa that drains into the "
                     "Mediterranean Sea."),
    "everest": ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, located in the "
                                 "Mahalangur Himal sub-range of the Himalayas."),
    "photosynthesis": ("Photosynthesis", "Photosynthesis is the process by which plants use sunlight, water and "
                                         "carbon dioxide to create oxygen and energy in the form of sugar."),
    "python": ("Python (programming language)", "Python is a high-level, general-purpose programming language "
                                                "whose design emphasises code readability."),
    "mona": ("Mona Lisa", "The Mona Lisa is a half-length portrait painting by Leonardo da Vinci, kept at the "
                          "Louvre."),
    "penguin": ("Emperor penguin", "The emperor penguin is the tallest and heaviest of all living penguin "
                                   "species and is endemic to Antarctica."),
    "jazz": ("Jazz", "Jazz is a music genre that originated in the African-American communities of New Orleans "
                     "in the late 19th century."),
    "volcano": ("Mount Vesuvius", "Mount Vesuvius is a somma-stratovolcano near Naples whose eruption in AD 79 "
                                  "destroyed Pompeii."),
    "coffee": ("Coffee", "Coffee is a beverage brewed from roasted coffee beans, the seeds of berries from "
                         "Coffea species."),
    "chess": ("Chess", "Chess is a board game for two players in which each player controls sixteen pieces on "
                       "an eight-by-eight grid."),
    "dna": ("DNA", "Deoxyribonucleic acid is a polymer of two chains that coil around each other to form a "
                   "double helix carrying genetic instructions."),
    "moon": ("Apollo 11", "Apollo 11 was the spaceflight that first landed humans on the Moon, in July 1969."),
    "tea": ("Tea", "Tea is an aromatic beverage prepared by pouring hot water over cured leaves of Camellia "
                   "sinensis."),
    "bicycle": ("Bicycle", "A bicycle is a human-powered, pedal-driven vehicle with two wheels attached to a "
                           "frame, one behind the other."),
    "piano": ("Piano", "The piano is a keyboard instrument in which felt-covered hammers strike strings."),
    "sahara": ("Sahara", "The Sahara is the largest hot desert in the world, covering much of North Africa."),
    "vaccine": ("Vaccine", "A vaccine is a biological preparation that provides active acquired immunity to a "
                           "particular infectious disease."),
    "bridge": ("Golden Gate Bridge", "The Golden Gate Bridge is a suspension bridge spanning the strait that "
                                     "connects San Francisco Bay to the Pacific Ocean."),
}
CAPTIONS = {
    "img-cat": ("Cat on a sofa", "A ginger tabby cat sleeping on a red sofa."),
    "img-astronaut": ("Astronaut portrait", "Portrait of an astronaut in a white space suit with the flag."),
    "img-coffee": ("Cup of espresso", "A cup of espresso coffee on a saucer, seen from above."),
    "img-rocket": ("Rocket on the launch pad", "A rocket standing on its launch pad before lift-off."),
    "img-camera": ("Man with a camera", "A photographer with a camera on a tripod in a park."),
    "img-horse": ("Horse in a field", "A brown horse grazing in a green field."),
    "img-snow": ("Snowy street", "A street covered in snow at night, with lamps."),
    "img-sunset": ("Sunset at the beach", "The sun setting over the sea, orange sky."),
    "img-train": ("Steam train", "A black steam locomotive pulling carriages across a viaduct."),
    "img-tulips": ("Tulip field", "Rows of red and yellow tulips in the Netherlands."),
}


def make_corpus() -> list[Candidate]:
    out = [Candidate(id=k, modality="text", title=t, text=x, source="test") for k, (t, x) in PASSAGES.items()]
    out += [Candidate(id=k, modality="image", title=t, text=x, source="test") for k, (t, x) in CAPTIONS.items()]
    return out


def _png_bytes(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def embedder():
    return get_embedder()


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder):
    """One index over the 30-candidate corpus, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("idx")
    (root / "pics").mkdir()
    (root / "pics" / "horse.png").write_bytes(_png_bytes((120, 80, 40)))
    corpus = make_corpus()
    by_id = {c.id: c for c in corpus}
    by_id["img-cat"].image_bytes = _png_bytes((200, 120, 40))  # WebQA-style inline bytes
    by_id["img-horse"].image_path = "pics/horse.png"  # relative to the corpus folder
    by_id["img-snow"].image_path = "pics/missing.png"  # a dangling reference must not fail the build
    out = root / "index"
    manifest = build_index(corpus + corpus[:3], out, RetrievalConfig(batch_size=7), base_dir=root,
                           embedder=embedder, progress=False)
    return out, manifest, corpus, root


# -- pure fusion -------------------------------------------------------------------------------------------

def test_rrf_hand_computed():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [k for k, _ in fused] == ["a", "c", "b", "d"]
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)


def test_rrf_ties_keep_first_seen_order_and_k_matters():
    assert [k for k, _ in reciprocal_rank_fusion([["x", "y"], ["y", "x"]], k=0)] == ["x", "y"]
    assert dict(reciprocal_rank_fusion([["x", "y"], ["y", "x"]], k=0))["x"] == pytest.approx(1.5)
    # with k=0 a single first place (1.0) beats two second places (0.5 + 0.5 = 1.0)? equal: first seen wins
    assert [k for k, _ in reciprocal_rank_fusion([["p", "q"], ["r", "q"]], k=0)] == ["p", "q", "r"]
    # weights scale each list's votes: the second list outvotes the first at weight 3
    assert [k for k, _ in reciprocal_rank_fusion([["x", "y"], ["y", "x"]], k=0, weights=[1, 3])] == ["y", "x"]
    with pytest.raises(ValueError, match="2 rankings"):
        reciprocal_rank_fusion([["x"], ["y"]], weights=[1])


def test_embedder_is_normalised_and_shared(embedder):
    assert canonical_name("default") == canonical_name("minilm") == DEFAULT_EMBEDDER
    assert get_embedder("minilm") is embedder
    v = embedder.encode(["a cat", "the stock market fell"])
    assert v.dtype == np.float32 and v.shape == (2, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_bm25_roundtrip_and_stopword_query(tmp_path):
    b = BM25Index()
    b.add(["The Eiffel tower is in Paris", "A cat sits on the mat"])
    b.add(["Paris is the capital of France", "the of and"])
    b.finalize()
    assert [r for r, _ in b.search("Where is the Eiffel tower?", 10)] == [0]
    assert b.search("the of", 10) == []  # stopwords only: no opinion, and no match on the all-stopword doc
    b.save(tmp_path / "bm")
    c = BM25Index.load(tmp_path / "bm")
    assert len(c) == 4
    assert c.search("paris cat", 3) == b.search("paris cat", 3)
    assert c.search("paris cat", 3)[0][0] == 1


# -- the persistent index ----------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("Which tower in Paris was built for the 1889 World's Fair?", "eiffel"),
    ("highest mountain in the Himalayas", "everest"),
    ("how do plants turn sunlight into sugar", "photosynthesis"),
    ("picture of a cat sleeping on a couch", "img-cat"),
    ("steam locomotive", "img-train"),
    ("Leonardo da Vinci portrait in the Louvre", "mona"),
])
def test_search_finds_the_right_candidate_first(built, query, expected):
    idx = HybridIndex.load(built[0])
    hits = idx.search(query, top_n=5)
    assert hits[0].id == expected
    assert len(hits) == 5 and len({h.id for h in hits}) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hit_scores_are_rrf_of_the_two_ranks(built):
    idx = HybridIndex.load(built[0])
    hits = idx.search("Golden Gate suspension bridge San Francisco", top_n=10)
    top = hits[0]
    assert top.id == "bridge" and top.dense_rank == 1 and top.bm25_rank == 1
    assert top.score == pytest.approx(2 / 61)
    for h in hits:
        expect = sum(1 / (60 + r) for r in (h.dense_rank, h.bm25_rank) if r is not None)
        assert h.score == pytest.approx(expect)
    dense_only = idx.search("Golden Gate suspension bridge San Francisco", top_n=3, use_bm25=False)
    assert all(h.bm25_rank is None for h in dense_only)
    assert dense_only[0].score == pytest.approx(dense_only[0].dense_score) and 0.3 < dense_only[0].score <= 1.0


def test_manifest_store_and_images(built):
    out, manifest, corpus, root = built
    assert manifest.count == len(corpus) == 30  # the three repeated candidates were dropped
    assert manifest.embedder == DEFAULT_EMBEDDER and manifest.dim == 384
    assert manifest.corpus_hash == corpus_hash(corpus)
    assert manifest.num_images == 2  # inline bytes + the relative file; the missing one is not counted
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["count"] == 30 and on_disk["config"]["rrf_k"] == 60
    idx = HybridIndex.load(out)
    assert len(idx) == 30 and "eiffel" in idx and "nope" not in idx
    assert idx.get("nile").text.startswith("The Nile is a major")
    assert idx.get("python").title == "Python (programming language)"
    cat = idx.image_path("img-cat")
    assert cat is not None and cat.parent == out / "images" and cat.read_bytes() == _png_bytes((200, 120, 40))
    horse = idx.image_path("img-horse")
    assert horse is not None and horse.parent == out / "images"
    assert horse.read_bytes() == (root / "pics" / "horse.png").read_bytes()
    assert idx.image_path("img-snow") is None and idx.get("img-snow").image_path == "pics/missing.png"
    assert idx.image_path("eiffel") is None
    with pytest.raises(KeyError, match="nope"):
        idx.get("nope")
    assert idx.matches(corpus + corpus[:2])
    changed = make_corpus()
    changed[0].text += " Changed."
    assert not idx.matches(changed)
    assert [c.id for c in idx] == [c.id for c in corpus]


def _copy(built, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(built[0], dst)
    return dst


def test_embedder_mismatch_is_detected(built, tmp_path):
    d = _copy(built, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["embedder"] = "sentence-transformers/all-mpnet-base-v2"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexLoadError, match=r"manifest\.json.*all-mpnet-base-v2.*all-MiniLM-L6-v2"):
        HybridIndex.load(d, expect_embedder="default")
    with pytest.raises(IndexLoadError, match="all-mpnet-base-v2"):
        HybridIndex.load(d, embedder=get_embedder())
    assert HybridIndex.load(built[0], expect_embedder="minilm").manifest.count == 30


def test_stale_or_incomplete_index_is_detected(built, tmp_path):
    d = _copy(built, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["count"] = 31
    m["files"] = {}
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexLoadError, match=r"offsets\.npy: holds 30 rows but manifest\.json says 31"):
        HybridIndex.load(d)
    m["count"] = 30
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexLoadError, match="format 99"):
        HybridIndex.load(d)
    d2 = _copy(built, tmp_path / "b")
    (d2 / "dense.faiss").unlink()
    with pytest.raises(IndexLoadError, match=r"dense\.faiss: missing"):
        HybridIndex.load(d2)
    d3 = _copy(built, tmp_path / "c")
    with open(d3 / "candidates.jsonl", "ab") as f:
        f.write(b'{"id":"extra","modality":"text"}\n')
    with pytest.raises(IndexLoadError, match=r"candidates\.jsonl: .* bytes but manifest\.json recorded"):
        HybridIndex.load(d3)
    with pytest.raises(IndexLoadError, match="manifest.json: missing"):
        HybridIndex.load(tmp_path)
    with pytest.raises(IndexLoadError, match="no such index folder"):
        HybridIndex.load(tmp_path / "absent")


def test_failed_build_leaves_no_partial_index(tmp_path, embedder):
    corpus = make_corpus()

    def exploding():
        for i, c in enumerate(corpus):
            if i == 20:
                raise RuntimeError("disk on fire")
            yield c

    cfg = RetrievalConfig(batch_size=8)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_index(exploding(), tmp_path / "fresh", cfg, embedder=embedder, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the target nor a temp folder

    good = tmp_path / "idx"
    build_index(corpus[:10], good, cfg, embedder=embedder, progress=False)
    before = json.loads((good / "manifest.json").read_text())
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_index(exploding(), good, cfg, embedder=embedder, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    idx = HybridIndex.load(good)  # the previous index is intact
    assert idx.manifest.corpus_hash == before["corpus_hash"] == corpus_hash(corpus[:10])

    build_index(corpus, good, cfg, embedder=embedder, progress=False)  # a successful rebuild replaces it
    assert HybridIndex.load(good).manifest.count == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_refuses_to_overwrite_a_non_index_folder(tmp_path, embedder):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("precious")
    with pytest.raises(IndexLoadError, match="not an index folder"):
        build_index(make_corpus(), tmp_path / "docs", embedder=embedder, progress=False)
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "precious"
    with pytest.raises(ValueError, match="empty"):
        build_index([], tmp_path / "empty", embedder=embedder, progress=False)
    assert not (tmp_path / "empty").exists()


def test_bm25_only_index_needs_no_embedder(tmp_path):
    out = tmp_path / "bm"
    m = build_index(make_corpus(), out, RetrievalConfig(use_dense=False), progress=False)
    assert m.embedder is None and not (out / "dense.faiss").exists()
    idx = HybridIndex.load(out)
    hits = idx.search("Vesuvius eruption Pompeii", top_n=3)
    assert hits[0].id == "volcano" and hits[0].dense_rank is None and hits[0].bm25_rank == 1
    with pytest.raises(ValueError, match="at least one"):
        RetrievalConfig(use_dense=False, use_bm25=False)


# -- per-question pools ------------------------------------------------------------------------------------

def test_rank_pool_on_a_hand_made_pool(embedder):
    corpus = make_corpus()
    hits = rank_pool("Where does the Nile river flow?", corpus, top_n=3, embedder=embedder)
    assert [h.id for h in hits][0] == "nile" and len(hits) == 3
    assert hits[0].candidate is corpus[2]  # the caller's own objects come back
    assert rank_pool("anything", [], top_n=3) == []
    assert len(rank_pool("tea", corpus[:4], top_n=10, embedder=embedder)) == 4


def _webqa_pool(rec: dict) -> tuple[list[Candidate], set[str]]:
    cands = [Candidate(id=str(f["image_id"]), modality="image", title=f.get("title", ""), text=f.get("caption", ""))
             for f in rec["img_posFacts"] + rec["img_negFacts"]]
    cands += [Candidate(id=f["snippet_id"], modality="text", title=f.get("title", ""), text=f.get("fact", ""))
              for f in rec["txt_posFacts"] + rec["txt_negFacts"]]
    return cands, {str(f["image_id"]) for f in rec["img_posFacts"]}


def test_rank_pool_on_real_webqa(shared_data, embedder):
    """Captions stand in for pixels. Gold images should be ranked far above chance by the fused ranking."""
    with gzip.open(shared_data / "webqa" / "val_records.json.gz", "rt") as f:
        records = list(json.load(f).values())[:6]
    recalls, chance = [], []
    for rec in records:
        cands, gold = _webqa_pool(rec)
        hits = rank_pool(rec["Q"], cands, top_n=5, embedder=embedder)
        assert len(hits) == 5 and {h.id for h in hits} <= {c.id for c in cands}
        recalls.append(len(gold & {h.id for h in hits}) / len(gold))
        chance.append(5 / len(cands))
    assert np.mean(recalls) >= 0.5 > 2 * np.mean(chance)


def _fresh(tmp_path, embedder, **cfg):
    out = tmp_path / "idx"
    build_index(make_corpus(), out, RetrievalConfig(**cfg), embedder=embedder, progress=False)
    return out


def _flip_same_size(path, old: bytes, new: bytes):
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))


def test_same_size_corruption_and_swapped_ids_are_caught_on_load(tmp_path, embedder):
    from mmrag_rft.retrieval.layout import IndexCorruptError

    out = _fresh(tmp_path, embedder)
    _flip_same_size(out / "candidates.jsonl", b'"text":"', b'"text";"')
    with pytest.raises(IndexCorruptError, match="candidates.jsonl: content does not match its checksum"):
        HybridIndex.load(out)
    out = _fresh(tmp_path, embedder)
    ids = json.loads((out / "ids.json").read_text())
    a, b = next((x, y) for x in ids for y in ids if x != y and len(x) == len(y))
    raw = (out / "ids.json").read_bytes()  # swap two ids byte for byte: same size, same format
    raw = raw.replace(f'"{a}"'.encode(), b"\0").replace(f'"{b}"'.encode(), f'"{a}"'.encode())
    (out / "ids.json").write_bytes(raw.replace(b"\0", f'"{b}"'.encode()))
    with pytest.raises(IndexCorruptError, match="ids.json"):
        HybridIndex.load(out)


def test_big_files_are_checked_on_read_and_by_verify(tmp_path, embedder, monkeypatch):
    """Files over the load-time budget are not hashed on load; a damaged record then fails as IndexCorruptError
    (a server error), its id is checked against ids.json, and `mmrag verify` finds it."""
    from typer.testing import CliRunner

    from mmrag_rft.cli import app
    from mmrag_rft.retrieval import layout as layout_mod
    from mmrag_rft.retrieval.layout import IndexCorruptError

    out = _fresh(tmp_path, embedder, use_dense=False)
    ok = CliRunner().invoke(app, ["verify", str(out)])
    assert ok.exit_code == 0 and "match their checksums" in ok.output
    first = HybridIndex.load(out).ids[0]
    _flip_same_size(out / "candidates.jsonl", b'{"id":"', b'{"id";"')
    monkeypatch.setattr(layout_mod, "VERIFY_ON_LOAD_BYTES", 0)
    idx = HybridIndex.load(out)
    with pytest.raises(IndexCorruptError, match="record 0 is unreadable"):
        idx.get(first)
    idx.close()
    r = CliRunner().invoke(app, ["verify", str(out)])
    assert r.exit_code == 2 and "checksum" in r.output and "Traceback" not in r.output


def test_nan_vectors_are_refused_at_build(tmp_path, embedder):
    import numpy as np

    class NaNAfterTen:
        name, dim = embedder.name, embedder.dim

        def encode(self, texts):
            v = embedder.encode(texts)
            v[min(10, len(v) - 1)] = np.nan
            return v

    with pytest.raises(ValueError, match="NaN or infinite"):
        build_index(make_corpus(), tmp_path / "idx", RetrievalConfig(), embedder=NaNAfterTen(), progress=False)
    assert not (tmp_path / "idx").exists()
