"""Evaluating a finished run on a labelled file."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

from tf_finetune import artifacts, tasks
from tf_finetune import config as config_lib
from tf_finetune.data import streaming
from tf_finetune.tasks import streamed_text


def evaluate_model_dir(
    model_dir: str,
    *,
    eval_file: Optional[str] = None,
    split_name: str = "test",
    batch_size: Optional[int] = None,
    eval_target_file: Optional[str] = None,
    task_overrides: Optional[dict] = None,
    compare: Sequence[dict] = (),
) -> dict:
  """Evaluates a finished run on a labelled file; updates eval_results.json.

  Args:
    model_dir: The training run's directory.
    eval_file: Labelled examples; defaults to the run's --test_file.
    split_name: Key of the results in eval_results.json.
    batch_size: Examples per batch; defaults to the run's.
    eval_target_file: Translation from plain line-aligned files: the
      target-language lines of `eval_file`.
    task_overrides: TaskConfig fields that replace the run's for this
      evaluation (translation: num_beams, length_penalty,
      no_repeat_ngram_size).
    compare: More TaskConfig overrides (e.g. [{"num_beams": 1},
      {"num_beams": 4}]): the same examples are also predicted and scored
      under each, with the prediction time, and recorded as "comparisons".

  Returns:
    The task's metrics (for classification see `classification_metrics`),
    with the line `describe` prints under "description", and the
    comparisons, each with its own "description".
  """
  task_overrides = dict(task_overrides or {})
  if eval_target_file:
    if not eval_file:
      raise ValueError(
          "--test_target_file needs --test_file: the source "
          "lines it translates."
      )
    task_overrides["test_target_file"] = eval_target_file
  task_config = config_lib.read_config(model_dir).task
  if task_overrides:
    task_config = dataclasses.replace(task_config, **task_overrides)
  trained = artifacts.load_trained(model_dir, task_config)
  task = trained.task
  data = trained.config.data
  if eval_target_file:
    data = dataclasses.replace(data, test_file=eval_file)
    eval_file = None
  spec = eval_file or data.test_file
  if (
      spec
      and getattr(task, "supports_streaming", False)
      and streaming.use_streaming(
          dataclasses.replace(
              data, train_file=spec, validation_file=None, test_file=None
          ),
          supported=True,
      )
  ):
    # As the run read its data (--streaming), or past the threshold.
    examples, encoded = streamed_text.evaluation_split(
        task, data, spec, trained.encoder
    )
  else:
    examples = task.read(data, "test", path=eval_file)
    if examples is None:
      raise ValueError(
          f"Nothing to evaluate: pass --test_file (the run in "
          f"{model_dir} had none)."
      )
    if examples.labels is None:
      raise ValueError(f"{examples.source} has no labels to evaluate against.")
    task.check_labels(examples, "--test_file")
    encoded = task.encode(examples, trained.encoder)
  batch_size = batch_size or data.batch_size
  outputs = task.predict(trained.model, encoded, batch_size=batch_size)
  metrics = task.metrics(examples, encoded, outputs)
  comparisons = [
      _scored_with(
          trained, task_config, overrides, examples, encoded, batch_size
      )
      for overrides in compare
  ]
  if comparisons:
    metrics["comparisons"] = comparisons
  _record(model_dir, split_name, metrics, examples.source)
  for row in comparisons:
    row["description"] = task.describe(row)
  return dict(metrics, description=task.describe(metrics))


def _scored_with(
    trained, task_config, overrides, examples, encoded, batch_size
):
  """The metrics of the examples predicted with `overrides` in the task's
  settings, with the prediction's wall-clock time."""
  task = tasks.get_task(dataclasses.replace(task_config, **overrides))
  task.bind(trained.task.state)
  start = time.perf_counter()
  outputs = task.predict(trained.model, encoded, batch_size=batch_size)
  seconds = time.perf_counter() - start
  return dict(
      task.metrics(examples, encoded, outputs),
      settings=dict(overrides),
      predict_seconds=round(seconds, 2),
      examples_per_second=round(len(examples) / seconds, 2),
  )


def _record(model_dir, split_name, metrics, source) -> None:
  """Adds the metrics to eval_results.json under `split_name`."""
  path = os.path.join(model_dir, artifacts.EVAL_RESULTS_FILENAME)
  results = {}
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  results[split_name] = dict(metrics, source=source)
  artifacts.write_json(model_dir, artifacts.EVAL_RESULTS_FILENAME, results)
