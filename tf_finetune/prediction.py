"""Batch prediction from a training run or an exported SavedModel."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the tokenizer ops.
from absl import logging

from tf_finetune import config as config_lib
from tf_finetune import artifacts, io_utils, serving, tasks
from tf_finetune.data import readers
from tf_finetune.tasks.base import Task, TaskState


class Predictor:
  """Runs raw texts through the same graph TF Serving would run.

  Built either from a `model_dir` (the trained weights, wrapped exactly as
  the export wraps them) or from an exported SavedModel directory.
  """

  def __init__(self, serve, task: Task, source: str):
    """Args: serve: string tensors [batch] -> outputs; task: its run bound;
    source: where the model came from, for errors."""
    self._serve = serve
    self.task = task
    self.label_vocab = list(task.state.label_vocab)
    self.text_pair = task.state.text_pair
    self.source = source
    self.task_name = task.name
    # serving_default's inputs: text and text_pair, or question and context.
    self.input_names = task.input_names

  @classmethod
  def from_model_dir(cls, model_dir: str) -> Predictor:
    trained = artifacts.load_trained(model_dir)
    return cls(trained.task.python_serving(trained), trained.task, model_dir)

  @classmethod
  def from_saved_model(cls, path: str) -> Predictor:
    """Loads a version directory, or the latest version under a base dir."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
      latest = serving.latest_version_dir(path)
      if latest is None:
        raise ValueError(
            f"--saved_model={path!r} is neither a SavedModel nor "
            "an export directory with numbered versions."
        )
      path = latest
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[serving.DEFAULT_SIGNATURE]
    label_vocab = [
        label.decode("utf-8") for label in loaded.get_label_vocab().numpy()
    ]
    task_name = (
        loaded.get_task().numpy().decode("utf-8")
        if hasattr(loaded, "get_task")
        else "classification"
    )
    task = tasks.get_task(config_lib.task_config(task=task_name))
    task.bind(
        TaskState(
            label_vocab=tuple(label_vocab),
            text_pair=len(signature.structured_input_signature[1]) == 2,
        )
    )
    return cls(signature, task, path)

  def _batches(self, texts, text_pairs, batch_size):
    """Yields (rows, numpy outputs) for batches of similar length."""
    if self.text_pair and text_pairs is None:
      raise ValueError(
          f"The model at {self.source} reads sentence pairs; "
          "set --text_pair_column to the second text's column."
      )
    if not self.text_pair and text_pairs is not None:
      raise ValueError(
          f"The model at {self.source} reads single texts; "
          "drop --text_pair_column."
      )
    # Similar lengths per batch: less padding, same results.
    order = np.argsort([len(text) for text in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
      rows = order[start : start + batch_size]
      # serving_default's inputs: text [and text_pair], question and
      # context, or a translator's one text.
      inputs = {self.input_names[0]: tf.constant([texts[i] for i in rows])}
      if text_pairs is not None:
        inputs[self.input_names[1]] = tf.constant([text_pairs[i] for i in rows])
      yield rows, {
          name: value.numpy() for name, value in self._serve(**inputs).items()
      }

  def predict(
      self,
      texts: Sequence[str],
      text_pairs: Optional[Sequence[str]] = None,
      *,
      batch_size: int = 64,
  ) -> np.ndarray:
    """Classification: float32 [len(texts), num_labels] probabilities."""
    if self.task_name != "classification":
      raise ValueError(
          f"The model at {self.source} is a {self.task_name} "
          "model; use predict_rows."
      )
    probabilities = np.zeros((len(texts), len(self.label_vocab)), np.float32)
    for rows, outputs in self._batches(texts, text_pairs, batch_size):
      probabilities[rows] = outputs["probabilities"]
    return probabilities

  def predict_rows(
      self,
      texts: Sequence[str],
      text_pairs: Optional[Sequence[str]] = None,
      *,
      batch_size: int = 64,
  ) -> list[dict]:
    """The task's prediction columns for each text, in input order."""
    found: list[dict] = [{} for _ in texts]
    for rows, outputs in self._batches(texts, text_pairs, batch_size):
      for row, columns in zip(rows, self.task.prediction_rows(outputs)):
        found[row] = columns
    return found


# TFDS label names of the GLUE tasks whose submissions hold 0/1 (CoLA, SST-2,
# MRPC, QQP); MNLI, QNLI, RTE and AX submissions hold the label names.
GLUE_BINARY_LABELS = (
    ("unacceptable", "acceptable"),
    ("negative", "positive"),
    ("not_equivalent", "equivalent"),
    ("not_duplicate", "duplicate"),
)
# WNLI's submission holds 0/1 too (1: entailment), but RTE and QNLI, whose
# submissions hold the names, have the same two labels: the submission
# file's name, WNLI.tsv, tells them apart.
GLUE_WNLI_LABELS = ("not_entailment", "entailment")
GLUE_WNLI_FILENAME = "WNLI.tsv"


def glue_prediction(
    prediction: dict, label_vocab: Sequence[str], filename: str = ""
) -> str:
  """One prediction as the GLUE leaderboard wants it in the submission file
  `filename` (e.g. "MRPC.tsv"; its name matters for WNLI only)."""
  if "predicted_score" in prediction:
    return f"{prediction['predicted_score']:.3f}"
  if "predicted_label" not in prediction:
    raise ValueError(
        "--glue_tsv is for classification and regression "
        "models (GLUE has no multi-label or tagging task)."
    )
  label = prediction["predicted_label"]
  binary = list(GLUE_BINARY_LABELS)
  if os.path.basename(filename) == GLUE_WNLI_FILENAME:
    binary.append(GLUE_WNLI_LABELS)
  for names in binary:
    if set(label_vocab) == set(names):
      return str(names.index(label))
  return label


def write_glue_tsv(
    path: str,
    examples: readers.Examples,
    predictions: Sequence[dict],
    label_vocab: Sequence[str],
) -> None:
  """Writes the GLUE submission format: a header `index<TAB>prediction`,
  then one line per example.

  The index is the example's `idx` (TFDS, GLUE's own files call it `index`)
  column when the input has one, else its position. Name the file as the
  leaderboard does (CoLA.tsv, MRPC.tsv, WNLI.tsv, ...): WNLI's 0/1 are told
  from RTE's and QNLI's label names by it.
  """
  if not path.endswith(".tsv"):
    raise ValueError(
        f"--output_file={path!r}: --glue_tsv writes a .tsv file "
        "(e.g. MRPC.tsv, STS-B.tsv)."
    )
  lines = ["index\tprediction"]
  for position, (row, prediction) in enumerate(zip(examples.rows, predictions)):
    index = row.get("idx", row.get("index", position))
    lines.append(f"{index}\t{glue_prediction(prediction, label_vocab, path)}")
  io_utils.write_text_atomically(path, "\n".join(lines) + "\n")
  logging.info("Wrote %d GLUE predictions to %s.", len(predictions), path)
