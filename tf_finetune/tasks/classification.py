"""Classification: one label per text or text pair (SST-2, MRPC, MNLI, ...).

Reads a label column of strings or integers; the label vocabulary is the
sorted set of training labels. Softmax head, cross-entropy (with optional
label smoothing), accuracy and macro-F1; the export returns probabilities,
the label and its id.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune import serving
from tf_finetune.data import labels, readers
from tf_finetune.models.classifier import MacroF1
from tf_finetune.tasks import text


def classification_metrics(
    label_ids: np.ndarray, probabilities: np.ndarray, label_vocab: Sequence[str]
) -> dict:
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
  precision = np.divide(
      true_positives, predicted, out=np.zeros(num_labels), where=predicted > 0
  )
  recall = np.divide(
      true_positives, actual, out=np.zeros(num_labels), where=actual > 0
  )
  f1 = np.divide(
      2 * precision * recall,
      precision + recall,
      out=np.zeros(num_labels),
      where=(precision + recall) > 0,
  )
  picked = probabilities[np.arange(len(label_ids)), label_ids]
  loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
  return {
      "num_examples": int(len(label_ids)),
      "accuracy": float(np.mean(predictions == label_ids)),
      "macro_f1": float(np.mean(f1)),
      "loss": loss,
      "per_class": {
          label: {
              "precision": float(precision[i]),
              "recall": float(recall[i]),
              "f1": float(f1[i]),
              "support": int(actual[i]),
          }
          for i, label in enumerate(label_vocab)
      },
      "confusion_matrix": {
          "labels": list(label_vocab),
          "rows_true_columns_predicted": confusion.tolist(),
      },
  }


class ClassifierServer(serving.EncoderServer):
  """Probabilities of every label, the label and its id.

  serving_default: text (string [batch]) [, text_pair (string [batch])] ->
    probabilities (float32 [batch, num_labels]), label (string [batch]),
    label_id (int32 [batch]). serve_token_ids: the same outputs.
  """

  def serve_ids(
      self, input_ids, attention_mask, token_type_ids, chunk_mask=None
  ):
    logits = self.logits(input_ids, attention_mask, token_type_ids, chunk_mask)
    label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {
        "probabilities": tf.nn.softmax(logits),
        "label": tf.gather(self.label_vocab, label_id),
        "label_id": label_id,
    }


class Classification(text.TextTask):
  """Single-label classification of texts or text pairs."""

  name = "classification"
  supports_streaming = True

  def label_vocab_of(self, examples):
    return labels.infer_label_vocab(examples.labels, examples.source)

  def check_labels(self, examples, flag):
    readers.check_labels_known(examples, self.state.label_vocab, flag)

  def label_ids(self, examples):
    index = {label: i for i, label in enumerate(self.state.label_vocab)}
    return np.array([index[label] for label in examples.labels], dtype=np.int32)

  def keras_metrics(self):
    return [
        tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        MacroF1(self.head_size()),
    ]

  def predict(self, model, encoded, *, batch_size):
    logits = self.logits(model, encoded, batch_size=batch_size)
    return tf.nn.softmax(logits).numpy()

  def metrics(self, examples, encoded, outputs):
    return classification_metrics(
        encoded.label_ids, outputs, self.state.label_vocab
    )

  def describe(self, metrics):
    return (
        f"accuracy: {metrics['accuracy']:.4f}  macro-F1: "
        f"{metrics['macro_f1']:.4f}  loss: {metrics['loss']:.4f}  "
        f"({metrics['num_examples']} examples)"
    )

  def server(self, trained):
    return ClassifierServer(
        trained.model,
        trained.encoder,
        task_name=self.name,
        label_vocab=self.state.label_vocab,
        input_names=self.server_input_names(),
    )

  def prediction_rows(self, outputs):
    label_vocab = self.state.label_vocab
    return [
        {
            "predicted_label": label_vocab[int(np.argmax(probs))],
            "probabilities": {
                name: round(float(p), 6) for name, p in zip(label_vocab, probs)
            },
        }
        for probs in outputs["probabilities"]
    ]
