"""Regression: a number per text or text pair (STS-B similarity scores).

The label column holds numbers; the head has one linear output trained with
mean squared error or Huber loss. Metrics are Pearson's and Spearman's
correlation (STS-B's official pair) and the mean squared error; the export
returns the score.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune import serving
from tf_finetune.tasks import text

SCORE_NAME = "score"


def parse_scores(examples) -> np.ndarray:
  """float32 [num_examples] of the labels; names file and line if not
  numbers."""
  scores = []
  for label, line in zip(examples.labels, examples.line_numbers):
    try:
      value = float(label)
    except ValueError:
      value = math.nan
    if not math.isfinite(value):
      raise ValueError(
          f"{examples.source}:{line}: the label {label!r} is not a number; "
          "--task=regression needs a numeric --label_column."
      )
    scores.append(value)
  return np.array(scores, dtype=np.float32)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson's correlation; 0 when either side is constant."""
  x = np.asarray(x, np.float64) - np.mean(x)
  y = np.asarray(y, np.float64) - np.mean(y)
  denominator = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
  return float(np.sum(x * y) / denominator) if denominator else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks; tied values share the mean of their ranks."""
  values = np.asarray(values)
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values), np.float64)
  sorted_values = values[order]
  start = 0
  while start < len(values):
    stop = start
    while (
        stop + 1 < len(values)
        and sorted_values[stop + 1] == sorted_values[start]
    ):
      stop += 1
    ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
    start = stop + 1
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman's correlation: Pearson's of the (tie-averaged) ranks."""
  return pearson(average_ranks(x), average_ranks(y))


class PearsonCorrelation(tf_keras.metrics.Metric):
  """Streaming Pearson's correlation of labels [batch], outputs [batch, 1]."""

  def __init__(self, name="pearson", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.sums = self.add_weight(
        "sums", shape=(6,), initializer="zeros", dtype=tf.float64
    )

  def update_state(self, y_true, y_pred, sample_weight=None):
    x = tf.reshape(tf.cast(y_true, tf.float64), [-1])
    y = tf.reshape(tf.cast(y_pred, tf.float64), [-1])
    self.sums.assign_add(
        tf.stack(
            [
                tf.cast(tf.size(x), tf.float64),
                tf.reduce_sum(x),
                tf.reduce_sum(y),
                tf.reduce_sum(x * x),
                tf.reduce_sum(y * y),
                tf.reduce_sum(x * y),
            ]
        )
    )

  def reset_state(self):
    self.sums.assign(tf.zeros_like(self.sums))

  def result(self):
    n, sx, sy, sxx, syy, sxy = tf.unstack(self.sums)
    covariance = n * sxy - sx * sy
    variances = (n * sxx - sx * sx) * (n * syy - sy * sy)
    return tf.cast(
        tf.math.divide_no_nan(covariance, tf.sqrt(tf.maximum(variances, 0.0))),
        tf.float32,
    )


def regression_loss(kind: str, delta: float):
  """Per-example MSE or Huber loss of labels [batch] and outputs [batch, 1]."""

  def loss(labels, outputs):
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    error = tf.reshape(tf.cast(outputs, tf.float32), [-1]) - labels
    if kind == "mse":
      return tf.square(error)
    absolute = tf.abs(error)
    quadratic = tf.minimum(absolute, delta)
    # 0.5 e^2 inside [-delta, delta], delta (|e| - delta / 2) outside.
    return 0.5 * tf.square(quadratic) + delta * (absolute - quadratic)

  return loss


class RegressionServer(serving.EncoderServer):
  """The score of each text (or pair): score (float32 [batch])."""

  def serve_ids(
      self, input_ids, attention_mask, token_type_ids, chunk_mask=None
  ):
    logits = self.logits(input_ids, attention_mask, token_type_ids, chunk_mask)
    return {"score": logits[:, 0]}


class Regression(text.TextTask):
  """A number per text or pair, e.g. a similarity score from 0 to 5."""

  name = "regression"
  checked_output = "score"

  def label_vocab_of(self, examples):
    parse_scores(examples)
    return [SCORE_NAME]

  def check_labels(self, examples, flag):
    parse_scores(examples)

  def label_ids(self, examples):
    return parse_scores(examples)

  def loss_fn(self, train):
    return regression_loss(self.config.regression_loss, self.config.huber_delta)

  def keras_metrics(self):
    return [PearsonCorrelation(), tf_keras.metrics.MeanSquaredError(name="mse")]

  def predict(self, model, encoded, *, batch_size):
    return self.logits(model, encoded, batch_size=batch_size)[:, 0]

  def metrics(self, examples, encoded, outputs):
    labels = np.asarray(encoded.label_ids, np.float64)
    scores = np.asarray(outputs, np.float64)
    losses = regression_loss(
        self.config.regression_loss, self.config.huber_delta
    )(labels, scores[:, None])
    return {
        "num_examples": int(len(labels)),
        "pearson": pearson(scores, labels),
        "spearman": spearman(scores, labels),
        "mse": float(np.mean((scores - labels) ** 2)),
        "loss": float(np.mean(losses.numpy())),
    }

  def describe(self, metrics):
    return (
        f"pearson: {metrics['pearson']:.4f}  spearman: "
        f"{metrics['spearman']:.4f}  mse: {metrics['mse']:.4f}  "
        f"({metrics['num_examples']} examples)"
    )

  def server(self, trained):
    return RegressionServer(
        trained.model,
        trained.encoder,
        task_name=self.name,
        label_vocab=[SCORE_NAME],
        input_names=self.server_input_names(),
    )

  def prediction_rows(self, outputs):
    return [
        {"predicted_score": round(float(score), 6)}
        for score in outputs["score"]
    ]
