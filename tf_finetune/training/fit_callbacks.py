"""The Keras callbacks of a training run: history, TensorBoard, step logs,
best weights, early stopping, backups.
"""

from __future__ import annotations

import os

from absl import logging

from tf_finetune import artifacts, callbacks, optimization
from tf_finetune.config import RunConfig
from tf_finetune.reporting import monitor_mode


def warmup_epochs(warmup_steps: int, steps_per_epoch: int) -> int:
  """The epochs that end inside the warmup, which early stopping skips.

  While the learning rate is still rising the model has not trained at
  its rate, and small data often sits on a plateau (the majority class)
  until it has: 1,008 steps of 16 per epoch (--min_steps=1000 on 500
  examples) warm up for 100 steps, and the first 6 epochs end inside
  them. Runs of a few epochs skip none (10% warmup ends in the first).
  """
  return warmup_steps // max(steps_per_epoch, 1)


def fit_callbacks(
    config: RunConfig,
    has_validation: bool,
    *,
    total_steps: int,
    steps_per_epoch: int,
    global_batch_size: int,
    output_dir: str,
):
  """The run's callbacks.

  Their files go to `output_dir`: model_dir, or a scratch directory on the
  non-chief workers of a multi-worker run. Early stopping does not judge
  the epochs that end inside the warmup (see `warmup_epochs`).
  """
  train = config.train
  model_dir = config.model_dir
  nan_guard = callbacks.StopOnNonFiniteLoss()
  history = callbacks.PersistentHistory(
      os.path.join(output_dir, artifacts.HISTORY_FILENAME)
  )
  found = [
      nan_guard,
      history,
      # Keras sends the summaries of non-chief workers to scratch itself.
      callbacks.TensorBoard(
          os.path.join(model_dir, artifacts.LOG_DIR), profile_batch=0
      ),
      callbacks.StepLogger(
          os.path.join(output_dir, artifacts.LOG_DIR),
          train.log_every_steps,
          total_steps,
          global_batch_size,
      ),
      callbacks.EpochSummary(),
  ]
  if train.ema_decay:
    found.append(callbacks.ValidateWithMovingAverages())
  best = early_stopping = None
  if has_validation:
    mode = monitor_mode(train.early_stopping_metric)
    best = callbacks.BestWeightsCheckpoint(
        os.path.join(output_dir, artifacts.BEST_WEIGHTS_DIR),
        monitor=train.early_stopping_metric,
        mode=mode,
    )
    found.append(best)
    if train.early_stopping_patience:
      warmup = optimization.warmup_steps_for(train, total_steps)
      skipped = warmup_epochs(warmup, steps_per_epoch)
      if skipped:
        logging.info(
            "Early stopping starts after the warmup: epochs 1-%d end "
            "inside its %d steps and are not counted.",
            skipped,
            warmup,
        )
      early_stopping = callbacks.ResumableEarlyStopping(
          # The chief's history, also on the other workers.
          os.path.join(model_dir, artifacts.HISTORY_FILENAME),
          monitor=train.early_stopping_metric,
          mode=mode,
          patience=train.early_stopping_patience,
          min_delta=train.early_stopping_min_delta,
          start_from_epoch=skipped,
          verbose=1,
      )
      found.append(early_stopping)
  # Last, so an epoch is backed up only after its history and best weights
  # are saved: a run killed in between redoes the epoch's end, losing
  # nothing. Every worker restores from the chief's backup; Keras sends
  # the other workers' backups to scratch.
  found.append(
      callbacks.BackupAndRestore(
          os.path.join(model_dir, artifacts.BACKUP_DIR),
          save_freq=train.save_every_steps or "epoch",
      )
  )
  return found, nan_guard, history, best, early_stopping
