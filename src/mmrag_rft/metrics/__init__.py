"""Official benchmark metrics (WebQA QA-Acc / retrieval F1 / optional QA-FL, MMQA list EM/F1) and ranking
metrics, as pure functions: no model is imported unless QA-FL is asked for with its weights."""

from mmrag_rft.metrics.mmqa import list_em, list_f1, score_mmqa
from mmrag_rft.metrics.ranking import mrr, ndcg_at_k, precision_at_k, ranking_report, recall_at_k, set_prf
from mmrag_rft.metrics.text import lemmatizer_name, set_lemmatizer
from mmrag_rft.metrics.webqa import FluencyUnavailable, qa_acc, qa_fluency, references_for, retrieval_prf, score_webqa

__all__ = [
    "FluencyUnavailable", "lemmatizer_name", "list_em", "list_f1", "mrr", "ndcg_at_k", "precision_at_k",
    "qa_acc", "qa_fluency", "ranking_report", "recall_at_k", "references_for", "retrieval_prf", "score_mmqa",
    "score_webqa", "set_lemmatizer", "set_prf",
]
