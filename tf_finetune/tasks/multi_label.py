"""Multi-label classification: any number of labels per text (or pair).

Labels come either from one column holding several labels (split on
`--label_delimiter`; a JSONL field may also hold a list) or from one 0/1
column per label (`--label_columns=sports,politics,...`). The head has a
sigmoid output per label trained with binary cross-entropy. A label is
predicted when its probability reaches the threshold: `--threshold`, or,
with `--tune_threshold`, the one that maximizes micro-F1 on the validation
data; the threshold is saved with the model (task_state.json) and built into
the export, which returns the labels above it. On the data that tuned it the
tuned threshold is the best by construction, so there eval_results.json
gives the metrics at `--threshold`, and those at the tuned threshold under
"selection_at_tuned_threshold".
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune import serving
from tf_finetune.data import labels as labels_lib
from tf_finetune.data import readers
from tf_finetune.tasks import text

# Thresholds tried when tuning on validation data: 0.05, 0.10, ..., 0.95.
CANDIDATE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


def f1_scores(targets: np.ndarray, predicted: np.ndarray) -> dict:
  """Micro and macro F1, precision and recall of 0/1 arrays [n, labels].

  Micro counts every (example, label) decision together; macro averages the
  per-label F1 (a label never predicted nor present scores 0).
  """
  targets = np.asarray(targets, bool)
  predicted = np.asarray(predicted, bool)
  true_positives = np.sum(targets & predicted, axis=0).astype(np.float64)
  predicted_count = np.sum(predicted, axis=0).astype(np.float64)
  actual_count = np.sum(targets, axis=0).astype(np.float64)

  def ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)

  per_label_f1 = ratio(2 * true_positives, predicted_count + actual_count)
  tp, pc, ac = true_positives.sum(), predicted_count.sum(), actual_count.sum()
  return {
      "micro_f1": float(2 * tp / (pc + ac)) if pc + ac else 0.0,
      "micro_precision": float(tp / pc) if pc else 0.0,
      "micro_recall": float(tp / ac) if ac else 0.0,
      "macro_f1": float(np.mean(per_label_f1)),
      "per_label_f1": per_label_f1,
  }


def _exact_match(
    targets: np.ndarray, probabilities: np.ndarray, threshold: float
) -> float:
  """The share of examples whose every label is right at `threshold`."""
  return float(
      np.mean(np.all((probabilities >= threshold) == (targets > 0.5), axis=1))
  )


def best_threshold(targets: np.ndarray, probabilities: np.ndarray) -> float:
  """The candidate threshold with the highest micro-F1 (ties: nearest 0.5)."""
  scored = [
      (f1_scores(targets, probabilities >= t)["micro_f1"], -abs(t - 0.5), t)
      for t in CANDIDATE_THRESHOLDS
  ]
  return max(scored)[2]


class MultiLabelF1(tf_keras.metrics.Metric):
  """Streaming micro or macro F1 of logits, a label predicted when its
  probability (sigmoid of its logit) reaches `threshold`."""

  def __init__(
      self,
      num_labels: int,
      average: str = "micro",
      name=None,
      *,
      threshold: float = 0.5,
      **kwargs,
  ):
    super().__init__(name=name or f"{average}_f1", dtype="float32", **kwargs)
    self.num_labels = num_labels
    self.average = average
    self.threshold = float(threshold)
    # Rows: true positives, predicted, actual; one column per label.
    self.counts = self.add_weight(
        "counts", shape=(3, num_labels), initializer="zeros", dtype=tf.float32
    )

  def update_state(self, y_true, y_pred, sample_weight=None):
    targets = tf.cast(y_true, tf.float32)
    # As the export decides: the float32 probability against the threshold.
    probabilities = tf.sigmoid(tf.cast(y_pred, tf.float32))
    predicted = tf.cast(probabilities >= self.threshold, tf.float32)
    self.counts.assign_add(
        tf.stack(
            [
                tf.reduce_sum(targets * predicted, axis=0),
                tf.reduce_sum(predicted, axis=0),
                tf.reduce_sum(targets, axis=0),
            ]
        )
    )

  def reset_state(self):
    self.counts.assign(tf.zeros_like(self.counts))

  def result(self):
    true_positives, predicted, actual = tf.unstack(self.counts)
    if self.average == "micro":
      return tf.math.divide_no_nan(
          2.0 * tf.reduce_sum(true_positives), tf.reduce_sum(predicted + actual)
      )
    return tf.reduce_mean(
        tf.math.divide_no_nan(2.0 * true_positives, predicted + actual)
    )

  def get_config(self):
    return {
        **super().get_config(),
        "num_labels": self.num_labels,
        "average": self.average,
        "threshold": self.threshold,
    }


def binary_cross_entropy(labels, logits):
  """Per-example binary cross-entropy, averaged over the labels."""
  losses = tf.nn.sigmoid_cross_entropy_with_logits(
      tf.cast(labels, tf.float32), tf.cast(logits, tf.float32)
  )
  return tf.reduce_mean(losses, axis=-1)


class MultiLabelServer(serving.EncoderServer):
  """Per-label probabilities and the labels at or above the threshold.

  Outputs: probabilities (float32 [batch, num_labels]), predicted (int32
  [batch, num_labels], 1 where at or above the threshold), labels (string
  [batch], the predicted labels joined by the delimiter). `get_threshold()`
  (not a signature) returns the threshold.
  """

  def __init__(
      self, model, encoder, *, threshold: float, delimiter: str, **kwargs
  ):
    super().__init__(model, encoder, **kwargs)
    self.threshold = tf.constant(threshold, tf.float32)
    self.delimiter = delimiter
    self.get_threshold = tf.function(lambda: self.threshold, input_signature=[])

  def serve_ids(
      self, input_ids, attention_mask, token_type_ids, chunk_mask=None
  ):
    probabilities = tf.sigmoid(
        self.logits(input_ids, attention_mask, token_type_ids, chunk_mask)
    )
    predicted = probabilities >= self.threshold
    names = tf.broadcast_to(self.label_vocab, tf.shape(predicted))
    labels = tf.strings.reduce_join(
        tf.ragged.boolean_mask(names, predicted),
        axis=1,
        separator=self.delimiter,
    )
    return {
        "probabilities": probabilities,
        "predicted": tf.cast(predicted, tf.int32),
        "labels": labels,
    }


class MultiLabel(text.TextTask):
  """Several labels per text or pair."""

  name = "multi_label"

  def read(self, data, split, *, path=None, with_labels=True):
    if (
        with_labels
        and not (path or getattr(data, f"{split}_file"))
        and data.tfds_name
    ):
      raise ValueError(
          f"--task=multi_label reads labels from CSV, TSV or "
          f"JSONL files, not from --tfds_name={data.tfds_name}."
      )
    examples = text.read_text_split(data, split, path=path, with_labels=False)
    if examples is None or not with_labels:
      return examples
    label_sets = [
        self._labels_of(row, line, examples.source, data)
        for row, line in zip(examples.rows, examples.line_numbers)
    ]
    return dataclasses.replace(examples, labels=label_sets)

  def _labels_of(self, row: dict, line: int, source: str, data) -> tuple:
    columns = self.config.label_column_names
    if columns:
      labels = []
      for column in columns:
        if column not in row:
          raise ValueError(
              f"{source}:{line}: --label_columns names "
              f"{column!r}, which this row lacks; columns are: "
              f"{', '.join(map(str, row))}."
          )
        value = readers.label_to_string(row[column]).lower()
        if value not in _TRUE + _FALSE:
          raise ValueError(
              f"{source}:{line}: the {column!r} value "
              f"{row[column]!r} is not 0 or 1."
          )
        if value in _TRUE:
          labels.append(column)
      return tuple(labels)
    column = data.label_column
    if column not in row:
      raise ValueError(
          f"{source}:{line}: --label_column={column!r} is "
          f"missing; columns are: {', '.join(map(str, row))}."
      )
    value = row[column]
    if isinstance(value, list):
      values = [readers.label_to_string(item) for item in value]
    elif self.config.label_delimiter:
      values = str(value).split(self.config.label_delimiter)
    else:
      values = [readers.label_to_string(value)]
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))

  def label_vocab_of(self, examples):
    columns = self.config.label_column_names
    if columns:
      return columns
    vocab = sorted({label for labels in examples.labels for label in labels})
    if len(vocab) < 2:
      raise ValueError(
          f"{examples.source}: the labels hold {len(vocab)} distinct "
          "label(s); multi-label classification needs at least two. Is "
          f"--label_delimiter right (got {self.config.label_delimiter!r})?"
      )
    return vocab

  def check_labels(self, examples, flag):
    labels_lib.check_label_lists(examples, self.state.label_vocab, flag)

  def label_ids(self, examples):
    label_vocab = self.state.label_vocab
    index = {label: i for i, label in enumerate(label_vocab)}
    targets = np.zeros((len(examples), len(label_vocab)), np.float32)
    for row, labels in enumerate(examples.labels):
      for label in labels:
        targets[row, index[label]] = 1.0
    return targets

  def loss_fn(self, train):
    return binary_cross_entropy

  def keras_metrics(self):
    # Training and validation during fit use --threshold; a threshold tuned
    # on validation data is chosen after fit, for evaluation and export.
    threshold = self.config.threshold
    return [
        MultiLabelF1(self.head_size(), "micro", threshold=threshold),
        MultiLabelF1(self.head_size(), "macro", threshold=threshold),
    ]

  def predict(self, model, encoded, *, batch_size):
    logits = self.logits(model, encoded, batch_size=batch_size)
    return 1.0 / (1.0 + np.exp(-logits))

  @property
  def threshold(self) -> float:
    """The threshold chosen on validation data, else --threshold."""
    return float(self.state.chosen.get("threshold", self.config.threshold))

  def choose(self, examples, encoded, outputs):
    if not self.config.tune_threshold:
      return {"threshold": self.config.threshold, "tuned": False}
    threshold = best_threshold(encoded.label_ids, outputs)
    return {
        "threshold": threshold,
        "tuned": True,
        "tuned_on": examples.source,
        "candidates": list(CANDIDATE_THRESHOLDS),
    }

  def selection(self):
    return {
        "threshold": (
            "validation" if self.state.chosen.get("tuned") else "--threshold"
        )
    }

  def metrics(self, examples, encoded, outputs):
    """The metrics at the threshold in use. On the data that tuned it, the
    headline metrics are at --threshold, and those at the tuned threshold
    (selection numbers: it is the best there by construction) are under
    "selection_at_tuned_threshold"."""
    targets = encoded.label_ids
    chosen = self.state.chosen
    tuned_here = bool(chosen.get("tuned")) and (
        chosen.get("tuned_on") == examples.source
    )
    threshold = self.config.threshold if tuned_here else self.threshold
    scores = f1_scores(targets, outputs >= threshold)
    clipped = np.clip(outputs, 1e-7, 1 - 1e-7)
    loss = -np.mean(
        targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)
    )
    per_label = scores.pop("per_label_f1")
    results = {
        "num_examples": int(len(targets)),
        "threshold": threshold,
        **scores,
        "exact_match": _exact_match(targets, outputs, threshold),
        "micro_f1_at_0.5": f1_scores(targets, outputs >= 0.5)["micro_f1"],
        "loss": float(loss),
        "per_label": {
            label: {
                "f1": float(per_label[i]),
                "support": int(targets[:, i].sum()),
            }
            for i, label in enumerate(self.state.label_vocab)
        },
    }
    if tuned_here:
      tuned = f1_scores(targets, outputs >= self.threshold)
      results["selection_at_tuned_threshold"] = {
          "threshold": self.threshold,
          "micro_f1": tuned["micro_f1"],
          "macro_f1": tuned["macro_f1"],
          "exact_match": _exact_match(targets, outputs, self.threshold),
      }
    return results

  def describe(self, metrics):
    line = (
        f"micro-F1: {metrics['micro_f1']:.4f}  macro-F1: "
        f"{metrics['macro_f1']:.4f}  at threshold "
        f"{metrics['threshold']:.2f}"
    )
    tuned = metrics.get("selection_at_tuned_threshold")
    if tuned:
      line += (
          f"; at the threshold tuned on these examples, {tuned['threshold']:.2f}"
          f": micro-F1 {tuned['micro_f1']:.4f} (selection)"
      )
    return line + f"  ({metrics['num_examples']} examples)"

  def server(self, trained):
    return MultiLabelServer(
        trained.model,
        trained.encoder,
        threshold=self.threshold,
        delimiter=self.config.label_delimiter or "|",
        task_name=self.name,
        label_vocab=self.state.label_vocab,
        input_names=self.server_input_names(),
    )

  def prediction_rows(self, outputs):
    label_vocab = self.state.label_vocab
    return [
        {
            "predicted_labels": [
                label for label, on in zip(label_vocab, predicted) if on
            ],
            "probabilities": {
                name: round(float(p), 6) for name, p in zip(label_vocab, probs)
            },
        }
        for predicted, probs in zip(
            outputs["predicted"], outputs["probabilities"]
        )
    ]
