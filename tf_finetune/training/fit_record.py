"""The record of a finished `fit` (training_finished.json), so that a run
killed after training resumes at evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from absl import logging

from tf_finetune import (
    artifacts,
    callbacks,
    io_utils,
)
from tf_finetune import config as config_lib
from tf_finetune.config import RunConfig


@dataclasses.dataclass
class FitRecord:
  """What `model.fit` left, for the summary; saved once training finished.

  Attributes:
    history: Metric name -> per-epoch values, across resumptions.
    best_epoch: The best validation epoch (1-based), or None.
    best_metric: Its value of --early_stopping_metric, or None.
    stopped_early: Whether early stopping ended training.
    global_steps: Optimizer updates in the whole run.
    train_seconds: Time in `fit` (of the last attempt, if resumed).
    weights_fingerprint: SHA-256 of the trained weights.
    export_dir: The SavedModel exported from these weights, once exported.
    fingerprint: What the weights depend on (`fingerprint.run_fingerprint`).
  """

  history: dict[str, list[float]]
  best_epoch: Optional[int]
  best_metric: Optional[float]
  stopped_early: bool
  global_steps: int
  train_seconds: float
  weights_fingerprint: str
  export_dir: Optional[str] = None
  fingerprint: Optional[dict] = None


def write_fit_record(config: RunConfig, record: FitRecord) -> None:
  artifacts.write_json(
      config.model_dir,
      artifacts.FIT_RECORD_FILENAME,
      {"config": json.loads(config.to_json()), **dataclasses.asdict(record)},
  )


def finished_fit(
    config: RunConfig, fingerprint: dict, *, chief: bool
) -> Optional[FitRecord]:
  """The record of a finished `fit` of this same run in model_dir, if any.

  A run killed after training (while evaluating or exporting) and started
  again goes straight to evaluation and export: its backup is gone, and
  without this record it would train from scratch. The same run: the same
  `fingerprint` (settings that only evaluation or export use may differ;
  the config saved in model_dir becomes this one).
  """
  record = callbacks.read_json_record(
      os.path.join(config.model_dir, artifacts.FIT_RECORD_FILENAME)
  )
  if not record or record.get("fingerprint") != fingerprint:
    return None
  record.pop("config", None)
  final = os.path.join(config.model_dir, artifacts.FINAL_WEIGHTS_DIR)
  if chief:
    io_utils.recover_staged_directory(final)
  if not artifacts.has_weights(final):  # Follows a link to best.
    return None
  try:
    record = FitRecord(**record)
  except TypeError:
    return None
  logging.info(
      "Training already finished in %s (%d steps); using its saved weights.",
      config.model_dir,
      record.global_steps,
  )
  if chief:
    config_lib.write_config(config, config.model_dir)
  return record
