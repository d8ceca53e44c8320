"""The HTTP API and the explanation page over one loaded `Pipeline`.

One model serves every request, so generations run one at a time on a dedicated single worker thread;
requests wait their turn there while the event loop stays free for `/healthz`, the page and corpus lookups.
Corpus items are served by id from the index only: no request path ever becomes a file path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import mimetypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from mmrag_rft.serving.schemas import ASK_BODY_DOC, AskRequest, AskResponse, CandidateOut, Health, Info

log = logging.getLogger(__name__)

SNIPPET_CHARS = 600
MAX_IMAGE_PIXELS = 40_000_000  # an uploaded query image larger than this is refused (decompression bombs)
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart framing and the text fields around an upload
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "BMP": "image/bmp"}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


# -- helpers --------------------------------------------------------------------------------------------

def _parse_json(body: bytes) -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow to infinity are refused (400), as is nesting deeper
    than Python's parser can follow, instead of failing later where they cannot even be echoed back."""
    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} is out of range")
        return value

    def constant(text: str) -> Any:
        raise ValueError(f"{text} is not a number JSON allows")

    try:
        return json.loads(body, parse_float=finite, parse_constant=constant)
    except RecursionError:
        raise HTTPException(400, "body is not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and the two refusals above
        raise HTTPException(400, f"body is not valid JSON ({str(e)[:200]})") from None


def _validation_error(field: str, msg: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": kind}])


class _SameOriginPosts:
    """ASGI middleware: refuse a POST whose Origin is another site (403). Form and multipart posts are CORS-simple,
    so without this any web page a user opens could queue questions on their local server."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and origin != "null" and origin.split("://", 1)[-1] != host:
                response = JSONResponse({"detail": f"cross-origin POST from {origin[:100]} refused"}, status_code=403)
                await response(scope, receive, send)
                return
            if origin == "null":  # a sandboxed frame or a file:// page
                response = JSONResponse({"detail": "POST from an opaque origin refused"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = {"detail": f"request body exceeds {self.limit} bytes"}
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
                return
            if n > self.limit:
                await JSONResponse(too_large, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # chunked upload that never declared its size
                    raise HTTPException(413, too_large["detail"])
            return message

        await self.app(scope, limited_receive, send)


def _decode_image(data: bytes) -> Any:
    from mmrag_rft.data.images import open_image
    from mmrag_rft.data.schema import DataError

    try:
        return open_image(data, max_pixels=MAX_IMAGE_PIXELS)
    except DataError as e:
        raise HTTPException(400, f"query image: {e.reason}") from None


def _image_media_type(path: Path) -> str | None:
    """The file's image type from its bytes (its name may lie or be missing); None if it is no image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt = im.format
    except Exception:
        return None
    if fmt in IMAGE_TYPES:
        return IMAGE_TYPES[fmt]
    guess = mimetypes.guess_type(path.name)[0]
    return guess if guess and guess.startswith("image/") else None


# -- the model's queue, the corpus, one request ---------------------------------------------------------------

class ModelQueue:
    """One worker thread runs the pipeline, one question at a time; counts who waits, refuses past `max_queue`."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmrag-pipeline")
        self.waiting, self.running = 0, False
        self._lock = threading.Lock()

    async def run(self, fn: Any) -> tuple[Any, float]:
        """`fn()` on the worker: (its result, seconds it waited in the queue). Raises 503 when the queue is full."""
        if self.waiting >= self.max_queue:
            raise HTTPException(503, f"{self.max_queue} questions already waiting; retry shortly",
                                headers={"Retry-After": "5"})
        queued_at = time.perf_counter()
        with self._lock:
            self.waiting += 1

        def job() -> tuple[Any, float]:
            with self._lock:
                self.waiting -= 1
                self.running = True
            try:
                started = time.perf_counter()
                return fn(), started - queued_at
            finally:
                with self._lock:
                    self.running = False

        future = self.executor.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # the client went away: drop its question if it has not started
            if future.cancel():
                with self._lock:
                    self.waiting -= 1
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class Corpus:
    """The index's candidates by id, and their image files; no request path ever becomes a file path."""

    def __init__(self, index: Any, image_dir: Any = None):
        self.index, self.image_dir = index, image_dir

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, cid: str) -> bool:
        return cid in self.index

    def lookup(self, cid: str) -> Any:
        if self.index is None or cid not in self.index:
            raise HTTPException(404, f"no candidate {cid!r} in the index")
        return self.index.get(cid)

    def image_file(self, cand: Any) -> Path | None:
        if cand.modality != "image":
            return None
        p = self.index.image_path(cand.id) if hasattr(self.index, "image_path") else None
        if p is None and self.image_dir:
            from mmrag_rft.data.images import find_image_file

            p = find_image_file(self.image_dir, cand.id)
        return Path(p) if p is not None else None

    def card(self, cand: Any, snippet: bool) -> CandidateOut:
        from urllib.parse import quote

        text = cand.text or ""
        cut = snippet and len(text) > SNIPPET_CHARS
        if cut:
            text = text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
        has_image = self.image_file(cand) is not None
        return CandidateOut(id=cand.id, modality=cand.modality, title=cand.title, text=text, truncated=cut,
                            source=cand.source, image_url=f"/v1/images/{quote(cand.id, safe='')}" if has_image else None)


async def read_ask(request: Request, max_upload_bytes: int) -> tuple[dict[str, Any], Any]:
    """(fields, query image or None) of a JSON body or a multipart / urlencoded form."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        payload = _parse_json(await request.body())
        if not isinstance(payload, dict):
            raise HTTPException(422, "body must be a JSON object with a 'question'")
        return payload, None
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise HTTPException(415, "send application/json or multipart/form-data")
    form = await request.form(max_files=1, max_fields=8, max_part_size=FORM_OVERHEAD_BYTES)
    payload, query_image = {}, None
    for key, value in form.multi_items():
        if key == "image":
            if isinstance(value, str):
                if value:
                    raise HTTPException(400, "field 'image' must be a file upload")
                continue
            data = await value.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"query image exceeds {max_upload_bytes} bytes")
            if data:
                query_image = _decode_image(data)
        elif isinstance(value, str):
            if value.strip() != "" or key == "question":
                payload[key] = value
        else:
            raise HTTPException(400, f"field {key!r} must not be a file")
    return payload, query_image


def check_ask(payload: dict[str, Any], max_question_chars: int) -> tuple[AskRequest, str]:
    """The validated request and its question, refused (422) as the pipeline would refuse it, before it queues."""
    from mmrag_rft.pipeline import check_question

    try:
        req = AskRequest.model_validate(payload)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False, include_context=False)]) from None
    try:
        question = check_question(req.question)
    except ValueError as e:
        raise _validation_error("question", str(e),
                                "string_too_short" if not req.question.strip() else "value_error") from None
    if len(question) > max_question_chars:
        raise _validation_error("question", f"question has {len(question)} characters; at most "
                                            f"{max_question_chars} allowed", "string_too_long")
    if req.threshold is not None and not math.isfinite(req.threshold):
        raise _validation_error("threshold", "threshold must be a finite number")
    return req, question


def response_of(result: Any, queue_s: float, corpus: Corpus) -> Any:
    """The pipeline's Result as the API's AskResponse: queue time added, and a card for every candidate it names."""
    d = result.to_dict()
    d["timings"] = {**d.get("timings", {}), "queue_s": queue_s}
    d["models"] = {k: str(v) for k, v in (d.get("models") or {}).items()}
    if d["models"].get("retriever", "?") == "?" and getattr(corpus.index, "manifest", None) is not None:
        d["models"]["retriever"] = str(getattr(corpus.index.manifest, "embedder", "?"))
    ids = list(dict.fromkeys([*d["rank"], *(j["id"] for j in d["judgements"])]))
    d["candidates"] = {cid: corpus.card(corpus.index.get(cid), snippet=True) for cid in ids if cid in corpus}
    return AskResponse.model_validate(d)


# -- the app ----------------------------------------------------------------------------------------------

def create_app(pipeline: Any, *, max_question_chars: int | None = None, max_upload_bytes: int = 5_000_000,
               max_queue: int = 64, allowed_hosts: list[str] | None = None, docs: bool = False) -> FastAPI:
    """The FastAPI app serving `pipeline` (its `index` provides candidates and images).

    `max_question_chars`: longer questions are refused (422); None = the pipeline's own `max_question_chars`, so the
    API refuses exactly what the pipeline would otherwise clip.

    `max_queue` bounds the questions waiting for the model; more are refused with 503 rather than
    piling up without limit. `allowed_hosts`: Host headers accepted (None = any), against DNS rebinding of a
    loopback server. `docs`: serve Swagger UI at /docs (it loads its scripts from a CDN, so it is off by default).
    """
    if max_question_chars is None:
        max_question_chars = int(getattr(getattr(pipeline, "config", None), "max_question_chars", 2000))
    queue = ModelQueue(max_queue)
    index = getattr(pipeline, "index", None)
    corpus = Corpus(index, getattr(pipeline, "image_dir", None))
    model_id = str(getattr(pipeline.backend, "model_id", "?"))
    stage2_id = pipeline.models.get("stage2")  # loads a reader not loaded yet, before the first user waits for it
    static_dir = Path(str(resources.files("mmrag_rft.serving") / "static"))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        queue.shutdown()

    app = FastAPI(
        title="MMRAG-RFT",
        summary="Explainable multimodal RAG: every answer comes with its evidence ranking, per-candidate "
                "stage-1 judgements and stage-2 reasoning.",
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(_SameOriginPosts)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def nosniff(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    app.state.pipeline = pipeline

    # -- API --------------------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness; answers at once even while a question is being answered."""
        return Health(status="ok", busy=queue.running, queued=queue.waiting, model=model_id,
                      index_size=len(index) if index is not None else None)

    @app.get("/v1/info", response_model=Info, tags=["service"])
    async def info() -> Info:
        """The model, index size, default pipeline settings and request limits (the page reads these)."""
        cfg = pipeline.config
        return Info(model=model_id, stage2_model=stage2_id,
                    index_size=len(index) if index is not None else None,
                    defaults={"top_n": cfg.top_n, "threshold": cfg.filter.threshold, "top_k": cfg.filter.top_k,
                              "stage1_mode": cfg.stage1_mode},
                    limits={"max_question_chars": max_question_chars, "max_upload_bytes": max_upload_bytes,
                            "top_n": [1, 100], "threshold": [0.0, 1.0], "top_k": [0, 50]})

    @app.post("/v1/ask", response_model=AskResponse, tags=["ask"], openapi_extra=ASK_BODY_DOC,
              responses={400: {"description": "Bad query image or unusable request"},
                         413: {"description": "Body or upload too large"},
                         415: {"description": "Neither JSON nor multipart form"},
                         503: {"description": "Too many questions waiting"}})
    async def ask(request: Request) -> Any:
        """Answer a question over the index: JSON body, or multipart form with an optional `image` upload."""
        payload, query_image = await read_ask(request, max_upload_bytes)
        req, question = check_ask(payload, max_question_chars)
        if index is None:
            raise HTTPException(503, "no index loaded")
        try:
            result, queue_s = await queue.run(lambda: pipeline.ask(
                question, query_image=query_image, top_n=req.top_n, threshold=req.threshold, top_k=req.top_k))
        except ValueError as e:  # the pipeline's own refusal of this input
            raise HTTPException(400, str(e)) from None
        except HTTPException:  # the queue is full
            raise
        except Exception:
            log.exception("pipeline failed on question %r", question[:200])
            raise HTTPException(500, "the pipeline failed on this question; see the server log") from None
        return response_of(result, queue_s, corpus)

    @app.get("/v1/candidates/{cid:path}", response_model=CandidateOut, tags=["corpus"],
             responses={404: {"description": "Not in the index"}})
    def candidate(cid: str) -> CandidateOut:
        """One indexed candidate, in full (text, title, modality; its image via `image_url`)."""
        return corpus.card(corpus.lookup(cid), snippet=False)

    @app.get("/v1/images/{cid:path}", tags=["corpus"], response_class=FileResponse,
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "Not in the index, or no image"}})
    def image(cid: str) -> FileResponse:
        """The image of an indexed image candidate (never any other file)."""
        p = corpus.image_file(corpus.lookup(cid))
        if p is None:
            raise HTTPException(404, f"candidate {cid!r} has no image")
        media = _image_media_type(p)
        if media is None:
            raise HTTPException(404, f"candidate {cid!r}: its image file is not a readable image")
        return FileResponse(p, media_type=media, headers={"Cache-Control": "public, max-age=3600",
                                                          "X-Content-Type-Options": "nosniff"})

    # -- the page -----------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = (static_dir / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    def openapi() -> dict[str, Any]:  # /v1/ask parses its body itself (JSON or form): publish its model here
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["AskRequest"] = \
                AskRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _version() -> str:
    try:
        from mmrag_rft import __version__

        return str(__version__)
    except Exception:
        return "0"
