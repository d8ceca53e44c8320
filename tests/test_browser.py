"""End to end: the real server on 127.0.0.1, the page driven in headless Chromium (Debian's build, via Playwright).

Also a script for the README screenshot with the default model:
    .venv/bin/python tests/test_browser.py --model default --out docs/img/serving.png \
        --question "About how many galaxies does the Hubble eXtreme Deep Field show?"
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.browser

QUESTION = "What colour is the saucer under the cup of espresso?"
SKIP_ENV = "MMRAG_SKIP_BROWSER"


def find_chromium() -> str | None:
    explicit = os.environ.get("MMRAG_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a loopback port chosen by the OS; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not server.started:
            raise RuntimeError("the test server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def build_app(model: str, work: Path) -> Any:
    from mmrag_rft.data import demo_corpus_dir, load_corpus
    from mmrag_rft.models.loading import load_backend
    from mmrag_rft.pipeline import Pipeline, pipeline_config
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.index import HybridIndex
    from mmrag_rft.retrieval.layout import RetrievalConfig
    from mmrag_rft.serving.app import create_app

    index_dir = work / "index"
    if not (index_dir / "manifest.json").is_file():
        build_index(load_corpus(demo_corpus_dir() / "corpus.jsonl"), index_dir, RetrievalConfig(),
                    base_dir=demo_corpus_dir())
    idx = HybridIndex.load(index_dir)
    idx.search("warm-up", top_n=1)
    # the model's own settings (the shipped default's reader among them), at a shallower retrieval depth
    return create_app(Pipeline(load_backend(model), index=idx, config=pipeline_config(model, overrides=["top_n=8"])))


def wait_js(page: Any, expression: str, timeout_s: float = 60.0) -> None:
    """Poll an expression from outside the page (Playwright's wait_for_function needs eval, which the CSP forbids)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"page never satisfied: {expression}")
        page.wait_for_timeout(50)


def drive_page(base: str, chromium: str, *, screenshot: Path | None = None, threshold: str | None = None,
               top_k: str | None = None, question: str = QUESTION) -> dict[str, Any]:
    """Ask `question` on the page and read back what rendered."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
            page.goto(base + "/", wait_until="networkidle")
            wait_js(page, "document.querySelector('#service-info').textContent.includes('indexed')")
            page.fill("#question", question)
            if threshold is not None or top_k is not None:
                page.click(".options summary")
                if threshold is not None:
                    page.fill("#threshold", threshold)
                if top_k is not None:
                    page.fill("#top_k", top_k)
            with page.expect_response(lambda r: r.url.endswith("/v1/ask"), timeout=600_000) as answered:
                page.click("#ask-button")
            api = answered.value.json()
            page.wait_for_selector("#result:not(.hidden)", timeout=300_000)
            # thumbnails load lazily: bring them all into view, then wait until every one has finished
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            wait_js(page, "[...document.images].every(i => i.complete)")
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_load_state("networkidle")
            out = page.evaluate("""() => ({
                answer: document.querySelector('#answer').textContent,
                status: document.querySelector('#status').textContent,
                cards: [...document.querySelectorAll('#evidence .card')].map(c => ({
                    id: c.dataset.id, title: c.querySelector('.title').textContent,
                    img: c.querySelector('img.thumb') ? c.querySelector('img.thumb').naturalWidth : null})),
                rows: document.querySelectorAll('#judgements tbody tr').length,
                keptRows: document.querySelectorAll('#judgements tbody tr.kept').length,
                minis: [...document.querySelectorAll('#judgements img.mini')].map(i => i.naturalWidth),
                reasoning: document.querySelector('#reasoning').textContent,
                timings: document.querySelector('#timings').textContent,
            })""")
            out["errors"] = errors
            out["api"] = api
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            return out
        finally:
            browser.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser test skipped on request")
    path = find_chromium()
    if path is None:
        pytest.fail("headless Chromium not found: install Debian's package (apt-get install -y chromium) or set "
                    f"MMRAG_CHROMIUM to its binary; set {SKIP_ENV}=1 to skip this test deliberately")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]' (its browsers are not needed; "
                    "the system chromium is used)")
    return path


def test_page_answers_and_renders_evidence(chromium, tmp_path):
    app = build_app("tiny-lm", tmp_path)
    with serve(app) as base:
        got = drive_page(base, chromium, screenshot=tmp_path / "page.png", threshold="0", top_k="3")
    api = got["api"]
    assert got["errors"] == []
    assert got["status"].startswith("Answered in")
    # the page shows what the API answered (a random tiny model may leave the answer empty: the page says so)
    assert got["answer"] == (api["answer"] or "(stage 2 gave no answer text: see its raw output below)")
    # threshold 0 passes every candidate, so exactly top_k=3 are kept and stage 2 ranks from those
    assert got["rows"] == len(api["judgements"]) == 8 and got["keptRows"] == len(api["kept_ids"]) == 3
    assert [c["id"] for c in got["cards"]] == api["rank"] and api["rank"]
    assert [c["title"] for c in got["cards"]] == [api["candidates"][i]["title"] for i in api["rank"]]
    with_images = [j["id"] for j in api["judgements"] if api["candidates"][j["id"]]["image_url"]]
    assert with_images, "the demo question should retrieve at least one image candidate"
    assert len(got["minis"]) == len(with_images) and all(w > 0 for w in got["minis"]), got["minis"]
    assert all(c["img"] is None or c["img"] > 0 for c in got["cards"]), "an evidence image failed to load"
    assert "stage 1" in got["timings"] and "pipeline total" in got["timings"]
    assert (tmp_path / "page.png").stat().st_size > 10_000


def main(argv: list[str]) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Serve the demo index and screenshot the page after one question.")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=Path("docs/img/serving.png"))
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--work", type=Path, default=None, help="Where to build the demo index (default: a temp dir).")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("headless Chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        with serve(build_app(args.model, work)) as base:
            got = drive_page(base, chromium, screenshot=args.out, question=args.question)
    print(f"answer: {got['answer']!r}; {len(got['cards'])} evidence cards; screenshot at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
