"""Task metrics for fine-tuning evaluation: classification, regression, NER, extractive QA, retrieval.

    from bert_jax import evaluation
    evaluation.classification_metrics(labels, logits)   # {"accuracy", "f1", "mcc", "predicted_classes"}

  classification  accuracy, f1, matthews_corrcoef, classification_metrics (scikit-learn)
  regression      pearson, spearman, regression_metrics (scipy.stats)
  tagging         entity_spans, entity_f1, token_accuracy (seqeval / conlleval)
  squad           normalize_answer, exact_match, span_f1, squad_metrics (official SQuAD v1.1 / v2.0 script)
  retrieval       recall_at_k, mrr, ndcg_at_k (pytrec_eval / BEIR / MS MARCO)
  runs            summarize_runs, degenerate_runs, lower_is_better: statistics over seeds / restarts;
                  summary_table: them as Markdown

Pure numpy, so evaluation needs neither JAX devices nor scikit-learn. Every
function names the reference implementation it reproduces (scikit-learn,
scipy, seqeval, the official SQuAD script); tests/test_evaluation.py checks
them against it. Scores are fractions in [0, 1], never percentages, returned as
Python floats so they serialize to JSON as they are.
"""

from bert_jax.evaluation.classification import accuracy, classification_metrics, f1, matthews_corrcoef
from bert_jax.evaluation.regression import pearson, regression_metrics, spearman
from bert_jax.evaluation.retrieval import mrr, ndcg_at_k, recall_at_k
from bert_jax.evaluation.runs import degenerate_runs, lower_is_better, summarize_runs, summary_table
from bert_jax.evaluation.squad import exact_match, normalize_answer, span_f1, squad_metrics
from bert_jax.evaluation.tagging import entity_f1, entity_spans, token_accuracy

__all__ = [
    "accuracy", "classification_metrics", "degenerate_runs", "entity_f1", "entity_spans", "exact_match", "f1",
    "lower_is_better", "matthews_corrcoef", "mrr", "ndcg_at_k", "normalize_answer", "pearson", "recall_at_k", "regression_metrics",
    "span_f1", "spearman", "squad_metrics", "summarize_runs", "summary_table", "token_accuracy",
]
