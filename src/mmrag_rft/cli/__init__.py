"""The one entry point, `mmrag`. Each concept registers its commands from its own module in this package;
heavy imports (torch, transformers) happen inside the commands so `mmrag --help` stays instant."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from mmrag_rft.cli._common import console, fail  # noqa: F401  (re-exported)
app = typer.Typer(
    name="mmrag",
    help="MMRAG-RFT: explainable multimodal RAG with two-stage reinforcement fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per concept; each defines register(app).
_MODULES = ("data", "score", "index", "pipeline", "sweep", "train", "serve", "info", "config_cmd")


@app.callback()
def _root(
    threads: int = typer.Option(None, "--threads", min=1, envvar="MMRAG_THREADS",
                                help="CPU threads for torch/faiss (default: all cores). 1 avoids oversubscription "
                                     "when several jobs share a small machine."),
    engine: str = typer.Option(None, "--engine", envvar="MMRAG_ENGINE",
                               help="inference engine for every model the command loads: hf (default), vllm, or "
                                    "one a plugin registers"),
) -> None:
    """MMRAG-RFT: explainable multimodal RAG with two-stage reinforcement fine-tuning."""
    # the model loaders' sub-second "Loading weights" bars, read when transformers is first imported (lazily, below)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if engine is not None:
        from mmrag_rft.models.loading import ENGINES

        if engine not in ENGINES:
            raise fail(f"--engine: unknown engine {engine!r}; registered: {', '.join(ENGINES)}")
        os.environ["MMRAG_ENGINE"] = engine  # models.loading.default_engine reads it
    if threads is not None:
        # torch and faiss size their OpenMP pools from these when first imported, which the commands do lazily
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        if "torch" in sys.modules:  # already imported (e.g. the CLI called in-process): resize the pool now
            sys.modules["torch"].set_num_threads(threads)


@app.command()
def version() -> None:
    """Print the package version."""
    from mmrag_rft import __version__

    print(__version__)


for _name in _MODULES:
    _mod = importlib.import_module(f"mmrag_rft.cli.{_name}")
    _mod.register(app)


def _add_plugins() -> None:
    """A plugin's registrations happen on import; its `register(app)`, where it has one, adds its commands."""
    from mmrag_rft.plugins import PluginError, load_plugins

    try:
        plugins = load_plugins()
    except PluginError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)
    for plugin in plugins:
        if callable(getattr(plugin, "register", None)):
            plugin.register(app)


_add_plugins()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
