"""Classification metrics and batch prediction."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

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


def evaluate_model_dir(model_dir: str, *, eval_file: Optional[str] = None,
                       split_name: str = "test",
                       batch_size: Optional[int] = None,
                       eval_target_file: Optional[str] = None,
                       task_overrides: Optional[dict] = None) -> dict:
  """Evaluates a finished run on a labelled file; updates eval_results.json.

  Args:
    model_dir: The training run's directory.
    eval_file: Labelled examples; defaults to the run's --test_file.
    split_name: Key of the results in eval_results.json.
    batch_size: Examples per batch; defaults to the run's.
    eval_target_file: Translation from plain line-aligned files: the
      target-language lines of `eval_file`.
    task_overrides: TaskConfig fields that replace the run's for this
      evaluation (translation: num_beams, no_repeat_ngram_size).

  Returns:
    The task's metrics (for classification see `classification_metrics`),
    with the line `describe` prints under "description".
  """
  from tf_finetune import artifacts, tasks  # Loads transformers.

  trained = artifacts.load_trained(model_dir)
  task_config = trained.config.task
  if task_overrides:
    task_config = dataclasses.replace(task_config, **task_overrides)
  task = tasks.get_task(task_config)
  data = trained.config.data
  if eval_target_file:
    if not eval_file:
      raise ValueError("--test_target_file needs --test_file: the source "
                       "lines it translates.")
    data = dataclasses.replace(data, test_file=eval_file,
                               test_target_file=eval_target_file)
    eval_file = None
  examples = task.read(data, "test", path=eval_file)
  if examples is None:
    raise ValueError(f"Nothing to evaluate: pass --test_file (the run in "
                     f"{model_dir} had none).")
  if examples.labels is None:
    raise ValueError(f"{examples.source} has no labels to evaluate against.")
  task.check_labels(examples, trained.label_vocab, "--test_file")
  encoded = task.encode(examples, trained.encoder, trained.label_vocab)
  outputs = task.predict(trained.model, encoded,
                         batch_size=batch_size or data.batch_size,
                         pad_id=trained.encoder.pad_id)
  metrics = task.metrics(examples, encoded, outputs, trained.label_vocab,
                         trained.task_state)
  path = os.path.join(model_dir, artifacts.EVAL_RESULTS_FILENAME)
  results = {}
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  results[split_name] = dict(metrics, source=examples.source)
  artifacts.write_json(model_dir, artifacts.EVAL_RESULTS_FILENAME, results)
  return dict(metrics, description=task.describe(metrics))
