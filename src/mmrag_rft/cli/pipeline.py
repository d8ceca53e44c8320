"""`mmrag ask`, `mmrag demo`, `mmrag evaluate`: the product's main job from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import (MODEL_HELP, check_dataset, console, fail, load_backend_or_fail, load_reader_or_fail,
                                   open_index_or_fail, open_query_image_or_fail, out)


def _pipeline_config(config: Optional[Path], overrides: list[str] | None, model: str):
    """The model's own settings (its manifest), then --config, then --set."""
    from mmrag_rft.config import ConfigError
    from mmrag_rft.pipeline import pipeline_config

    try:
        return pipeline_config(model, config, overrides or [])
    except ConfigError as e:
        raise fail(str(e)) from None
    except (FileNotFoundError, ValueError, OSError) as e:
        raise fail(f"model {model!r}: {e}") from None


def _print_result(r, lookup) -> None:
    from rich.table import Table

    out.print(f"[bold]Q:[/] {r.question}")
    out.print(f"[bold green]A:[/] {r.answer}")
    if r.abstained:
        out.print("[yellow]abstained: no candidate passed the stage-1 filter[/]")
    cited_filter = "stage2_ranking" in r.bypassed  # its line says why stage 2's own ranking went unused
    if r.fallback and not cited_filter:
        out.print(f"[yellow]{r.fallback}[/]")
    for stage, why in r.bypassed.items():
        out.print(f"[dim]{stage} bypassed: {why}[/]")
    if not r.faithful and not cited_filter:
        out.print(f"[red]stage 2 named ids it was not shown: {', '.join(r.unfaithful_ids)}[/]")
    t = Table(title="evidence", show_lines=False)
    cols = ["rank", "id", "modality", "title", "P(yes)", "retrieved", "kept"]  # the fused filter reads both
    first = r.stage2_scores  # stage 2's likelihood ranking, when the pipeline reads it
    for col in cols + (["P(first)"] if first else []):
        t.add_column(col)
    score = {j.id: j for j in r.judgements}
    ranked = {cid: i for i, cid in enumerate(r.rank, 1)}
    for j in sorted(r.judgements, key=lambda j: (ranked.get(j.id, 10**6), -j.score)):
        c = lookup(j.id)
        t.add_row(str(ranked.get(j.id, "")), j.id, c.modality, (c.title or c.text)[:50], f"{score[j.id].score:.3f}",
                  "" if j.retrieval_rank is None else f"#{j.retrieval_rank}", "yes" if j.kept else "",
                  *([f"{first[j.id]:.3f}" if j.id in first else ""] if first else []))
    out.print(t)
    if r.reasoning:
        out.print(f"[bold]reasoning:[/] {r.reasoning}")
    out.print("[dim]" + ", ".join(f"{k} {v:.2f}s" for k, v in r.timings.items()) + "[/]")


WITH_GOLD_HELP = "Only questions whose gold evidence is among their candidates (MMQA offline: its image questions)."


def register(app: typer.Typer) -> None:
    @app.command()
    def ask(
        question: str = typer.Argument(..., help="The question."),
        index: Path = typer.Option(..., "--index", help="Index folder built by `mmrag index`."),
        model: str = typer.Option("default", help=MODEL_HELP),
        config: Optional[Path] = typer.Option(None, help="Pipeline YAML (configs/pipeline.yaml)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set filter.top_k=3."),
        image: Optional[Path] = typer.Option(None, help="Optional query image (used by the image retriever)."),
        image_dir: Optional[Path] = typer.Option(None, help="Folder to find candidate images by id."),
        top_n: Optional[int] = typer.Option(None, min=1, max=200),
        threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0),
        top_k: Optional[int] = typer.Option(None, min=0, max=50),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Answer one question over an index, with the full explanation."""
        from mmrag_rft.pipeline import Pipeline

        cfg = _pipeline_config(config, set_, model)
        idx = open_index_or_fail(index)
        query_image = open_query_image_or_fail(image)
        pipe = Pipeline(load_backend_or_fail(model), index=idx, config=cfg, image_dir=str(image_dir) if image_dir else None,
                        reader=load_reader_or_fail(cfg))
        try:
            r = pipe.ask(question, query_image=query_image, top_n=top_n, threshold=threshold, top_k=top_k)
        except ValueError as e:  # the pipeline's refusal of this question (empty, not valid Unicode)
            raise fail(str(e)) from None
        except RuntimeError as e:  # a corrupt index (IndexCorruptError) or a missing embedder
            raise fail(f"index {index}: {e}") from None
        if as_json:
            print(json.dumps(r.to_dict(), indent=2, ensure_ascii=False))
        else:
            _print_result(r, idx.get)

    @app.command()
    def demo(
        out_dir: Path = typer.Option(Path("out/demo"), "--out", help="Where the index, results and report go."),
        model: str = typer.Option("default", help=MODEL_HELP),
        config: Optional[Path] = typer.Option(None, help="Pipeline YAML."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key."),
        limit: Optional[int] = typer.Option(None, min=1, help="Answer only the first N demo questions."),
    ) -> None:
        """Build the demo corpus's index and answer its questions end to end; writes an HTML report."""
        from mmrag_rft.evaluation.demo import run_demo

        cfg = _pipeline_config(config, set_, model)
        run_demo(out_dir, backend=load_backend_or_fail(model), config=cfg, limit=limit, reader=load_reader_or_fail(cfg))

    @app.command()
    def evaluate(
        path: Path = typer.Argument(..., help="Benchmark file (WebQA JSON, MMQA jsonl, or our JSONL)."),
        dataset: str = typer.Option(..., "--dataset", help="A registered dataset: webqa | mmqa | jsonl (data/datasets.py)."),
        out_dir: Path = typer.Option(..., "--out", help="Output folder (re-running resumes)."),
        limit: Optional[int] = typer.Option(None, min=1, help="First N questions."),
        model: str = typer.Option("default", help=MODEL_HELP),
        config: Optional[Path] = typer.Option(None, help="Pipeline YAML."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key."),
        skip_bad: bool = typer.Option(False, "--skip-bad", help="Report and skip malformed rows."),
        heldout: Optional[str] = typer.Option(None, "--heldout", help="A training run or model folder, or a model spec "
                                                                       "(default): ask only the questions its split "
                                                                       "held out (never trained on); none: every "
                                                                       "question."),
        with_gold: bool = typer.Option(False, "--with-gold", help=WITH_GOLD_HELP),
        index: Optional[Path] = typer.Option(None, "--index", help="Index built by `mmrag index` from the corpus "
                                                                   "the questions' gold_ids name: questions without "
                                                                   "candidates of their own retrieve from it."),
    ) -> None:
        """Run the pipeline over a benchmark with its candidate pools (or over an index); writes predictions,
        metrics JSON and a markdown table."""
        from mmrag_rft.evaluation.evaluate import evaluate_file

        check_dataset(dataset)
        if not path.exists():
            raise fail(f"{path}: file not found")
        cfg = _pipeline_config(config, set_, model)
        idx = open_index_or_fail(index) if index is not None else None
        heldout = None if heldout == "none" else heldout
        from mmrag_rft.data.schema import DataError
        from mmrag_rft.evaluation.evaluate import RunMismatch

        try:
            evaluate_file(path, dataset=dataset, out_dir=out_dir, limit=limit, config=cfg, skip_bad=skip_bad,
                          backend_factory=lambda: load_backend_or_fail(model), model=model, heldout=heldout,
                          reader_factory=lambda: load_reader_or_fail(cfg), with_gold=with_gold, index=idx)
        except (DataError, RunMismatch) as e:
            raise fail(str(e)) from None
        except OSError as e:  # a read-only or full output folder
            raise fail(f"{e.filename or out_dir}: {e.strerror or e}") from None

    @app.command()
    def ablate(
        path: Path = typer.Argument(..., help="Benchmark file the stage-1 model was trained on (its held-out side is "
                                              "asked), e.g. ../shared/data/webqa/val_records.json.gz."),
        dataset: str = typer.Option("webqa", "--dataset", help="A registered dataset: webqa | mmqa | jsonl (data/datasets.py)."),
        out_dir: Path = typer.Option(Path("out/ablate"), "--out", help="Output folder (re-running resumes)."),
        model: str = typer.Option("default", help="The trained model the stage-1 rows use (its settings included)."),
        heldout: Optional[str] = typer.Option(None, "--heldout", help="Whose held-out questions: a model spec or a "
                                                                       "folder with split.json (default: --model's); "
                                                                       "none: every question (a benchmark no model "
                                                                       "here trained on, e.g. MMQA)."),
        reader: Optional[str] = typer.Option(None, help="Stage-2 model the retriever-alone row answers with "
                                                        "(default: the shipped model's own stage2_model)."),
        sources: int = typer.Option(2, min=1, max=10, help="Sources each system cites (WebQA questions have 1-2)."),
        stage2_models: list[str] = typer.Option([], "--stage2-model", help="A stage-2 model to weigh against the "
                                                "shipped one (a run or adapter folder), SPEC or NAME=SPEC (repeatable): "
                                                "adds a row (candidate_stage2, or NAME) and its NAME_rank view that "
                                                "read the same survivors."),
        stage2_ranking: str = typer.Option("generate", "--stage2-ranking", help="How the --stage2-model rows read "
                                           "its ranking (stage2_ranking): generate | likelihood | consistent; other "
                                           "than generate adds a NAME_written view of the list it wrote."),
        limit: Optional[int] = typer.Option(None, min=1, help="First N held-out questions."),
        with_gold: bool = typer.Option(False, "--with-gold", help=WITH_GOLD_HELP),
        only: list[str] = typer.Option([], "--only", help="Run only these systems (repeatable)."),
        record_in: Optional[Path] = typer.Option(None, "--record-in", help="An exported model folder (e.g. "
                                                 "src/mmrag_rft/trained/stage1): write the table into its manifest "
                                                 "and model card."),
    ) -> None:
        """What each stage adds: the retriever alone, the untrained model, the shipped system and stage 2's
        ranking, on the same held-out questions in one resumable run; writes ablation.json/.md/.png."""
        from mmrag_rft.config import ConfigError
        from mmrag_rft.data.schema import DataError
        from mmrag_rft.evaluation.ablate import ablation_markdown, default_systems, run_ablation
        from mmrag_rft.evaluation.evaluate import RunMismatch

        check_dataset(dataset)
        if not path.exists():
            raise fail(f"{path}: file not found")
        if reader is None:
            reader = _pipeline_config(None, [], model).stage2_model
        heldout = None if heldout == "none" else (heldout or model)
        candidates: dict[str, str] = {}
        for entry in stage2_models:
            name, _, spec = entry.partition("=") if "=" in entry else ("candidate_stage2", "", entry)
            if not name.isidentifier() or not spec or name in candidates:
                raise fail(f"--stage2-model {entry!r}: give SPEC or NAME=SPEC, each NAME once (NAME: letters, digits, _)")
            candidates[name] = spec
        from typing import get_args

        from mmrag_rft.pipeline import Stage2Ranking

        if stage2_ranking not in get_args(Stage2Ranking):  # the pipeline's own choices, checked before anything loads
            raise fail(f"--stage2-ranking {stage2_ranking!r}: choose one of {', '.join(get_args(Stage2Ranking))}")
        systems = default_systems(reader, sources=sources, model=model, candidates=candidates,
                                  candidate_ranking=stage2_ranking)
        taken = [s.name for s in systems]
        clash = next((n for n in candidates
                      if any(taken.count(f"{n}{v}") > 1 for v in ("", "_rank", "_written"))), None)
        if clash:
            raise fail(f"--stage2-model {clash}=...: that name is a system already; choose another")
        if only:
            names = {s.name for s in systems}
            unknown = [o for o in only if o not in names]
            if unknown:
                raise fail(f"--only {unknown[0]!r}: not a system ({', '.join(sorted(names))})")
            keep = set(only) | {s.view_of for s in systems if s.name in only and s.view_of}
            systems = [s for s in systems if s.name in keep]
        for spec in filter(None, (reader, *candidates.values())):
            load_backend_or_fail(spec)  # a missing reader fails here, before any question is asked
        try:
            summary = run_ablation(path, dataset=dataset, out_dir=out_dir, heldout=heldout, limit=limit,
                                   systems=systems, load=load_backend_or_fail, with_gold=with_gold)
        except (DataError, RunMismatch, ConfigError) as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(f"{e.filename or out_dir}: {e.strerror or e}") from None
        if record_in is not None:
            import shlex
            import sys

            from mmrag_rft.models.export import record_ablation

            try:
                record_ablation(record_in, summary, command="mmrag " + shlex.join(sys.argv[1:]))
            except (ValueError, OSError) as e:
                raise fail(f"--record-in {record_in}: {e}") from None
        print(ablation_markdown(summary))  # plain: rich would wrap the table's rows
        console.print(f"wrote {out_dir / 'ablation.json'}, {out_dir / 'ablation.md'}, {out_dir / 'ablation.png'}")
