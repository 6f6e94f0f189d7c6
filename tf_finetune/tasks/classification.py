"""Classification: one label per text or text pair (SST-2, MRPC, MNLI, ...).

Reads a label column of strings or integers; the label vocabulary is the
sorted set of training labels. Softmax head, cross-entropy (with optional
label smoothing), accuracy and macro-F1; the export returns probabilities,
the label and its id.
"""

from __future__ import annotations

import numpy as np
import tf_keras

from tf_finetune import evaluation, serving
from tf_finetune.data import labels, readers
from tf_finetune.models.classifier import MacroF1
from tf_finetune.tasks import base


class Classification(base.TextTask):
  """Single-label classification of texts or text pairs."""

  name = "classification"

  def label_vocab(self, examples):
    return labels.infer_label_vocab(examples.labels, examples.source)

  def check_labels(self, examples, label_vocab, flag):
    readers.check_labels_known(examples, label_vocab, flag)

  def label_ids(self, examples, label_vocab):
    index = {label: i for i, label in enumerate(label_vocab)}
    return np.array([index[label] for label in examples.labels],
                    dtype=np.int32)

  def keras_metrics(self, label_vocab):
    return [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            MacroF1(len(label_vocab))]

  def predict(self, model, encoded, *, batch_size, pad_id):
    return evaluation.predict_probabilities(model, encoded,
                                            batch_size=batch_size,
                                            pad_id=pad_id)

  def metrics(self, examples, encoded, outputs, label_vocab, state):
    return evaluation.classification_metrics(encoded.label_ids, outputs,
                                             label_vocab)

  def describe(self, metrics):
    return (f"accuracy: {metrics['accuracy']:.4f}  macro-F1: "
            f"{metrics['macro_f1']:.4f}  loss: {metrics['loss']:.4f}  "
            f"({metrics['num_examples']} examples)")

  def server(self, model, encoder, label_vocab, *, text_pair, state):
    return serving.ClassifierServer(model, encoder, label_vocab,
                                    text_pair=text_pair)

  def prediction_rows(self, outputs, label_vocab):
    return [{"predicted_label": label_vocab[int(np.argmax(probs))],
             "probabilities": {name: round(float(p), 6)
                               for name, p in zip(label_vocab, probs)}}
            for probs in outputs["probabilities"]]
