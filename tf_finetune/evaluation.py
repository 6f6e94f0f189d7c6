"""Classification metrics and batch prediction."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.data import pipeline


def predict_probabilities(model, encoded: pipeline.EncodedExamples, *,
                          batch_size: int, pad_id: int) -> np.ndarray:
  """float32 array [num_examples, num_labels] of softmax probabilities."""
  dataset, order = pipeline.inference_dataset(
      encoded, batch_size=batch_size, pad_id=pad_id, with_labels=False)
  logits = model.predict(dataset, verbose=0)
  probabilities = np.empty_like(logits, dtype=np.float32)
  probabilities[order] = tf.nn.softmax(logits).numpy()
  return probabilities


def classification_metrics(label_ids: np.ndarray, probabilities: np.ndarray,
                           label_vocab: Sequence[str]) -> dict:
  """Accuracy, macro-F1, loss, per-class precision/recall/F1 and confusion.

  Args:
    label_ids: int array [num_examples] of true label ids.
    probabilities: float array [num_examples, num_labels].
    label_vocab: Label names by id.

  Returns:
    A JSON-serializable dict.
  """
  num_labels = len(label_vocab)
  predictions = probabilities.argmax(axis=-1)
  confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
  np.add.at(confusion, (label_ids, predictions), 1)
  true_positives = np.diag(confusion).astype(np.float64)
  predicted = confusion.sum(axis=0)
  actual = confusion.sum(axis=1)
  precision = np.divide(true_positives, predicted,
                        out=np.zeros(num_labels), where=predicted > 0)
  recall = np.divide(true_positives, actual, out=np.zeros(num_labels),
                     where=actual > 0)
  f1 = np.divide(2 * precision * recall, precision + recall,
                 out=np.zeros(num_labels), where=(precision + recall) > 0)
  picked = probabilities[np.arange(len(label_ids)), label_ids]
  loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
  return {
      "num_examples": int(len(label_ids)),
      "accuracy": float(np.mean(predictions == label_ids)),
      "macro_f1": float(np.mean(f1)),
      "loss": loss,
      "per_class": {
          label: {"precision": float(precision[i]), "recall": float(recall[i]),
                  "f1": float(f1[i]), "support": int(actual[i])}
          for i, label in enumerate(label_vocab)
      },
      "confusion_matrix": {"labels": list(label_vocab),
                           "rows_true_columns_predicted": confusion.tolist()},
  }
