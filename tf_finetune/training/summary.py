"""The run summary (summary.json): how training went, the overfitting
verdict and the curves.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from absl import logging

from tf_finetune import (
    artifacts,
    reporting,
)
from tf_finetune.config import RunConfig
from tf_finetune.tasks import streamed_text
from tf_finetune.tasks.base import PreparedData
from tf_finetune.training.fit_record import FitRecord
from tf_finetune.training.phases import BatchPlan
from tf_finetune.training.precision import resolve_precision


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """What a training run did; saved (without eval_results) as summary.json.

  Attributes:
    epochs_run: Epochs trained, across resumptions.
    stop_reason: "early_stopping" or "completed_all_epochs".
    early_stopping_fired: Whether early stopping ended training.
    best_epoch: The best validation epoch (1-based), or None.
    kept_epoch: The epoch whose weights were kept.
    best_metric: {--early_stopping_metric: its best value}, or None.
    global_batch_size: Examples per update.
    replicas: Replicas in sync.
    precision: "fp32", "bf16" or "fp16".
    global_steps: Optimizer updates.
    steps_per_epoch: Updates per epoch.
    train_seconds: Time in `fit` (of the last attempt, if resumed).
    train_examples_per_second: Training examples per second of `fit`.
    weights_fingerprint: SHA-256 of the trained weights.
    overfitting: The overfitting and still-improving verdicts (see
      `reporting`).
    most_frequent_label: A classifier's accuracy against always answering
      the most frequent label (see `reporting.compare_with_most_frequent_
      label`), or None for other tasks.
    history: Metric name -> per-epoch values.
    curves_png: The plot of the curves, or None.
    export_dir: The SavedModel version directory, or None.
    eval_results: Split name -> the task's metrics.
    selection: Which data chose the kept epoch and the task's post-hoc
      values, and which splits' metrics are selection metrics or held out
      (see `phases.selection`).
    worker: A non-chief worker's name (its summary has steps and weights
      only), or None.
    skipped_records: A streamed run's bad records skipped per split
      (--skip_bad_records), or None for an in-memory run.
  """

  epochs_run: int = 0
  stop_reason: str = ""
  early_stopping_fired: bool = False
  best_epoch: Optional[int] = None
  kept_epoch: Optional[int] = None
  best_metric: Optional[dict] = None
  global_batch_size: int = 0
  replicas: int = 0
  precision: str = ""
  global_steps: int = 0
  steps_per_epoch: int = 0
  train_seconds: float = 0.0
  train_examples_per_second: float = 0.0
  weights_fingerprint: str = ""
  overfitting: Optional[dict] = None
  most_frequent_label: Optional[dict] = None
  history: dict = dataclasses.field(default_factory=dict)
  curves_png: Optional[str] = None
  export_dir: Optional[str] = None
  eval_results: dict = dataclasses.field(default_factory=dict)
  selection: dict = dataclasses.field(default_factory=dict)
  worker: Optional[str] = None
  skipped_records: Optional[dict] = None

  def to_json_dict(self) -> dict:
    """summary.json: every field but eval_results (eval_results.json)."""
    values = dataclasses.asdict(self)
    del values["eval_results"], values["worker"]
    if values["export_dir"] is None:
      del values["export_dir"]
    if values["skipped_records"] is None:
      del values["skipped_records"]
    if values["most_frequent_label"] is None:
      del values["most_frequent_label"]
    return values


def summarize(
    config: RunConfig,
    prepared: PreparedData,
    plan: BatchPlan,
    record: FitRecord,
    eval_results: dict[str, dict],
    export_dir: Optional[str],
    *,
    selection: Optional[dict] = None,
) -> RunSummary:
  """Phase 6: the run summary, the overfitting verdict and the curves."""
  train_config = config.train
  curves = record.history
  epochs_run = len(curves.get("loss", []))
  best_epoch = record.best_epoch
  kept_epoch = (
      best_epoch
      if best_epoch and train_config.restore_best_weights
      else epochs_run
  )
  diagnosis = reporting.diagnose_overfitting(
      curves,
      monitor=train_config.early_stopping_metric,
      best_epoch=kept_epoch,
      min_delta=train_config.early_stopping_min_delta,
  )
  baseline = reporting.compare_with_most_frequent_label(eval_results)
  summary = RunSummary(
      epochs_run=epochs_run,
      stop_reason=(
          "early_stopping" if record.stopped_early else "completed_all_epochs"
      ),
      early_stopping_fired=record.stopped_early,
      best_epoch=best_epoch,
      kept_epoch=kept_epoch,
      best_metric=(
          {train_config.early_stopping_metric: record.best_metric}
          if record.best_metric is not None
          else None
      ),
      global_batch_size=plan.global_batch,
      replicas=plan.replicas,
      precision=resolve_precision(train_config.precision),
      global_steps=record.global_steps,
      steps_per_epoch=plan.steps_per_epoch,
      train_seconds=record.train_seconds,
      train_examples_per_second=round(
          epochs_run
          * len(prepared.examples["train"])
          / max(record.train_seconds, 1e-9),
          1,
      ),
      weights_fingerprint=record.weights_fingerprint,
      overfitting=diagnosis,
      most_frequent_label=baseline,
      history=curves,
      curves_png=reporting.plot_curves(
          curves,
          os.path.join(config.model_dir, artifacts.CURVES_FILENAME),
          best_epoch=kept_epoch,
      ),
      export_dir=export_dir,
      eval_results=eval_results,
      selection=dict(selection or {}),
      skipped_records=streamed_text.skipped_records(prepared) or None,
  )
  logging.info(
      "Training stopped after %d epoch(s) (%s); kept epoch %s. %s",
      epochs_run,
      summary.stop_reason.replace("_", " "),
      kept_epoch,
      diagnosis["message"],
  )
  if baseline and baseline["no_better"]:
    logging.warning("%s", baseline["message"])
  artifacts.write_json(
      config.model_dir, artifacts.TRAIN_SUMMARY_FILENAME, summary.to_json_dict()
  )
  return summary
