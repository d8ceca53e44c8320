"""The HTTP API over a real index of the demo corpus and the tiny model: answers, corpus lookups, refusals."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mmrag_rft.pipeline import ABSTAIN_ANSWER, Pipeline, PipelineConfig
from mmrag_rft.serving.app import create_app

QUESTION = "What colour is the saucer under the cup of espresso?"


@pytest.fixture(scope="module")
def demo_rows() -> dict[str, dict]:
    from mmrag_rft.data import demo_corpus_dir

    rows = [json.loads(line) for line in (demo_corpus_dir() / "corpus.jsonl").read_text().splitlines() if line]
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from mmrag_rft.data import demo_corpus_dir, load_corpus
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.index import HybridIndex
    from mmrag_rft.retrieval.layout import RetrievalConfig

    out = tmp_path_factory.mktemp("serving") / "index"
    build_index(load_corpus(demo_corpus_dir() / "corpus.jsonl"), out, RetrievalConfig(), base_dir=demo_corpus_dir())
    idx = HybridIndex.load(out)
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def backend():
    from mmrag_rft.models.loading import load_backend

    return load_backend("tiny-lm")


@pytest.fixture(scope="module")
def pipeline(backend, index):
    return Pipeline(backend, index=index, config=PipelineConfig(top_n=6))


@pytest.fixture(scope="module")
def client(pipeline):
    with TestClient(create_app(pipeline)) as c:
        yield c


def _png(size=(24, 16), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


# -- asking ---------------------------------------------------------------------------------------------

def test_ask_returns_the_full_explanation(client, index, backend):
    r = client.post("/v1/ask", json={"question": QUESTION, "top_n": 5, "threshold": 0.0, "top_k": 2})
    assert r.status_code == 200, r.text
    d = r.json()
    expected_ids = [h.id for h in index.search(QUESTION, top_n=5)]
    assert [j["id"] for j in d["judgements"]] == expected_ids  # judged in retrieval order
    assert all(0.0 <= j["score"] <= 1.0 for j in d["judgements"])
    # threshold 0 lets everyone pass, so top_k=2 keeps the two best of the default fused order:
    # 1/(60 + place by P(yes)) + 1/(60 + place in retrieval), ties to the better P(yes)
    by_p = [j["id"] for j in sorted(d["judgements"], key=lambda j: -j["score"])]
    fused = {i: 1 / (61 + by_p.index(i)) + 1 / (61 + expected_ids.index(i)) for i in expected_ids}
    best_two = sorted(by_p, key=lambda i: -fused[i])[:2]
    assert [j["retrieval_rank"] for j in d["judgements"]] == [1, 2, 3, 4, 5]
    assert d["kept_ids"] == best_two
    assert [j["id"] for j in d["judgements"] if j["kept"]] == [i for i in expected_ids if i in best_two]
    assert not d["abstained"] and d["answer"] != ABSTAIN_ANSWER
    assert d["rank"] and set(d["rank"]) <= set(d["kept_ids"]) | set(d["unfaithful_ids"])
    assert d["models"]["policy"] == backend.model_id
    assert {"retrieve_s", "stage1_s", "stage2_s", "total_s", "queue_s"} <= set(d["timings"])
    # a display card for every judged candidate; images point at this server
    assert set(d["candidates"]) == set(expected_ids)
    for cid, card in d["candidates"].items():
        assert card["id"] == cid
        assert (card["image_url"] == f"/v1/images/{cid}") == (card["modality"] == "image")


def test_the_response_is_the_pipelines_result_field_for_field(client):
    """The API model is built from `Result`, so a field the pipeline adds (stage2_rank) reaches every answer."""
    import dataclasses

    from mmrag_rft.pipeline import Judgement, Result
    from mmrag_rft.serving.schemas import AskResponse, JudgementOut

    assert set(AskResponse.model_fields) == {f.name for f in dataclasses.fields(Result)} | {"candidates"}
    assert set(JudgementOut.model_fields) == {f.name for f in dataclasses.fields(Judgement)}
    assert "shown to stage 2" in JudgementOut.model_fields["kept"].description  # the dataclass's own comment
    body = client.post("/v1/ask", json={"question": QUESTION, "threshold": 0.0, "top_k": 2}).json()
    assert "stage2_rank" in body and isinstance(body["stage2_rank"], list)


def test_ask_top_k_zero_abstains(client):
    d = client.post("/v1/ask", json={"question": QUESTION, "top_k": 0}).json()
    assert d["abstained"] is True
    assert d["answer"] == ABSTAIN_ANSWER
    assert d["rank"] == [] and d["kept_ids"] == []
    assert len(d["judgements"]) == 6  # the pipeline's configured top_n
    assert d["timings"]["stage2_s"] == 0.0


def test_ask_multipart_with_query_image(client):
    r = client.post("/v1/ask", data={"question": QUESTION, "top_n": "3", "threshold": "", "top_k": "1"},
                    files={"image": ("q.png", _png(), "image/png")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert len(d["judgements"]) == 3
    assert len(d["kept_ids"]) <= 1


def test_ask_multipart_without_image(client):
    r = client.post("/v1/ask", data={"question": QUESTION, "top_n": "2", "top_k": "0"})
    assert r.status_code == 200, r.text
    assert len(r.json()["judgements"]) == 2


# -- corpus lookups -----------------------------------------------------------------------------------

def test_candidate_lookup(client, demo_rows):
    d = client.get("/v1/candidates/img-coffee").json()
    row = demo_rows["img-coffee"]
    assert (d["id"], d["modality"], d["title"], d["text"]) == ("img-coffee", "image", row["title"], row["text"])
    assert d["image_url"] == "/v1/images/img-coffee"
    assert "image_path" not in d  # server paths are never exposed
    t = client.get("/v1/candidates/tab-fruit-sales").json()
    assert t["modality"] == "table" and t["image_url"] is None and t["text"] == demo_rows["tab-fruit-sales"]["text"]


@pytest.mark.parametrize("cid", ["img-coffee", "img-triangle-square"])
def test_image_bytes_and_type(client, demo_rows, cid):
    from mmrag_rft.data import demo_corpus_dir

    r = client.get(f"/v1/images/{cid}")
    assert r.status_code == 200
    original = (demo_corpus_dir() / demo_rows[cid]["image_path"]).read_bytes()
    assert r.content == original
    want = "image/jpeg" if demo_rows[cid]["image_path"].endswith(".jpg") else "image/png"
    assert r.headers["content-type"] == want
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("url", [
    "/v1/candidates/no-such-id",
    "/v1/images/no-such-id",
    "/v1/images/txt-espresso",  # a text candidate has no image
    "/v1/images/tab-fruit-sales",
    "/v1/images/..%2F..%2Fetc%2Fpasswd",
    "/v1/images/%2Fetc%2Fpasswd",
    "/v1/images/..%2Fmanifest.json",
    "/v1/candidates/..%2F..%2Fetc%2Fpasswd",
    "/v1/images/images%2F..%2Fids.json",
])
def test_not_found_and_no_path_traversal(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert b"root:" not in r.content and b"img-coffee" not in r.content


def test_raw_dotdot_path_does_not_escape(client):
    r = client.get("/v1/images/../../../../etc/passwd")
    assert r.status_code == 404
    assert b"root:" not in r.content


# -- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({"question": ""}, "question"),
    ({"question": "   \n "}, "question"),
    ({"question": "x" * 2001}, "question"),
    ({}, "question"),
    ({"question": 12}, "question"),
    ({"question": "q", "top_n": 0}, "top_n"),
    ({"question": "q", "top_n": 101}, "top_n"),
    ({"question": "q", "top_n": 2.5}, "top_n"),
    ({"question": "q", "threshold": -0.01}, "threshold"),
    ({"question": "q", "threshold": 1.01}, "threshold"),
    ({"question": "q", "threshold": "high"}, "threshold"),
    ({"question": "q", "top_k": -1}, "top_k"),
    ({"question": "q", "top_k": 51}, "top_k"),
    ({"question": "q", "topk": 3}, "topk"),
])
def test_bad_parameters_are_422_naming_the_field(client, body, field):
    r = client.post("/v1/ask", json=body)
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", field] in locs


def test_question_at_the_limit_is_accepted(client):
    r = client.post("/v1/ask", json={"question": "q" * 1000, "top_n": 1, "top_k": 0})
    assert r.status_code == 200, r.text


def test_multipart_range_errors(client):
    r = client.post("/v1/ask", data={"question": QUESTION, "top_n": "500"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "top_n"]


def test_malformed_bodies(client):
    r = client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    r = client.post("/v1/ask", json=["a list"])
    assert r.status_code == 422
    r = client.post("/v1/ask", content=b"question=hi", headers={"content-type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize("body", ['{"question": "q", "threshold": NaN}', '{"question": "q", "top_n": Infinity}',
                                  '{"question": "q", "threshold": -Infinity}', '{"question": "q", "top_k": 1e400}',
                                  '{"question": ' + "[" * 100_000 + "]" * 100_000 + "}", "[" * 100_000 + "]" * 100_000])
def test_numbers_json_does_not_allow_and_deep_nesting_are_400_not_500(pipeline, body):
    with TestClient(create_app(pipeline), raise_server_exceptions=False) as c:
        r = c.post("/v1/ask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "not valid JSON" in r.json()["detail"]


def test_lone_surrogate_in_the_question_is_422(client):
    r = client.post("/v1/ask", content='{"question": "what is \\ud800 this?"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "Unicode" in r.text


def test_bad_image_is_400(client):
    r = client.post("/v1/ask", data={"question": QUESTION}, files={"image": ("q.png", b"\x89PNG not really", "image/png")})
    assert r.status_code == 400
    assert "image" in r.json()["detail"]


def test_oversized_bodies_are_413(pipeline):
    with TestClient(create_app(pipeline, max_upload_bytes=2_000, max_question_chars=50)) as c:
        # upload over its own limit (the whole body is still under the body limit)
        big = _png(size=(400, 400), color="blue") + b"\0" * 3_000
        r = c.post("/v1/ask", data={"question": QUESTION}, files={"image": ("q.png", big, "image/png")})
        assert r.status_code == 413 and "image" in r.json()["detail"]
        # a declared Content-Length over the body limit is refused before anything is read
        r = c.post("/v1/ask", content=b"x" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 413
        # a chunked body that never declares its size is cut off while streaming

        def chunks():
            for _ in range(100):
                yield b" " * 1_000

        r = c.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/ask", json={"question": "x" * 51})
        assert r.status_code == 422


# -- service ------------------------------------------------------------------------------------------

def test_healthz_and_info(client, index, backend):
    h = client.get("/healthz").json()
    assert h == {"status": "ok", "busy": False, "queued": 0, "model": backend.model_id, "index_size": len(index)}
    i = client.get("/v1/info").json()
    assert i["defaults"] == {"top_n": 6, "threshold": 0.5, "top_k": 5, "stage1_mode": "score"}
    assert i["model"] == backend.model_id and i["stage2_model"] is None  # one model reads and judges here
    assert i["limits"]["max_question_chars"] == client.app.state.pipeline.config.max_question_chars == 2000


def test_info_names_a_separate_stage2_reader(backend, index):
    class Reader:
        model_id = "a-reader"
        supports_images = False

    pipe = Pipeline(backend, index=index, config=PipelineConfig(stage2_model="a-reader"), reader=Reader())
    with TestClient(create_app(pipe)) as c:
        assert c.get("/v1/info").json()["stage2_model"] == "a-reader"


class _Gated:
    """The tiny backend, held at stage 1 until released: makes 'a generation is running' observable."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id = inner.model_id
        self.supports_images = inner.supports_images
        self.entered = threading.Event()
        self.release = threading.Event()

    def score_yes_no(self, prompts):
        self.entered.set()
        assert self.release.wait(120), "test never released the gate"
        return self.inner.score_yes_no(prompts)

    def generate(self, prompts, **kw):
        return self.inner.generate(prompts, **kw)


def test_healthz_answers_while_the_model_is_busy_and_requests_queue(backend, index):
    gated = _Gated(backend)
    pipe = Pipeline(gated, index=index, config=PipelineConfig(top_n=3))
    results: list = []
    with TestClient(create_app(pipe)) as c:
        def ask():
            results.append(c.post("/v1/ask", json={"question": QUESTION, "top_k": 0}))

        first = threading.Thread(target=ask)
        first.start()
        assert gated.entered.wait(120), "the first question never reached the model"
        second = threading.Thread(target=ask)
        second.start()
        try:
            for _ in range(200):  # until the second request is counted as waiting
                h = c.get("/healthz").json()
                if h["queued"] == 1:
                    break
                threading.Event().wait(0.05)
            assert h["busy"] is True and h["queued"] == 1  # answered while the model is held
            assert c.get("/v1/candidates/img-coffee").status_code == 200  # lookups are not queued either
        finally:
            gated.release.set()
            first.join(120)
            second.join(120)
        assert [r.status_code for r in results] == [200, 200]
        assert c.get("/healthz").json()["busy"] is False


def test_full_queue_is_503(backend, index):
    gated = _Gated(backend)
    pipe = Pipeline(gated, index=index, config=PipelineConfig(top_n=2))
    results: list = []
    with TestClient(create_app(pipe, max_queue=1)) as c:
        t1 = threading.Thread(target=lambda: results.append(c.post("/v1/ask", json={"question": QUESTION})))
        t1.start()
        assert gated.entered.wait(120)
        t2 = threading.Thread(target=lambda: results.append(c.post("/v1/ask", json={"question": QUESTION})))
        t2.start()
        try:
            for _ in range(200):
                if c.get("/healthz").json()["queued"] == 1:
                    break
                threading.Event().wait(0.05)
            r = c.post("/v1/ask", json={"question": QUESTION})
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
        finally:
            gated.release.set()
            t1.join(120)
            t2.join(120)
        assert sorted(x.status_code for x in results) == [200, 200]


def test_openapi_schema(client):
    s = client.get("/openapi.json").json()
    assert {"/v1/ask", "/v1/candidates/{cid}", "/v1/images/{cid}", "/healthz"} <= set(s["paths"])
    req = s["components"]["schemas"]["AskRequest"]["properties"]
    assert req["top_n"]["anyOf"][0]["maximum"] == 100
    assert req["top_k"]["anyOf"][0]["maximum"] == 50
    ask = s["paths"]["/v1/ask"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(ask["requestBody"]["content"])
    assert ask["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AskResponse")


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="ask-form"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and ctype in s.headers["content-type"]
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404


# -- the command ----------------------------------------------------------------------------------------

def test_serve_command_rejects_a_missing_index(tmp_path: Path):
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "nope"), "--model", "tiny-lm"])
    assert r.exit_code == 2
    assert "nope" in r.output and "Traceback" not in r.output


def test_a_loopback_server_refuses_other_host_headers(pipeline):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    from mmrag_rft.cli.serve import allowed_hosts

    assert allowed_hosts("127.0.0.1", []) == ["localhost", "127.0.0.1", "::1", "[::1]"]
    assert allowed_hosts("0.0.0.0", []) is None and allowed_hosts("127.0.0.1", ["*"]) is None
    with TestClient(create_app(pipeline, allowed_hosts=allowed_hosts("127.0.0.1", [])),
                    base_url="http://127.0.0.1:8000") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/v1/info", headers={"host": "evil.example:8000"}).status_code == 400


def test_cross_origin_posts_are_refused_and_same_origin_ones_pass(client):
    body = {"question": "", "top_k": 0}  # refused after the origin check either way: nothing reaches the model
    r = client.post("/v1/ask", data={"question": "q", "top_k": "0"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.text
    assert client.post("/v1/ask", json=body, headers={"origin": "null"}).status_code == 403
    assert client.post("/v1/ask", json=body, headers={"origin": "http://testserver"}).status_code == 422


def test_every_response_says_nosniff_and_swagger_ui_is_off_by_default(client, pipeline):
    for url in ("/healthz", "/v1/info", "/openapi.json", "/no-such-page"):
        assert client.get(url).headers.get("x-content-type-options") == "nosniff", url
    assert client.get("/docs").status_code == 404
    with TestClient(create_app(pipeline, docs=True)) as c:
        assert c.get("/docs").status_code == 200


def test_a_corrupt_index_is_a_server_error_not_the_clients(backend, tmp_path, monkeypatch):
    """A damaged record is the server's fault: 500 (logged), never a 400 that blames the request."""
    from mmrag_rft.data import demo_corpus_dir, load_corpus
    from mmrag_rft.retrieval import layout as layout_mod
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.index import HybridIndex
    from mmrag_rft.retrieval.layout import RetrievalConfig

    out = tmp_path / "index"
    build_index(load_corpus(demo_corpus_dir() / "corpus.jsonl"), out, RetrievalConfig(use_dense=False),
                base_dir=demo_corpus_dir(), progress=False)
    data = (out / "candidates.jsonl").read_bytes()
    (out / "candidates.jsonl").write_bytes(data.replace(b'"text":"', b'"text";"'))  # every record, same size
    monkeypatch.setattr(layout_mod, "VERIFY_ON_LOAD_BYTES", 0)  # as for a file too big to hash on every load
    idx = HybridIndex.load(out)
    pipe = Pipeline(backend, index=idx, config=PipelineConfig(top_n=3, stage2_max_new_tokens=4))
    with TestClient(create_app(pipe), raise_server_exceptions=False) as c:
        r = c.post("/v1/ask", json={"question": QUESTION})
        assert r.status_code == 500, r.text
        assert c.get(f"/v1/candidates/{idx.ids[0]}").status_code == 500
    idx.close()
