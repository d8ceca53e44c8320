"""`mmrag serve`: the HTTP API and explanation page over one index and one model."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import MODEL_HELP, console, fail, load_reader_or_fail


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: list[str]) -> list[str] | None:
    """Host headers a server bound to `host` accepts: localhost names on loopback, the bound address elsewhere
    (any, for a wildcard bind), plus `extra`; None = any."""
    if "*" in extra:
        return None
    if _is_loopback(host):
        return ["localhost", "127.0.0.1", "::1", "[::1]", *extra]
    if host in ("0.0.0.0", "::", ""):
        return [*extra] or None
    return [host, *extra]


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        index: Path = typer.Option(..., "--index", help="Index folder built by `mmrag index`."),
        model: str = typer.Option("default", help=MODEL_HELP),
        config: Optional[Path] = typer.Option(None, help="Pipeline YAML (configs/pipeline.yaml)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set filter.top_k=3."),
        image_dir: Optional[Path] = typer.Option(None, help="Folder to find candidate images by id."),
        host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
        port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
        max_question_chars: Optional[int] = typer.Option(None, min=1, help="Longest question accepted (default: the "
                                                                            "pipeline's max_question_chars)."),
        max_upload_mb: float = typer.Option(5.0, min=0.01, help="Largest query-image upload, in MB."),
        max_queue: int = typer.Option(64, min=1, help="Questions allowed to wait for the model; more get 503."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
        allow_host: list[str] = typer.Option([], "--allow-host", help="Host header to accept (repeatable; a loopback "
                                                                       "server accepts only localhost names, against "
                                                                       "DNS rebinding; '*' accepts any)."),
        docs: bool = typer.Option(False, "--docs", help="Serve Swagger UI at /docs (its scripts come from a CDN)."),
    ) -> None:
        """Serve `POST /v1/ask`, corpus lookups and the explanation page at http://HOST:PORT/ (model loaded once)."""
        from mmrag_rft.config import ConfigError
        from mmrag_rft.pipeline import Pipeline, pipeline_config
        from mmrag_rft.retrieval.index import HybridIndex

        try:
            cfg = pipeline_config(model, config, set_ or [])
        except ConfigError as e:
            raise fail(str(e)) from None
        except (FileNotFoundError, ValueError, OSError) as e:
            raise fail(f"model {model!r}: {e}") from None
        if image_dir is not None and not image_dir.is_dir():
            raise fail(f"--image-dir {image_dir}: not a folder")
        try:
            idx = HybridIndex.load(index)
        except Exception as e:  # a stale or missing index is user input, not a crash
            raise fail(f"index {index}: {e}") from None
        from mmrag_rft.models.loading import load_backend

        with console.status(f"loading model {model} ..."):
            try:
                backend = load_backend(model)
            except (FileNotFoundError, ValueError, OSError) as e:
                raise fail(f"model {model!r}: {e}") from None
        pipe = Pipeline(backend, index=idx, config=cfg, image_dir=str(image_dir) if image_dir else None,
                        reader=load_reader_or_fail(cfg))  # before the first user waits for it
        # Warm the retriever's query embedder now, not on the first user's question.
        try:
            idx.search("warm-up", top_n=1)
        except Exception as e:
            raise fail(f"index {index}: search failed ({e})") from None

        import uvicorn

        from mmrag_rft.serving.app import create_app

        web = create_app(pipe, max_question_chars=max_question_chars,
                         max_upload_bytes=int(max_upload_mb * 1_000_000), max_queue=max_queue,
                         allowed_hosts=allowed_hosts(host, allow_host), docs=docs)
        if not _is_loopback(host):
            console.print(f"[yellow]listening on {host}: reachable from other machines; there is no "
                          "authentication[/]")
        console.print(f"[green]serving[/] {len(idx)} candidates with {getattr(backend, 'model_id', model)} "
                      f"at http://{host}:{port}/")
        uvicorn.run(web, host=host, port=port, log_level=log_level)
