"""The official SQuAD metrics, the no-answer threshold, and the training
loss and metric of the span head.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

# Official SQuAD metrics.
_ARTICLES = re.compile(r"\b(a|an|the)\b")


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation and articles, collapse whitespace."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
  """Token-level F1 of normalized answers (1 if both are empty)."""
  predicted = normalize_answer(prediction).split()
  expected = normalize_answer(gold).split()
  if not predicted or not expected:
    return float(predicted == expected)
  common = sum(
      (collections.Counter(predicted) & collections.Counter(expected)).values()
  )
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(expected)
  return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[dict]) -> list[str]:
  """The gold answers the official script scores against ("" if none)."""
  texts = [a["text"] for a in answers if normalize_answer(a["text"])]
  return texts or [""]


def squad_scores(
    predictions: Sequence[str],
    gold_answers: Sequence[Sequence[dict]],
    *,
    exact_key: str = "exact_match",
) -> dict:
  """Exact match and F1 in percent, with the HasAns/NoAns breakdown.

  Args:
    predictions: The predicted answer of each question ("" for none).
    gold_answers: Each question's answers (dicts with "text"); [] for an
      unanswerable question.
    exact_key: The name of exact match: "exact_match" as the SQuAD v1.1
      script, "exact" as the v2.0 script ("HasAns_exact", ...).
  """
  exact, f1, has_answer = [], [], []
  for prediction, answers in zip(predictions, gold_answers):
    golds = gold_texts(answers)
    exact.append(max(exact_match_score(prediction, g) for g in golds))
    f1.append(max(f1_score(prediction, g) for g in golds))
    has_answer.append(golds != [""])
  exact, f1 = np.array(exact), np.array(f1)
  has_answer = np.array(has_answer, dtype=bool)
  scores = {
      exact_key: 100.0 * float(exact.mean()) if len(exact) else 0.0,
      "f1": 100.0 * float(f1.mean()) if len(f1) else 0.0,
      "total": len(exact),
  }
  for name, mask in (("HasAns", has_answer), ("NoAns", ~has_answer)):
    if mask.any():
      scores[f"{name}_{exact_key}"] = 100.0 * float(exact[mask].mean())
      scores[f"{name}_f1"] = 100.0 * float(f1[mask].mean())
      scores[f"{name}_total"] = int(mask.sum())
  return scores


def best_null_threshold(
    null_minus_span: np.ndarray, f1_answered: np.ndarray, f1_empty: np.ndarray
) -> tuple[float, float]:
  """The no-answer threshold with the best mean F1, and that F1 (0-1).

  An example is answered when null score - span score <= threshold.
  Thresholds between consecutive distinct differences are tried; the
  chosen one is the midpoint of the best gap.
  """
  order = np.argsort(null_minus_span, kind="stable")
  diffs = null_minus_span[order]
  total = float(np.sum(f1_empty))
  best_total, best_threshold = total, float(diffs[0]) - 1.0
  for rank, example in enumerate(order):
    total += float(f1_answered[example] - f1_empty[example])
    if rank + 1 < len(order) and diffs[rank + 1] == diffs[rank]:
      continue
    if total > best_total:
      best_total = total
      best_threshold = (
          float(diffs[rank] + diffs[rank + 1]) / 2
          if rank + 1 < len(order)
          else float(diffs[rank]) + 1.0
      )
  return best_threshold, best_total / len(order)


def best_threshold_scores(
    predictions: Sequence[str],
    gold_answers: Sequence[Sequence[dict]],
    null_minus_span: np.ndarray,
) -> dict:
  """The SQuAD v2.0 script's `best_exact`, `best_f1` and their thresholds.

  Each is the score at the no-answer threshold best for these very
  questions: an oracle choice, a selection number on any data, unlike
  `exact` and `f1` at a threshold chosen elsewhere.

  Args:
    predictions: The best span's answer of each question (never "").
    gold_answers: Each question's answers; [] for an unanswerable one.
    null_minus_span: float [questions], no-answer score - span score; a
      question is answered when it is <= the threshold.

  Returns:
    {"best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"},
    scores in percent.
  """
  golds = [gold_texts(answers) for answers in gold_answers]
  empty = np.array([float(gold == [""]) for gold in golds])
  scores = {}
  for name, score in (("exact", exact_match_score), ("f1", f1_score)):
    answered = np.array(
        [
            max(score(prediction, g) for g in gold)
            for prediction, gold in zip(predictions, golds)
        ]
    )
    threshold, best = best_null_threshold(
        np.asarray(null_minus_span, np.float64), answered, empty
    )
    scores[f"best_{name}"] = 100.0 * best
    scores[f"best_{name}_thresh"] = threshold
  return scores


class PositionAccuracy(tf_keras.metrics.Metric):
  """How often the most likely start and end positions are the targets."""

  def __init__(self, name="position_accuracy", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.correct = self.add_weight("correct", initializer="zeros")
    self.total = self.add_weight("total", initializer="zeros")

  def update_state(self, y_true, y_pred, sample_weight=None):
    targets = tf.cast(y_true, tf.int32)  # [batch, 2]
    predicted = tf.argmax(y_pred, axis=1, output_type=tf.int32)
    self.correct.assign_add(
        tf.reduce_sum(tf.cast(predicted == targets, tf.float32))
    )
    self.total.assign_add(tf.cast(tf.size(targets), tf.float32))

  def reset_state(self):
    self.correct.assign(0.0)
    self.total.assign(0.0)

  def result(self):
    return tf.math.divide_no_nan(self.correct, self.total)


def span_loss(labels, logits):
  """Mean of the start and end cross-entropies per window.

  Args:
    labels: int32 [batch, 2] start and end positions.
    logits: float32 [batch, seq_len, 2].

  Returns:
    float32 [batch].
  """
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  start = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels[:, 0], logits[:, :, 0]
  )
  end = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels[:, 1], logits[:, :, 1]
  )
  return (start + end) / 2.0
