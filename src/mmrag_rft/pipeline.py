"""retrieve -> stage 1 (point-wise judgements) -> coarse filter -> stage 2 (list-wise rank + answer) -> Result."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mmrag_rft.models.backend import PolicyBackend
from mmrag_rft.prompts import Stage1Layout

Stage2Ranking = Literal["generate", "likelihood", "consistent"]  # `PipelineConfig.stage2_ranking`

log = logging.getLogger(__name__)


@dataclass
class FilterConfig:
    """The coarse filter between the stages: keep candidates with P(yes) >= threshold, at most top_k of them.

    The top_k cut follows reciprocal-rank fusion of stage 1's order (P(yes)) and the retriever's (`order: fused`),
    so a stage-1 model that judges relevance only a little better than chance adds to the retriever rather than
    replacing it: at the default threshold and top_k it keeps more of the gold evidence than P(yes) alone for
    every stage-1 model measured (benchmarks/README.md, the coarse filter's value).
    """

    threshold: float = 0.5
    top_k: int = 5
    min_keep: int = 0  # keep at least this many (best-scored) even below the threshold; 0 lets stage 1 abstain
    order: Literal["stage1", "fused"] = "fused"  # stage1: P(yes) alone
    retrieval_weight: float = 1.0  # fused: weight of the retriever's order (stage 1's is 1)
    rrf_k: int = 60  # fused: reciprocal-rank fusion constant

    RANGES = {"threshold": (0.0, 1.0), "top_k": (0, 1000), "min_keep": (0, 1000), "retrieval_weight": (0.0, None),
              "rrf_k": (0, None)}

    def __post_init__(self) -> None:
        from mmrag_rft.config import check_ranges

        check_ranges(self)


@dataclass
class PipelineConfig:
    top_n: int = 20  # candidates retrieved (or taken from the sample's own pool)
    # how a benchmark's own pool is ranked (no index): hybrid (dense + BM25 fused, as the index); dense (MiniLM
    # cosine alone: the ablation's "MiniLM top-k" row); bm25 (lexical alone)
    pool_retrieval: Literal["hybrid", "dense", "bm25"] = "hybrid"
    # score: P(yes) in one forward pass; reason: sampled judgements, majority vote; skip: no stage 1, the retriever's
    # top_k go to stage 2 (the ablation's "retriever alone" row)
    stage1_mode: Literal["score", "reason", "skip"] = "score"
    # stage 2 answers from the question alone: nothing retrieved, no stage 1 (the ablation's closed-book row)
    closed_book: bool = False
    stage1_layout: Stage1Layout = "default"  # `prompts.STAGE1_LAYOUTS`: the layout the stage-1 model was trained with
    stage1_samples: int = 3  # reason mode: sampled judgements per candidate, majority vote
    stage1_max_new_tokens: int = 64
    stage1_batch_size: int = 16
    filter: FilterConfig = field(default_factory=FilterConfig)
    stage2_model: str = ""  # model spec that reads the survivors and answers (stage 2); "": the stage-1 model
    stage2_max_new_tokens: int = 160
    stage2_temperature: float = 0.0
    # stage 2's ranking: generate: the <rank> list it writes; likelihood: its P(id ranked first) over the survivors
    # read together, averaged over every rotation of their order so position cancels (`listwise`; k extra passes);
    # consistent: the order it receives, with its first pick moved first only where that pick holds in every rotation
    stage2_ranking: Stage2Ranking = "generate"
    use_pixels: bool = True  # pass image pixels to a vision-language backend (captions are always given)
    # whose ranking the cited sources follow: stage 2's <rank> list, or the filter's order (for a stage 2 whose
    # ranking does not yet beat the order it receives; the answer still comes from stage 2)
    sources: Literal["stage2", "filter"] = "stage2"
    max_sources: int = 0  # cite at most this many (0: all that the chosen ranking lists)
    max_question_chars: int = 2000  # longer questions are clipped (with a warning) before anything tokenises them

    # the same bounds the HTTP API puts on its per-request fields, where they overlap
    RANGES = {"top_n": (1, 1000), "stage1_samples": (1, 64), "stage1_max_new_tokens": (1, 4096),
              "stage1_batch_size": (1, 4096), "stage2_max_new_tokens": (1, 8192), "stage2_temperature": (0.0, 5.0),
              "max_sources": (0, 1000), "max_question_chars": (1, 1_000_000)}

    def __post_init__(self) -> None:
        from mmrag_rft.config import check_ranges

        check_ranges(self)


def pipeline_config(model: str = "default", path: Any = None, overrides: list[str] | None = None) -> PipelineConfig:
    """PipelineConfig for `model`: dataclass defaults <- the settings the model was trained for (its manifest's
    `pipeline` section: prompt layout, filter operating point) <- YAML `path` <- `key=value` overrides."""
    from mmrag_rft.config import load
    from mmrag_rft.models.loading import model_settings, trained_layout

    defaults = dict(model_settings(model).get("pipeline") or {})
    if "stage1_layout" not in defaults and (layout := trained_layout(model)):  # a run folder without a manifest
        defaults["stage1_layout"] = layout
    return load(PipelineConfig, path, overrides, defaults=defaults)


@dataclass
class Judgement:
    """Stage 1's verdict on one candidate."""

    id: str
    score: float  # P(yes) in score mode, share of 'yes' votes in reason mode
    relevant: bool
    kept: bool  # passed the coarse filter and was shown to stage 2
    retrieval_score: float | None = None
    reason: str = ""  # the <think> text in reason mode
    retrieval_rank: int | None = None  # 1-based place in the retriever's order; None for a pool taken as given


@dataclass
class Result:
    """Everything a user needs to trust (or not) an answer."""

    question: str
    answer: str
    rank: list[str]  # candidate ids the answer rests on (the cited sources), most relevant first
    reasoning: str
    judgements: list[Judgement]
    kept_ids: list[str]
    abstained: bool = False
    fallback: str | None = None  # why stage 2's own ranking was not used, if it was not
    faithful: bool = True
    unfaithful_ids: list[str] = field(default_factory=list)
    raw_stage2: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    qid: str | None = None
    bypassed: dict[str, str] = field(default_factory=dict)  # a stage whose output was not used, and why
    stage2_rank: list[str] = field(default_factory=list)  # stage 2's own ranking, whether or not the sources follow it
    stage2_scores: dict[str, float] = field(default_factory=dict)  # likelihood ranking: P(ranked first) per survivor
    stage2_written: list[str] = field(default_factory=list)  # the <rank> list stage 2 wrote ([] where unusable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ABSTAIN_ANSWER = "I found no relevant evidence for this question."


def filter_order(judgements: list[Judgement], f: FilterConfig) -> list[Judgement]:
    """The order the filter cuts: by P(yes), or fused with the retriever's order (`filter.order: fused`).

    Judgements come in the retriever's order; without a retrieval rank (a pool taken as given) fusion would mix
    in an arbitrary order, so it falls back to P(yes) alone.
    """
    by_score = sorted(judgements, key=lambda j: -j.score)
    if f.order != "fused" or any(j.retrieval_rank is None for j in judgements):
        return by_score
    from mmrag_rft.retrieval.fusion import reciprocal_rank_fusion

    by_rank = sorted(judgements, key=lambda j: j.retrieval_rank or 0)
    fused = reciprocal_rank_fusion([[j.id for j in by_score], [j.id for j in by_rank]], k=f.rrf_k,
                                   weights=[1.0, f.retrieval_weight])
    by_id = {j.id: j for j in judgements}
    return [by_id[i] for i, _ in fused]


def coarse_filter(judgements: list[Judgement], f: FilterConfig) -> list[str]:
    """Ids kept for stage 2: P(yes) >= threshold, in `filter_order`, at most top_k (at least min_keep)."""
    order = filter_order(judgements, f)
    kept = [j for j in order if j.score >= f.threshold][: max(0, f.top_k)]
    if len(kept) < f.min_keep:
        kept = order[: min(f.min_keep, max(0, f.top_k) or f.min_keep)]
    return [j.id for j in kept]


def check_question(question: str | None) -> str:
    """The question stripped, or ValueError saying why it cannot be asked (empty, or not valid Unicode)."""
    question = (question or "").strip()
    if not question:
        raise ValueError("question is empty")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("question contains characters that are not valid Unicode (a lone surrogate)") from None
    return question


def load_reader(spec: str) -> tuple[Any, str | None]:
    """The stage-2 backend `spec` names, or (None, why) when it is not installed (a missing wheel or folder): the
    pipeline then lets the stage-1 model read and answer. Any other failure is an error."""
    from mmrag_rft.models.loading import load_backend

    try:
        return load_backend(spec), None
    except FileNotFoundError as e:
        return None, f"stage2_model {spec!r} is not available ({e}); the stage-1 model read the survivors and answered"


@dataclass
class Stage2Output:
    """What stage 2 made of the survivors: ids are candidate ids; `fallback` says why the ranking is the filter's."""

    answer: str
    rank: list[str]
    reasoning: str
    raw: str
    invalid_ids: list[str]  # short ids the model ranked that no survivor has
    error: str | None = None  # what made its own ranking unusable (the parser's first error); None: it was used
    scores: dict[str, float] = field(default_factory=dict)  # likelihood ranking: P(ranked first) per survivor
    written: list[str] = field(default_factory=list)  # the <rank> list it wrote, as ids ([] where unusable)
    note: str | None = None  # consistent ranking: why the order it received was kept

    @property
    def fallback(self) -> str | None:
        if self.error is None:
            return None
        return f"stage-2 output unusable ({self.error}): ranking falls back to the filter's order"


class Pipeline:
    """The explainable MMRAG pipeline over one policy backend and (optionally) a persistent index.

    Candidates come either from the index (`ask(question)`) or from a pool the caller gives
    (`ask(question, candidates=...)`: the benchmarks' own distractor pools).
    """

    def __init__(self, backend: PolicyBackend, *, index: Any = None, config: PipelineConfig | None = None,
                 image_dir: str | None = None, reader: PolicyBackend | None = None):
        self.backend = backend
        self.index = index  # a retrieval.index.HybridIndex, or None when the caller passes candidate pools
        self.config = config or PipelineConfig()
        self.image_dir = image_dir
        self._reader = reader
        self.reader_note: str | None = None  # why `config.stage2_model` is not the one reading, if it is not

    @property
    def reader(self) -> PolicyBackend:
        """The stage-2 backend: `config.stage2_model` (loaded on first use) or, by default, the stage-1 model.

        A stage2_model that is not installed (the reader's wheels, `./run.sh reader`) degrades to the stage-1
        model, and every result says so (`bypassed.stage2_model`); a broken one is an error."""
        if self._reader is None:
            self._reader = self.backend
            if self.config.stage2_model:
                reader, self.reader_note = load_reader(self.config.stage2_model)
                self._reader = reader or self.backend
        return self._reader

    @property
    def models(self) -> dict[str, str]:
        """Which model does what: the stage-1 policy, a separate stage-2 reader (loading it if not yet), the
        retriever's embedder."""
        models = {"policy": str(getattr(self.backend, "model_id", "?"))}
        if self.config.stage2_model and self.reader is not self.backend:
            models["stage2"] = str(getattr(self.reader, "model_id", "?"))
        if self.index is not None:
            models["retriever"] = str(self.index.manifest.embedder or "bm25")
        return models

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_paths(cls, index_dir: str | None = None, *, model: str = "default",
                   config: PipelineConfig | None = None, image_dir: str | None = None) -> Pipeline:
        from mmrag_rft.models.loading import load_backend

        index = None
        if index_dir is not None:
            from mmrag_rft.retrieval.index import HybridIndex

            index = HybridIndex.load(index_dir)
        return cls(load_backend(model), index=index, config=config or pipeline_config(model), image_dir=image_dir)

    @property
    def with_pixels(self) -> bool:
        return bool(self.config.use_pixels and getattr(self.backend, "supports_images", False))

    @functools.cached_property
    def reader_think(self) -> bool:
        """Whether the stage-2 prompt opens `<think>`: as a separate stage-2 model was trained (its manifest or run
        config, read once, not per question), else yes (a stage-1 model's own think setting is about stage 1)."""
        from mmrag_rft.models.loading import trained_think

        if self.config.stage2_model and self.reader is not self.backend:
            try:
                return trained_think(self.config.stage2_model)
            except FileNotFoundError:  # a reader handed in directly, under a name no folder has
                return True
        return True

    @property
    def reader_pixels(self) -> bool:
        return bool(self.config.use_pixels and getattr(self.reader, "supports_images", False))

    # -- stages -------------------------------------------------------------------------------------
    def retrieve(self, question: str, *, candidates: list[Any] | None = None, top_n: int | None = None,
                 query_image: Any = None) -> list[tuple[Any, float | None]]:
        top_n = top_n or self.config.top_n
        if candidates is not None:
            if (len(candidates) <= top_n and self.index is None
                    and self.config.filter.order != "fused" and self.config.stage1_mode != "skip"):
                # a fused filter, and a skipped stage 1, need the retriever's order
                return [(c, None) for c in candidates]
            from mmrag_rft.retrieval.layout import RetrievalConfig
            from mmrag_rft.retrieval.pool import rank_pool

            mode = self.config.pool_retrieval
            rcfg = RetrievalConfig(use_dense=mode != "bm25", use_bm25=mode != "dense") if mode != "hybrid" else None
            hits = rank_pool(question, candidates, top_n, config=rcfg)
            return [(h.candidate, h.score) for h in hits]
        if self.index is None:
            raise ValueError("no index loaded and no candidate pool given: pass candidates= or load an index")
        hits = self.index.search(question, top_n=top_n, query_image=query_image)
        return [(h.candidate, h.score) for h in hits]

    def _image(self, cand: Any, pixels: bool | None = None) -> Any:
        if not ((self.with_pixels if pixels is None else pixels) and cand.modality == "image"):
            return None
        from mmrag_rft.data.images import pixels_or_caption

        return pixels_or_caption(cand, image_dir=self.image_dir)

    def judge(self, question: str, retrieved: list[tuple[Any, float | None]],
              cfg: PipelineConfig | None = None) -> list[Judgement]:
        """Stage 1: every candidate on its own."""
        from mmrag_rft.parsing import parse_stage1
        from mmrag_rft.prompts import stage1_prompt

        cfg = cfg or self.config
        if cfg.stage1_mode == "skip":  # every candidate passes on to the filter in the retriever's order
            return [Judgement(id=c.id, score=0.0, relevant=True, kept=False,
                              retrieval_score=None if r is None else float(r), retrieval_rank=i + 1)
                    for i, (c, r) in enumerate(retrieved)]
        style = "score" if cfg.stage1_mode == "score" else "reason"
        prompts = [stage1_prompt(question, c, with_pixels=self.with_pixels, image=self._image(c), style=style,
                                 layout=cfg.stage1_layout) for c, _ in retrieved]
        scores: list[float] = []
        reasons: list[str] = []
        bs = max(1, cfg.stage1_batch_size)
        for i in range(0, len(prompts), bs):
            chunk = prompts[i:i + bs]
            if style == "score":
                scores.extend(self.backend.score_yes_no(chunk))
                reasons.extend("" for _ in chunk)
            else:
                outs = self.backend.generate(chunk, max_new_tokens=cfg.stage1_max_new_tokens, temperature=0.7,
                                             num_return_sequences=cfg.stage1_samples)
                for p, samples in zip(chunk, outs):
                    parsed = [parse_stage1(s, prefill=p.prefill) for s in samples]
                    votes = [x.decision for x in parsed if x.decision is not None]
                    share = sum(v == "yes" for v in votes) / len(samples) if samples else 0.0
                    scores.append(share)
                    majority = "yes" if share >= 0.5 else "no"
                    reasons.append(next((x.think for x in parsed if x.decision == majority), ""))
        thr = cfg.filter.threshold
        ranked = any(r is not None for _, r in retrieved)
        return [Judgement(id=c.id, score=float(s), relevant=bool(s >= thr), kept=False,
                          retrieval_score=None if r is None else float(r), reason=why,
                          retrieval_rank=i + 1 if ranked else None)
                for i, ((c, r), s, why) in enumerate(zip(retrieved, scores, reasons))]

    def coarse_filter(self, judgements: list[Judgement], cfg: PipelineConfig | None = None) -> list[str]:
        """Keep the clear positives (`coarse_filter`) and mark each judgement kept or not."""
        cfg = cfg or self.config
        if cfg.stage1_mode == "skip":
            ids = [j.id for j in judgements][: max(0, cfg.filter.top_k)]
        else:
            ids = coarse_filter(judgements, cfg.filter)
        for j in judgements:
            j.kept = j.id in ids
        return ids

    def answer(self, question: str, kept: list[Any]) -> Stage2Output:
        """Stage 2: the survivors read together -> the answer, their ranking and the reasoning."""
        from mmrag_rft.parsing import parse_stage2
        from mmrag_rft.prompts import stage2_prompt

        cfg = self.config
        images = [self._image(c, self.reader_pixels) for c in kept]
        prompt = stage2_prompt(question, kept, with_pixels=self.reader_pixels, images=images, think=self.reader_think)
        raw = self.reader.generate([prompt], max_new_tokens=cfg.stage2_max_new_tokens,
                                    temperature=cfg.stage2_temperature)[0][0]
        out = parse_stage2(raw, prefill=prompt.prefill, num_candidates=len(kept))
        id_map: dict[str, str] = prompt.meta.get("id_map", {})
        rank = [id_map[s] for s in out.rank if s in id_map]
        invalid = [s for s in out.rank if s not in id_map]
        written = list(rank) if out.ok else []
        error, scores, note = None, {}, None
        if cfg.stage2_ranking == "likelihood":
            from mmrag_rft.listwise import likelihood_ranking

            ranked = likelihood_ranking(self.reader, question, kept, images=images, with_pixels=self.reader_pixels)
            rank, scores = [i for i, _ in ranked], dict(ranked)
        elif cfg.stage2_ranking == "consistent":
            from mmrag_rft.listwise import consistent_ranking

            ranked, first = consistent_ranking(self.reader, question, kept, images=images,
                                               with_pixels=self.reader_pixels)
            rank, scores = [i for i, _ in ranked], dict(ranked)
            if first is None:
                note = "its first pick changed with the survivors' order (stage2_ranking: consistent): " \
                       "the order it received is kept"
        elif not out.ok or not rank:
            error = out.error or "empty ranking"
            rank = [c.id for c in kept]
        return Stage2Output(answer=out.answer.strip(), rank=rank, reasoning=out.think.strip(), raw=raw,
                            invalid_ids=invalid, error=error, scores=scores, written=written, note=note)

    # -- the whole thing ----------------------------------------------------------------------------
    def ask(self, question: str, *, candidates: list[Any] | None = None, query_image: Any = None,
            top_n: int | None = None, threshold: float | None = None, top_k: int | None = None,
            qid: str | None = None) -> Result:
        import copy
        import time

        question = check_question(question)
        if len(question) > self.config.max_question_chars:
            log.warning("question %r... has %d characters; using the first %d",
                        question[:40], len(question), self.config.max_question_chars)
            question = question[: self.config.max_question_chars]
        cfg = self.config
        if threshold is not None or top_k is not None:  # per-request overrides never touch the shared config
            cfg = copy.deepcopy(cfg)
            if threshold is not None:
                cfg.filter.threshold = float(threshold)
            if top_k is not None:
                cfg.filter.top_k = int(top_k)
        t0 = time.perf_counter()
        retrieved = [] if cfg.closed_book else self.retrieve(question, candidates=candidates, top_n=top_n,
                                                             query_image=query_image)
        t1 = time.perf_counter()
        judgements = self.judge(question, retrieved, cfg)
        kept_ids = self.coarse_filter(judgements, cfg)
        t2 = time.perf_counter()
        by_id = {c.id: c for c, _ in retrieved}
        models = self.models
        if not kept_ids and not cfg.closed_book:
            return Result(question=question, answer=ABSTAIN_ANSWER, rank=[], reasoning="",
                          judgements=judgements, kept_ids=[], abstained=True, qid=qid, models=models,
                          timings={"retrieve_s": t1 - t0, "stage1_s": t2 - t1, "stage2_s": 0.0,
                                   "total_s": t2 - t0})
        s2 = self.answer(question, [by_id[i] for i in kept_ids])
        t3 = time.perf_counter()
        rank, fallback = s2.rank, s2.fallback
        unfaithful = [f"[{s}]" for s in s2.invalid_ids] + [r for r in rank if r not in kept_ids]
        bypassed = {}
        stage2_rank = list(rank) if not fallback else []
        if self.reader_note:
            bypassed["stage2_model"] = self.reader_note
        if cfg.closed_book:
            bypassed["retrieval"] = "closed_book: stage 2 answered from the question alone"
        elif cfg.stage1_mode == "skip":
            bypassed["stage1"] = f"stage1_mode: skip: the retriever's top {cfg.filter.top_k} went to stage 2"
        if s2.note:
            bypassed["stage2_first_pick"] = s2.note
        if cfg.sources == "filter":
            own = f"its own <rank> was unusable ({s2.error})" if fallback else "stage 2 ranked " + " > ".join(rank)
            bypassed["stage2_ranking"] = f"sources follow the filter's order (sources: filter); {own}"
            rank = list(kept_ids)
        if cfg.max_sources:
            rank = rank[: cfg.max_sources]
        return Result(question=question, answer=s2.answer, rank=rank, reasoning=s2.reasoning, judgements=judgements,
                      kept_ids=kept_ids, fallback=fallback, faithful=not unfaithful, unfaithful_ids=unfaithful,
                      raw_stage2=s2.raw, qid=qid, models=models, bypassed=bypassed, stage2_rank=stage2_rank,
                      stage2_scores=s2.scores, stage2_written=s2.written,
                      timings={"retrieve_s": t1 - t0, "stage1_s": t2 - t1, "stage2_s": t3 - t2,
                               "total_s": t3 - t0})
