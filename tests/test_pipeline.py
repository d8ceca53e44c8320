"""The whole pipeline for real: index -> stage 1 -> filter -> stage 2, on the tiny Qwen2-VL (pixels through the
vision tower) and on the embedded default model."""

from __future__ import annotations

import json

import pytest

from mmrag_rft.data import demo_corpus_dir
from mmrag_rft.data.jsonl import load_corpus, load_samples_jsonl
from mmrag_rft.models.loading import load_backend
from mmrag_rft.pipeline import ABSTAIN_ANSWER, FilterConfig, Pipeline, PipelineConfig
from mmrag_rft.retrieval.build import build_index
from mmrag_rft.retrieval.index import HybridIndex
from mmrag_rft.retrieval.layout import RetrievalConfig


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "index"
    build_index(load_corpus(demo_corpus_dir() / "corpus.jsonl"), out, RetrievalConfig(), base_dir=demo_corpus_dir())
    return HybridIndex.load(out)


@pytest.fixture(scope="module")
def demo_questions():
    return list(load_samples_jsonl(demo_corpus_dir() / "questions.jsonl"))


def _check_result(r, index, top_n):
    assert len(r.judgements) == top_n
    assert all(0.0 <= j.score <= 1.0 for j in r.judgements)
    kept = [j.id for j in r.judgements if j.kept]
    assert sorted(kept) == sorted(r.kept_ids)
    assert all(cid in index for cid in r.rank)
    json.dumps(r.to_dict())  # serialisable
    assert set(r.timings) == {"retrieve_s", "stage1_s", "stage2_s", "total_s"}


def test_tiny_vlm_pipeline_with_pixels(demo_index, demo_questions):
    backend = load_backend("tiny-vlm")
    assert backend.supports_images
    cfg = PipelineConfig(top_n=6, filter=FilterConfig(threshold=0.0, top_k=3), stage2_max_new_tokens=12)
    pipe = Pipeline(backend, index=demo_index, config=cfg)
    q = next(s for s in demo_questions if any(demo_index.get(g).modality == "image" for g in s.gold_ids))
    r = pipe.ask(q.question, qid=q.qid)
    _check_result(r, demo_index, 6)
    assert len(r.kept_ids) == 3  # threshold 0 keeps the top_k best
    assert not r.abstained
    # random weights cannot follow the template: the ranking must fall back to the filter's order, and say so
    if r.fallback:
        assert r.rank == r.kept_ids


def test_abstains_when_nothing_survives(demo_index, demo_questions):
    pipe = Pipeline(load_backend("tiny-lm"), index=demo_index,
                    config=PipelineConfig(top_n=4, filter=FilterConfig(threshold=1.0, top_k=3)))
    r = pipe.ask(demo_questions[0].question)
    assert r.abstained and r.answer == ABSTAIN_ANSWER and r.rank == [] and r.kept_ids == []
    assert r.timings["stage2_s"] == 0.0


def test_request_overrides_do_not_leak(demo_index, demo_questions):
    pipe = Pipeline(load_backend("tiny-lm"), index=demo_index,
                    config=PipelineConfig(top_n=4, filter=FilterConfig(threshold=0.0, top_k=2),
                                          stage2_max_new_tokens=8))
    r = pipe.ask(demo_questions[0].question, top_k=1)
    assert len(r.kept_ids) == 1
    assert pipe.config.filter.top_k == 2


def test_pool_mode_on_a_real_webqa_question(shared_data):
    from mmrag_rft.data.loaders import load_samples

    s = next(load_samples(shared_data / "webqa" / "val_records.json.gz", format="webqa", limit=1))
    pipe = Pipeline(load_backend("tiny-lm"), config=PipelineConfig(top_n=5, filter=FilterConfig(threshold=0.0, top_k=2),
                                                                   stage2_max_new_tokens=8))
    r = pipe.ask(s.question, candidates=s.candidates, qid=s.qid)
    assert len(r.judgements) == 5
    assert {j.id for j in r.judgements} <= {c.id for c in s.candidates}
    assert len(r.kept_ids) == 2


class _Fixed:
    """A backend whose P(yes) falls with the candidate's place and whose stage-2 output is fixed."""

    supports_images = False

    def __init__(self, model_id, text="judged each.</think><rank>[2] > [1]</rank><answer>blue</answer>"):
        self.model_id, self.text, self.generated = model_id, text, 0

    def score_yes_no(self, prompts, reuse_prefix=True):
        return [0.9 - 0.1 * i for i in range(len(prompts))]

    def generate(self, prompts, **kw):
        self.generated += len(prompts)
        return [[self.text] for _ in prompts]


CITES_9 = "the caption says so.</think><rank>[9] > [1]</rank><answer>red</answer>"  # [9] is never among the kept


def test_faithfulness_flags_ids_that_do_not_exist(demo_index, demo_questions):
    pipe = Pipeline(_Fixed("scripted", CITES_9), index=demo_index,
                    config=PipelineConfig(top_n=3, filter=FilterConfig(0.5, 2)))
    r = pipe.ask(demo_questions[0].question)
    assert r.answer == "red"
    assert not r.faithful and "[9]" in r.unfaithful_ids
    assert r.rank[0] == r.kept_ids[0]


def test_sources_can_follow_the_filter_and_say_so(demo_index, demo_questions):
    """sources: filter (a stage 2 not yet trained to rank): the answer is stage 2's, the cited sources the filter's
    top max_sources, and the result names what was bypassed."""
    reversed_ = _Fixed("reversed", "ok.</think><rank>[3] > [2] > [1]</rank><answer>red</answer>")
    cfg = PipelineConfig(top_n=5, filter=FilterConfig(0.0, 3))
    own = Pipeline(reversed_, index=demo_index, config=cfg).ask(demo_questions[0].question)
    assert own.rank == own.kept_ids[::-1] and not own.bypassed
    cfg = PipelineConfig(top_n=5, filter=FilterConfig(0.0, 3), sources="filter", max_sources=2)
    r = Pipeline(reversed_, index=demo_index, config=cfg).ask(demo_questions[0].question)
    assert r.answer == "red" and r.rank == r.kept_ids[:2]
    assert "filter" in r.bypassed["stage2_ranking"]
    assert r.bypassed["stage2_ranking"].endswith("stage 2 ranked " + " > ".join(own.rank))
    cfg = PipelineConfig(top_n=3, filter=FilterConfig(0.5, 2), sources="filter")
    unusable = Pipeline(_Fixed("scripted", CITES_9), index=demo_index, config=cfg).ask(demo_questions[0].question)
    assert unusable.fallback
    assert "its own <rank> was unusable (rank names unknown ids" in unusable.bypassed["stage2_ranking"]


def test_report_summary_is_tables_not_dicts():
    from mmrag_rft.evaluation.report import summary_tables

    html = summary_tables({"questions": 3, "overall": {"qa_acc": 0.5}, "per_category": {"color": {"acc": 0.25}}})
    assert "{" not in html and "<th>color</th><td>0.250</td>" in html and "<th>acc</th>" in html
    assert "<th>QA-Acc</th><td>0.500</td>" in html  # metric keys get readable names
    html = summary_tables({"config": {"top_n": 20, "filter": {"threshold": 0.0, "order": "fused"}}})
    assert "{" not in html and "filter.threshold" in html and "fused" in html  # a nested setting: dotted rows


def test_report_shows_stage1_as_bars_in_the_filter_order_with_the_kept_set_marked():
    from mmrag_rft.data.schema import Candidate
    from mmrag_rft.evaluation.report import html_report

    cands = {i: Candidate(id=i, modality="text", title=f"title {i}", text="t") for i in "abcd"}
    row = {"question": "q?", "answer": "x", "rank": ["c"], "reasoning": "", "kept_ids": ["c", "a"],
           "gold_ids": ["c"], "judgements": [
               {"id": i, "score": sc, "kept": i in "ca", "relevant": sc >= 0.5} for i, sc in
               [("a", 0.4), ("b", 0.9), ("c", 0.7), ("d", 0.1)]]}
    html = html_report([row], lookup=cands.__getitem__)
    table = html[html.index("Stage-1 judgements"):]
    assert [table.index(f"title {i}") for i in "cabd"] == sorted(table.index(f"title {i}") for i in "cabd")
    assert "<tr class='kept'><td>title c" in table and "<tr class=''><td>title b" in table
    assert "width:90%" in table and "width:10%" in table
    assert "Cited evidence (stage 2's ranking)" in html
    row |= {"fallback": "stage-2 output unusable", "judgements": [dict(j, retrieval_rank=k) for k, j in
                                                                  enumerate(row["judgements"], 1)]}
    html = html_report([row], lookup=cands.__getitem__)
    assert "Cited evidence (the filter's order)" in html and "<td>#3</td>" in html


@pytest.mark.slow
def test_default_model_answers_demo_question(demo_index, demo_questions):
    backend = load_backend("base")  # the untrained reader; the shipped default is measured by the demo and benchmarks
    pipe = Pipeline(backend, index=demo_index,
                    config=PipelineConfig(top_n=5, filter=FilterConfig(threshold=0.0, top_k=3)))
    s = demo_questions[0]
    r = pipe.ask(s.question, qid=s.qid)
    _check_result(r, demo_index, 5)
    assert r.answer.strip()  # the 135M model writes *an* answer; its quality is measured by the benchmarks
    assert r.models["policy"]
    # retrieval put the gold evidence into the pool
    assert set(s.gold_ids) & {j.id for j in r.judgements}


def _js(scores):
    """Judgements in retriever order (rank 1 first) with the given P(yes)."""
    from mmrag_rft.pipeline import Judgement

    return [Judgement(id=f"c{i}", score=s, relevant=s >= 0.5, kept=False, retrieval_rank=i + 1)
            for i, s in enumerate(scores)]


def test_fused_filter_keeps_what_both_orders_agree_on():
    from mmrag_rft.pipeline import coarse_filter

    # stage 1 prefers c3 then c2; the retriever put c0 first; c1 is neither's favourite
    js = _js([0.5, 0.1, 0.8, 0.9])
    assert coarse_filter(js, FilterConfig(threshold=0.0, top_k=2, order="stage1")) == ["c3", "c2"]
    fused = FilterConfig(threshold=0.0, top_k=2, order="fused", rrf_k=0)
    # rrf k=0: c0 1/3 + 1/1, c2 1/2 + 1/3, c3 1/1 + 1/4 -> c0 (1.33), c3 (1.25)
    assert coarse_filter(js, fused) == ["c0", "c3"]
    # the threshold still reads P(yes): c1 (0.1) never passes 0.5, however high the retriever put it
    js2 = _js([0.1, 0.9, 0.6])
    assert "c0" not in coarse_filter(js2, FilterConfig(threshold=0.5, top_k=3, order="fused", retrieval_weight=10))
    # a retrieval weight of 0 gives stage 1's order back
    assert coarse_filter(js, FilterConfig(threshold=0.0, top_k=4, order="fused", retrieval_weight=0)) == \
        coarse_filter(js, FilterConfig(threshold=0.0, top_k=4, order="stage1"))


def test_fused_filter_without_retrieval_ranks_falls_back_to_stage1():
    from mmrag_rft.pipeline import Judgement, coarse_filter

    js = [Judgement(id=f"c{i}", score=s, relevant=False, kept=False) for i, s in enumerate([0.2, 0.9, 0.5])]
    assert coarse_filter(js, FilterConfig(threshold=0.0, top_k=2, order="fused")) == ["c1", "c2"]


def test_fused_filter_config_is_checked():
    with pytest.raises(ValueError, match="rrf_k"):
        FilterConfig(order="fused", rrf_k=-1)


def test_pool_mode_with_fused_filter_ranks_the_pool(shared_data):
    from mmrag_rft.data.loaders import load_samples

    class Flat:
        """Every candidate scores the same: the fused order is then the retriever's."""

        model_id = "flat"
        supports_images = False

        def score_yes_no(self, prompts, reuse_prefix=True):
            return [0.7 for _ in prompts]

        def generate(self, prompts, **kw):
            return [["ok.</think><rank>[1]</rank><answer>x</answer>"] for _ in prompts]

    s = next(load_samples(shared_data / "webqa" / "val_records.json.gz", format="webqa", limit=1))
    cfg = PipelineConfig(top_n=len(s.candidates), filter=FilterConfig(threshold=0.5, top_k=3, order="fused"))
    r = Pipeline(Flat(), config=cfg).ask(s.question, candidates=s.candidates)
    assert [j.retrieval_rank for j in r.judgements] == list(range(1, len(s.candidates) + 1))
    assert r.kept_ids == [j.id for j in r.judgements[:3]]  # ties in P(yes): the retriever decides


def test_stage2_model_reads_the_survivors_and_is_named(demo_index, demo_questions):
    """One model per stage: the stage-1 backend judges, the reader writes stage 2, and the result names both."""
    judge, reader = _Fixed("judge", "x</think><rank>[1]</rank><answer>WRONG</answer>"), _Fixed("reader")
    cfg = PipelineConfig(top_n=4, filter=FilterConfig(0.0, 2), stage2_model="some-reader")
    r = Pipeline(judge, index=demo_index, config=cfg, reader=reader).ask(demo_questions[0].question)
    assert r.answer == "blue" and judge.generated == 0 and reader.generated == 1
    assert r.models["policy"] == "judge" and r.models["stage2"] == "reader"
    assert r.stage2_rank == r.kept_ids[::-1] == r.rank


def test_stage1_skip_sends_the_retrievers_top_k_and_says_so(demo_index, demo_questions):
    q = demo_questions[0].question
    cfg = PipelineConfig(top_n=6, stage1_mode="skip", filter=FilterConfig(threshold=0.99, top_k=2))
    backend = _Fixed("m")
    r = Pipeline(backend, index=demo_index, config=cfg).ask(q)
    order = [h.candidate.id for h in demo_index.search(q, top_n=6)]
    assert r.kept_ids == order[:2] and not r.abstained  # the threshold is not applied: nobody judged
    assert "stage1" in r.bypassed
    assert [j.retrieval_rank for j in r.judgements] == list(range(1, 7))


def test_closed_book_answers_from_the_question_alone_and_says_so(demo_index, demo_questions):
    class _Seen(_Fixed):
        def generate(self, prompts, **kw):
            self.prompts = prompts
            return super().generate(prompts, **kw)

    reader = _Seen("reader", "no evidence.</think><rank></rank><answer>two</answer>")
    cfg = PipelineConfig(closed_book=True, stage2_model="some-reader")
    r = Pipeline(_Fixed("judge"), index=demo_index, config=cfg, reader=reader).ask(demo_questions[0].question)
    assert r.answer == "two" and not r.abstained and r.rank == [] and r.judgements == [] and r.kept_ids == []
    assert "retrieval" in r.bypassed and "stage1" not in r.bypassed
    assert "[1]" not in reader.prompts[0].messages[-1]["content"]  # no candidate reached the prompt


def test_stage1_skip_on_a_pool_follows_the_retrievers_order(shared_data):
    from mmrag_rft.data.loaders import load_samples

    s = next(iter(load_samples(shared_data / "webqa" / "val_records.json.gz", format="webqa", limit=1)))
    cfg = PipelineConfig(top_n=len(s.candidates), stage1_mode="skip", filter=FilterConfig(top_k=2))
    r = Pipeline(_Fixed("m"), config=cfg).ask(s.question, candidates=s.candidates)
    from mmrag_rft.retrieval.pool import rank_pool

    assert r.kept_ids == [h.candidate.id for h in rank_pool(s.question, s.candidates, 2)]


def test_huge_questions_and_candidate_texts_are_clipped_before_tokenising(demo_index, caplog):
    """A 108 KB question (40 s and 5 GB before) and a 10 MB caption are clipped, with a warning naming them."""
    from mmrag_rft.data.schema import Candidate
    from mmrag_rft.retrieval.embed import MAX_INDEXED_CHARS, candidate_text

    cfg = PipelineConfig(top_n=3, filter=FilterConfig(0.0, 1), max_question_chars=500)
    with caplog.at_level("WARNING"):
        r = Pipeline(_Fixed("m"), index=demo_index, config=cfg).ask("colour? " * 13_500)
    assert len(r.question) == 500 and "characters; using the first 500" in caplog.text
    big = Candidate(id="huge", modality="image", text="a cat " * 2_000_000)
    with caplog.at_level("WARNING"):
        assert len(candidate_text(big)) == MAX_INDEXED_CHARS
    assert "'huge'" in caplog.text


def test_a_stage2_model_that_is_not_installed_degrades_to_the_stage1_model_and_says_so(demo_index, demo_questions):
    cfg = PipelineConfig(top_n=3, filter=FilterConfig(0.0, 2), stage2_model="/no/such/reader")
    judge = _Fixed("judge")
    r = Pipeline(judge, index=demo_index, config=cfg).ask(demo_questions[0].question)
    assert r.answer == "blue" and judge.generated == 1  # the stage-1 model read and answered
    assert "/no/such/reader" in r.bypassed["stage2_model"] and "stage2" not in r.models


def test_pool_retrieval_can_be_minilm_or_bm25_alone():
    """`pool_retrieval`: a benchmark pool ranked by MiniLM cosine alone (the ablation's MiniLM top-k row), by BM25
    alone, or by both fused as the index fuses."""
    from mmrag_rft.data.schema import Candidate
    from mmrag_rft.retrieval.pool import rank_pool

    pool = [Candidate(id=str(i), modality="text", text=t) for i, t in enumerate([
        "Tower tower tower, height of a tower.", "The Eiffel Tower in Paris is 330 metres tall.",
        "Cats sleep most of the day.", "Paris is the capital of France.", "How tall is it? Nobody knows."])]
    q = "How tall is the Eiffel Tower?"
    orders = {}
    for mode in ("hybrid", "dense", "bm25"):
        cfg = PipelineConfig(top_n=5, pool_retrieval=mode)
        orders[mode] = [c.id for c, _ in Pipeline(None, config=cfg).retrieve(q, candidates=pool)]
    assert orders["hybrid"] == [h.id for h in rank_pool(q, pool, 5)]
    assert orders["dense"] == [h.id for h in rank_pool(q, pool, 5, config=RetrievalConfig(use_bm25=False))]
    assert orders["bm25"] == [h.id for h in rank_pool(q, pool, 5, config=RetrievalConfig(use_dense=False))]
    assert orders["dense"] != orders["bm25"]


def test_a_stage2_model_trained_without_think_gets_the_prompt_it_was_trained_on(demo_index, demo_questions, tmp_path):
    """`data.think: false` in stage 2: the exported manifest says `prompt.think: false`, and the pipeline then
    prefills up to `<rank>[` for that reader (the stage-1 model's own setting never decides it)."""
    import json

    folder = tmp_path / "nothink"
    folder.mkdir()
    (folder / "mmrag_model.json").write_text(json.dumps({"stage": 2, "prompt": {"layout": "default", "think": False}}))
    (folder / "config.json").write_text("{}")  # a model folder by its shape; the reader below is never loaded

    class Recording(_Fixed):
        def generate(self, prompts, **kw):
            self.prompts = prompts
            return super().generate(prompts, **kw)

    stage1 = Recording("stage-1 model", "ok.</think><rank>[2] > [1]</rank><answer>red</answer>")
    for spec, text, prefill in ((str(folder), "2] > [1]</rank><answer>red</answer>", "<rank>["),
                                ("", "ok.</think><rank>[2] > [1]</rank><answer>red</answer>", "<think>")):
        reader = Recording("reader", text) if spec else stage1
        pipe = Pipeline(stage1, index=demo_index, config=PipelineConfig(top_n=3, filter=FilterConfig(0.0, 2),
                                                                        stage2_model=spec), reader=reader)
        r = pipe.ask(demo_questions[0].question)
        assert reader.prompts[-1].prefill.endswith(prefill) and pipe.reader_think is (not spec)
        assert r.answer == "red" and not r.fallback and r.rank == r.kept_ids[::-1], (spec, r.raw_stage2)
