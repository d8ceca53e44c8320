"""`mmrag info`: which models `--model default` loads, with the settings and numbers each was shipped with."""

from __future__ import annotations

import json

import typer

from mmrag_rft.cli._common import cell, fail, out


def register(app: typer.Typer) -> None:
    @app.command()
    def info(model: str = typer.Option("default", help="The model spec to describe."),
             as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
        """Print the package version and what a model spec resolves to (no weights are loaded)."""
        from rich.table import Table

        from mmrag_rft import __version__
        from mmrag_rft.models.default import DEFAULT_MODEL_NAME
        from mmrag_rft.models.loading import (ENGINES, READER_SPEC, default_engine, model_name, model_settings,
                                              shipped_model, source_path)

        try:
            src = source_path(model)
            settings = model_settings(model)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise fail(f"model {model!r}: {e}") from None
        adapter = (src / "adapter_config.json").is_file()
        base = DEFAULT_MODEL_NAME if model in ("default", "base") else settings.get("base", "")
        row = {"version": __version__, "model": model, "name": model_name(model), "folder": str(src),
               "kind": f"LoRA adapter on {base or 'its base'}" if adapter else "full model", "base": base,
               "stage": settings.get("stage"), "pipeline_settings": settings.get("pipeline", {}),
               "trained_by": (settings.get("training") or {}).get("command", ""),
               "heldout": settings.get("heldout", {}),
               "engine": f"{default_engine()} (registered: {', '.join(ENGINES)})"}
        reader = (settings.get("pipeline") or {}).get("stage2_model")
        trained_by = ""
        if reader:  # one model per stage: what reads the survivors and answers, and whether it is installed
            try:
                installed = _reader_state() if reader in (READER_SPEC, "reader") else str(source_path(reader))
                stage2_adapter = shipped_model(2) if reader == "reader" else None
                if stage2_adapter is not None:
                    installed += f"; trained stage-2 adapter {stage2_adapter}"
                    trained_by = (model_settings("reader").get("training") or {}).get("command", "")
            except (FileNotFoundError, ValueError, OSError) as e:
                installed = f"not available ({e}); the stage-1 model reads instead"
            row["stage2_model"] = f"{model_name(reader)}: {installed}"
            if trained_by:
                row["stage2_trained_by"] = trained_by
        ablation = settings.get("ablation") or {}
        if ablation:
            row["ablation"] = {k: {m: round(v[m], 3) for m in ("qa_acc", "retrieval_f1") if v.get(m) is not None}
                               for k, v in ablation["systems"].items()}
        if as_json:
            print(json.dumps(row, indent=2))
            return
        t = Table(title=f"mmrag-rft {__version__}: --model {model}", show_header=False)
        for k, v in row.items():
            if k not in ("version", "model", "ablation"):
                t.add_row(k, cell(v) if v not in ("", {}, None) else "-")
        out.print(t)
        if ablation:
            out.print(_ablation_table(ablation))


def _ablation_table(ablation: dict):
    """The held-out ablation the model card carries, one row per system, as the README shows it."""
    from rich.table import Table

    t = Table(title=f"what each stage adds: {ablation.get('questions', '?')} held-out questions "
                    f"({ablation.get('data', '')})", caption=ablation.get("note"))
    t.add_column("system")
    for col in ("QA-Acc", "evidence F1", "NDCG@5"):
        t.add_column(col, justify="right")
    for key, v in ablation["systems"].items():
        t.add_row(v.get("description", key), *(f"{v[m]:.3f}" if v.get(m) is not None else "-"
                                               for m in ("qa_acc", "retrieval_f1", "sources_ndcg@5")),
                  style="bold" if key == "shipped" else None)
    return t


def _reader_state() -> str:
    """Whether the embedded reader is installed and converted, without converting it (that takes minutes)."""
    from mmrag_rft.models.default import READER_INSTALL, is_complete, reader_model_path, reader_packages_installed

    if not reader_packages_installed():
        return f"not installed ({READER_INSTALL}); the stage-1 model reads instead"
    folder = reader_model_path()
    return str(folder) if is_complete(folder) else "installed; converted on first use"
