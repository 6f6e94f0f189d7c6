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


# CSV/TSV columns of a prediction's dict-valued field: "probabilities" ->
# probability_<label>.
_CSV_PREFIXES = {"probabilities": "probability_"}


class Predictor:
  """Runs raw texts through the same graph TF Serving would run.

  Built either from a `model_dir` (the trained weights, wrapped exactly as
  the export wraps them) or from an exported SavedModel directory.
  """

  def __init__(self, serve, label_vocab: Sequence[str], text_pair: bool,
               source: str, task_name: str = "classification"):
    from tf_finetune import config as config_lib, tasks
    self._serve = serve
    self.label_vocab = list(label_vocab)
    self.text_pair = text_pair
    self.source = source
    self.task_name = task_name
    # serving_default's inputs: text and text_pair, or question and context.
    self.input_names = tasks.get_task(
        config_lib.TaskConfig(task=task_name)).input_names

  @classmethod
  def from_model_dir(cls, model_dir: str) -> Predictor:
    from tf_finetune import artifacts, tasks  # transformers only when needed.
    trained = artifacts.load_trained(model_dir)
    task = tasks.get_task(trained.config.task)
    text_pair = trained.config.data.text_pair_column is not None
    server = task.server(trained.model, trained.encoder, trained.label_vocab,
                         text_pair=text_pair, state=trained.task_state)
    signature = server.signatures()[serving.DEFAULT_SIGNATURE]
    return cls(signature, trained.label_vocab, text_pair, model_dir,
               task.name)

  @classmethod
  def from_saved_model(cls, path: str) -> Predictor:
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
    task_name = (loaded.get_task().numpy().decode("utf-8")
                 if hasattr(loaded, "get_task") else "classification")
    text_pair = len(signature.structured_input_signature[1]) == 2
    return cls(signature, label_vocab, text_pair, path, task_name)

  def _batches(self, texts, text_pairs, batch_size):
    """Yields (rows, numpy outputs) for batches of similar length."""
    if self.text_pair and text_pairs is None:
      raise ValueError(f"The model at {self.source} reads sentence pairs; "
                       "set --text_pair_column to the second text's column.")
    if not self.text_pair and text_pairs is not None:
      raise ValueError(f"The model at {self.source} reads single texts; "
                       "drop --text_pair_column.")
    # Similar lengths per batch: less padding, same results.
    order = np.argsort([len(text) for text in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
      rows = order[start:start + batch_size]
      first, second = self.input_names
      inputs = {first: tf.constant([texts[i] for i in rows])}
      if text_pairs is not None:
        inputs[second] = tf.constant([text_pairs[i] for i in rows])
      yield rows, {name: value.numpy()
                   for name, value in self._serve(**inputs).items()}

  def predict(self, texts: Sequence[str],
              text_pairs: Optional[Sequence[str]] = None, *,
              batch_size: int = 64) -> np.ndarray:
    """Classification: float32 [len(texts), num_labels] probabilities."""
    if self.task_name != "classification":
      raise ValueError(f"The model at {self.source} is a {self.task_name} "
                       "model; use predict_rows.")
    probabilities = np.zeros((len(texts), len(self.label_vocab)), np.float32)
    for rows, outputs in self._batches(texts, text_pairs, batch_size):
      probabilities[rows] = outputs["probabilities"]
    return probabilities

  def predict_rows(self, texts: Sequence[str],
                   text_pairs: Optional[Sequence[str]] = None, *,
                   batch_size: int = 64) -> list[dict]:
    """The task's prediction columns for each text, in input order."""
    from tf_finetune import config as config_lib, tasks
    task = tasks.get_task(config_lib.TaskConfig(task=self.task_name))
    found: list[dict] = [{} for _ in texts]
    for rows, outputs in self._batches(texts, text_pairs, batch_size):
      for row, columns in zip(rows, task.prediction_rows(outputs,
                                                         self.label_vocab)):
        found[row] = columns
    return found


def _flat_columns(prediction: dict) -> dict:
  """One CSV cell per value: dicts spread over columns, lists as JSON."""
  flat = {}
  for name, value in prediction.items():
    if isinstance(value, dict):
      prefix = _CSV_PREFIXES.get(name, f"{name}_")
      for key, item in value.items():
        flat[f"{prefix}{key}"] = (f"{item:.6f}" if isinstance(item, float)
                                  else item)
    elif isinstance(value, (list, tuple)):
      flat[name] = json.dumps(value, ensure_ascii=False)
    else:
      flat[name] = value
  return flat


def write_prediction_rows(path: str, examples: readers.Examples,
                          predictions: Sequence[dict]) -> None:
  """Writes each input row followed by its prediction's columns.

  JSONL records get the prediction's fields as they are (objects, lists);
  CSV/TSV get one column per value (`probability_<label>` for
  classification, lists as JSON text). The file is replaced atomically.
  """
  fmt = readers.file_format(path, "--output_file")
  out = io.StringIO()
  if fmt == "jsonl":
    for row, prediction in zip(examples.rows, predictions):
      out.write(json.dumps(dict(row, **prediction), ensure_ascii=False) +
                "\n")
  else:
    flat = [_flat_columns(prediction) for prediction in predictions]
    input_columns = list(examples.rows[0])
    columns = input_columns + [name for name in flat[0]
                               if name not in input_columns]
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",",
                        lineterminator="\n")
    writer.writerow(columns)
    for row, prediction in zip(examples.rows, flat):
      values = dict(row, **prediction)
      writer.writerow([_cell(values.get(c, "")) for c in columns])
  io_utils.write_text_atomically(path, out.getvalue())
  logging.info("Wrote %d predictions to %s.", len(predictions), path)


# TFDS label names of the GLUE tasks whose submissions hold 0/1 (CoLA, SST-2,
# MRPC, QQP); MNLI, QNLI, RTE and AX submissions hold the label names.
GLUE_BINARY_LABELS = (("unacceptable", "acceptable"), ("negative", "positive"),
                      ("not_equivalent", "equivalent"),
                      ("not_duplicate", "duplicate"))


def glue_prediction(prediction: dict, label_vocab: Sequence[str]) -> str:
  """One prediction as the GLUE leaderboard wants it."""
  if "predicted_score" in prediction:
    return f"{prediction['predicted_score']:.3f}"
  if "predicted_label" not in prediction:
    raise ValueError("--glue_tsv is for classification and regression "
                     "models (GLUE has no multi-label or tagging task).")
  label = prediction["predicted_label"]
  for names in GLUE_BINARY_LABELS:
    if set(label_vocab) == set(names):
      return str(names.index(label))
  return label


def write_glue_tsv(path: str, examples: readers.Examples,
                   predictions: Sequence[dict],
                   label_vocab: Sequence[str]) -> None:
  """Writes the GLUE submission format: a header `index<TAB>prediction`,
  then one line per example.

  The index is the example's `idx` (TFDS, GLUE's own files call it `index`)
  column when the input has one, else its position.
  """
  if not path.endswith(".tsv"):
    raise ValueError(f"--output_file={path!r}: --glue_tsv writes a .tsv file "
                     "(e.g. MRPC.tsv, STS-B.tsv).")
  lines = ["index\tprediction"]
  for position, (row, prediction) in enumerate(zip(examples.rows,
                                                   predictions)):
    index = row.get("idx", row.get("index", position))
    lines.append(f"{index}\t{glue_prediction(prediction, label_vocab)}")
  io_utils.write_text_atomically(path, "\n".join(lines) + "\n")
  logging.info("Wrote %d GLUE predictions to %s.", len(predictions), path)


def _cell(value) -> str:
  if isinstance(value, (list, tuple, dict)):
    return json.dumps(value, ensure_ascii=False)
  return value
