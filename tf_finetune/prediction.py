"""Batch prediction from a training run or an exported SavedModel."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune import io_utils, serving
from tf_finetune.data import readers


class Predictor:
  """Classifies raw texts with the same graph TF Serving would run.

  Built either from a `model_dir` (the trained weights, wrapped exactly as
  the export wraps them) or from an exported SavedModel directory.
  """

  def __init__(self, classify, label_vocab: Sequence[str], text_pair: bool,
               source: str):
    self._classify = classify
    self.label_vocab = list(label_vocab)
    self.text_pair = text_pair
    self.source = source

  @classmethod
  def from_model_dir(cls, model_dir: str) -> "Predictor":
    from tf_finetune import artifacts  # transformers only when needed.
    trained = artifacts.load_trained(model_dir)
    text_pair = trained.config.data.text_pair_column is not None
    server = serving.ClassifierServer(trained.model, trained.encoder,
                                      trained.label_vocab,
                                      text_pair=text_pair)
    signature = server.signatures()[serving.DEFAULT_SIGNATURE]
    return cls(signature, trained.label_vocab, text_pair, model_dir)

  @classmethod
  def from_saved_model(cls, path: str) -> "Predictor":
    """Loads a version directory, or the latest version under a base dir."""
    import tensorflow_text  # noqa: F401  Registers the tokenizer ops.
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
      latest = serving.latest_version_dir(path)
      if latest is None:
        raise ValueError(f"--saved_model={path!r} is neither a SavedModel nor "
                         "an export directory with numbered versions.")
      path = latest
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[serving.DEFAULT_SIGNATURE]
    label_vocab = [label.decode("utf-8")
                   for label in loaded.get_label_vocab().numpy()]
    text_pair = "text_pair" in signature.structured_input_signature[1]
    return cls(signature, label_vocab, text_pair, path)

  def predict(self, texts: Sequence[str],
              text_pairs: Optional[Sequence[str]] = None, *,
              batch_size: int = 64) -> np.ndarray:
    """float32 array [len(texts), num_labels] of class probabilities."""
    if self.text_pair and text_pairs is None:
      raise ValueError(f"The model at {self.source} classifies sentence "
                       "pairs; set --text_pair_column.")
    if not self.text_pair and text_pairs is not None:
      raise ValueError(f"The model at {self.source} classifies single texts; "
                       "drop --text_pair_column.")
    # Similar lengths per batch: less padding, same results.
    order = np.argsort([len(text) for text in texts], kind="stable")
    probabilities = np.zeros((len(texts), len(self.label_vocab)), np.float32)
    for start in range(0, len(texts), batch_size):
      rows = order[start:start + batch_size]
      inputs = {"text": tf.constant([texts[i] for i in rows])}
      if text_pairs is not None:
        inputs["text_pair"] = tf.constant([text_pairs[i] for i in rows])
      probabilities[rows] = self._classify(**inputs)["probabilities"].numpy()
    return probabilities


def write_predictions(path: str, examples: readers.Examples,
                      probabilities: np.ndarray,
                      label_vocab: Sequence[str]) -> None:
  """Writes each input row with `predicted_label` and its probabilities.

  CSV/TSV get one `probability_<label>` column per label; JSONL gets a
  `probabilities` object. The file is replaced atomically.
  """
  fmt = readers.file_format(path, "--output_file")
  predicted = [label_vocab[i] for i in probabilities.argmax(axis=-1)]
  out = io.StringIO()
  if fmt == "jsonl":
    for row, label, probs in zip(examples.rows, predicted, probabilities):
      record = dict(row, predicted_label=label, probabilities={
          name: round(float(p), 6) for name, p in zip(label_vocab, probs)})
      out.write(json.dumps(record, ensure_ascii=False) + "\n")
  else:
    columns = list(examples.rows[0]) + ["predicted_label"] + [
        f"probability_{name}" for name in label_vocab]
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",",
                        lineterminator="\n")
    writer.writerow(columns)
    for row, label, probs in zip(examples.rows, predicted, probabilities):
      writer.writerow([row.get(c, "") for c in examples.rows[0]] + [label] +
                      [f"{float(p):.6f}" for p in probs])
  io_utils.write_text_atomically(path, out.getvalue())
  logging.info("Wrote %d predictions to %s.", len(predicted), path)
