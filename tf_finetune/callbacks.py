"""Keras callbacks for fine-tuning runs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Optional

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import io_utils
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.optimization import current_learning_rate

WEIGHTS_PREFIX = "weights"


def weights_checkpoint(model: tf_keras.Model) -> tf.train.Checkpoint:
  """`model`'s variables without its optimizer's, under the names
  `model.save_weights` gives them, so `model.load_weights` reads it.

  Adam keeps two slots per weight: a checkpoint with the optimizer is about
  3x the weights. Only the backup, which resumes training, needs them.
  """
  # pylint: disable=protected-access
  children = model._trackable_children(save_type="checkpoint")
  return tf.train.Checkpoint(
      **{
          name: child
          for name, child in children.items()
          if child is not model.optimizer
      }
  )


def write_weights(model: tf_keras.Model, directory: str) -> None:
  """Writes `model`'s weights (no optimizer state) to `directory`."""
  path = os.path.join(directory, WEIGHTS_PREFIX)
  weights_checkpoint(model).write(path)
  # `checkpoint`, as model.save_weights writes it: tf.train.latest_checkpoint
  # finds the weights.
  tf.__internal__.train.update_checkpoint_state(
      save_dir=directory,
      model_checkpoint_path=path,
      save_relative_paths=True,
      all_model_checkpoint_paths=[path],
  )


def save_weights_atomically(model: tf_keras.Model, directory: str) -> None:
  """Writes `model`'s weights to `directory`, replacing it only when done."""
  with io_utils.staged_directory(directory, replace=True) as staging:
    write_weights(model, staging)


def weights_path(directory: str) -> str:
  return os.path.join(directory, WEIGHTS_PREFIX)


class TensorBoard(tf_keras.callbacks.TensorBoard):
  """Keras' TensorBoard, whose epoch learning rate is the one the epoch's
  last update used.

  Keras logs schedule(iterations) at the end of an epoch: the rate of the
  next update, the first of the next epoch (5e-4 for an epoch whose two
  warmup updates used 0 and 2.5e-4). `_collect_learning_rate` is the Keras
  hook that adds it; tests/test_training_levers.py checks the logged rates,
  so a renamed hook fails there.
  """

  def _collect_learning_rate(self, logs):
    logs["learning_rate"] = current_learning_rate(self.model.optimizer)
    return logs


class StepLogger(tf_keras.callbacks.Callback):
  """Every N steps: learning rate and loss to TensorBoard, progress to the log.

  Keras' TensorBoard callback writes per-epoch metrics; fine-tuning runs are
  a few epochs long, so the learning-rate curve and the loss need per-step
  points, and a long epoch needs progress lines in the log.
  """

  def __init__(
      self,
      log_dir: str,
      every_steps: int,
      total_steps: int,
      global_batch_size: int,
  ):
    super().__init__()
    self._log_dir = log_dir
    self._every_steps = every_steps
    self._total_steps = total_steps
    self._global_batch_size = global_batch_size
    self._writer = None
    self._last = None

  def on_train_begin(self, logs=None):
    self._writer = tf.summary.create_file_writer(
        os.path.join(self._log_dir, "train")
    )
    self._last = (time.time(), int(self.model.optimizer.iterations.numpy()))

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step % self._every_steps:
      return
    rate = current_learning_rate(self.model.optimizer)
    logs = logs or {}
    loss = logs.get("loss")
    with self._writer.as_default(step=step):
      tf.summary.scalar("learning_rate", rate)
      tf.summary.scalar(
          "weight_norm",
          float(tf.linalg.global_norm(self.model.trainable_weights)),
      )
      if loss is not None:
        tf.summary.scalar("batch_loss", loss)
      if logs.get("grad_norm") is not None:
        tf.summary.scalar("grad_norm", logs["grad_norm"])
    now = time.time()
    last_time, last_step = self._last
    speed = (
        (step - last_step)
        * self._global_batch_size
        / max(now - last_time, 1e-9)
    )
    self._last = (now, step)
    logging.info(
        "Step %d/%d: loss %.4f, learning rate %.3g, %.1f examples/s",
        step,
        self._total_steps,
        float(loss or float("nan")),
        rate,
        speed,
    )

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()


class NonFiniteLossError(RuntimeError):
  pass


class StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
  """Stops at the first NaN or Inf loss and says where and at what rate.

  Keras' `TerminateOnNaN` only prints "Batch N: Invalid loss"; this records
  the global step and learning rate so the training entry point can fail
  with a message that tells the user what to change.
  """

  def __init__(self):
    super().__init__()
    self.message: Optional[str] = None

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None or math.isfinite(float(loss)):
      return
    step = int(self.model.optimizer.iterations.numpy())
    rate = current_learning_rate(self.model.optimizer)
    self.message = (
        f"The training loss became {float(loss)} at step {step} (learning "
        f"rate {rate:.3g}); training stopped. Lower --learning_rate, keep "
        "--clip_norm on, or check the data; the last good checkpoint is kept."
    )
    logging.error(self.message)
    self.model.stop_training = True


class BackupAndRestore(tf_keras.callbacks.BackupAndRestore):
  """Keras' BackupAndRestore that keeps the last good backup.

  Keras backs up whatever the model holds and deletes the backup when `fit`
  returns, also when it returns because the loss became NaN or Inf. This one
  stops backing up at the first non-finite loss and keeps the backup, so the
  last good state survives, and rerunning (say with a lower learning rate)
  resumes from it.
  """

  def __init__(self, backup_dir: str, **kwargs):
    super().__init__(backup_dir, **kwargs)
    self.kept_after_non_finite_loss = False

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    # Keras computes where to resume from the backup's epoch and batch as
    # this run's save_freq says, not as the backup was made: a backup made
    # mid-epoch (every N steps) resumed with save_freq="epoch" would skip
    # the rest of its epoch. Resume as the backup was made, as
    # `resume_point` does (`_save_freq` is read only for this).
    state = self._training_state
    state._save_freq = (
        1 if int(state._ckpt_saved_batch.numpy()) >= 0 else ("epoch")
    )

  def _loss_is_finite(self, logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))

  def on_train_batch_end(self, batch, logs=None):
    if not self._loss_is_finite(logs):
      self.kept_after_non_finite_loss = True
    if not self.kept_after_non_finite_loss:
      super().on_train_batch_end(batch, logs)

  def on_epoch_end(self, epoch, logs=None):
    if not self.kept_after_non_finite_loss:
      super().on_epoch_end(epoch, logs)

  def on_train_end(self, logs=None):
    if self.kept_after_non_finite_loss:
      logging.info("The last good backup is kept in %s.", self.backup_dir)
      self.delete_checkpoint = False
    super().on_train_end(logs)


def resume_point(backup_dir: str, steps_per_epoch: int) -> tuple[int, int]:
  """Where a run resumed from the backup in `backup_dir` starts.

  Keras' rule (`WorkerTrainingState.maybe_load_initial_counters_from_ckpt`):
  after a backup made mid-epoch, the next batch of that epoch; after one
  made at the last batch or the end of an epoch, the next epoch.

  Args:
    backup_dir: The `BackupAndRestore` directory (model_dir/backup).
    steps_per_epoch: Batches per epoch.

  Returns:
    (0-based epoch, batches of it already trained on); (0, 0) without a
    backup.
  """
  latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if not latest:
    return 0, 0
  reader = tf.train.load_checkpoint(latest)
  epoch, batch = (
      int(reader.get_tensor(f"ckpt_saved_{name}/.ATTRIBUTES/VARIABLE_VALUE"))
      for name in ("epoch", "batch")
  )
  if 0 <= batch < steps_per_epoch - 1:
    return epoch, batch + 1
  return max(epoch + 1, 0), 0


def _moving_average_pairs(model: tf_keras.Model):
  optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
  if not getattr(optimizer, "use_ema", False):
    return []
  # Every variable the optimizer was built for, frozen layers included.
  return [
      (variable, optimizer.moving_average_of(variable))
      for variable in model.weights
      if variable.trainable
  ]


@contextlib.contextmanager
def moving_averages_swapped_in(model: tf_keras.Model):
  """Puts the EMA weights in the model for the body, then swaps them back.

  A no-op unless the optimizer keeps moving averages (--ema_decay).
  """
  pairs = _moving_average_pairs(model)

  def swap():
    for variable, average in pairs:
      value = variable.numpy()  # A copy: assign() reuses the buffer.
      variable.assign(average)
      average.assign(value)

  swap()
  try:
    yield
  finally:
    swap()


class ValidateWithMovingAverages(tf_keras.callbacks.Callback):
  """Validation during fit sees the EMA weights instead of the raw ones."""

  def __init__(self):
    super().__init__()
    self._context = None

  def on_test_begin(self, logs=None):
    self._context = moving_averages_swapped_in(self.model)
    self._context.__enter__()

  def on_test_end(self, logs=None):
    self._context.__exit__(None, None, None)
    self._context = None


class GradualUnfreezing(tf_keras.callbacks.Callback):
  """Unfreezes one more encoder layer per epoch, from the top.

  Epoch 1 trains the head and the pooler; epoch k + 1 also the top k encoder
  layers; the embeddings join after the last layer. Layers frozen for the
  whole run (--freeze_layers, --freeze_embeddings) stay frozen.
  """

  def __init__(
      self,
      backbone,
      *,
      num_layers: int,
      freeze_layers: int,
      freeze_embeddings: bool,
  ):
    super().__init__()
    self._backbone = backbone
    self._num_layers = num_layers
    self._freeze_layers = freeze_layers
    self._freeze_embeddings = freeze_embeddings
    self._state = None

  def frozen_for_epoch(self, epoch: int) -> tuple[int, bool]:
    """(bottom layers frozen, embeddings frozen) in 0-based `epoch`."""
    layers = max(self._freeze_layers, self._num_layers - epoch)
    embeddings = self._freeze_embeddings or epoch <= self._num_layers
    return layers, embeddings

  def on_epoch_begin(self, epoch, logs=None):
    state = self.frozen_for_epoch(epoch)
    if state == self._state:
      return
    self._state = state
    backbone_lib.set_trainable_layers(
        self._backbone, frozen_layers=state[0], freeze_embeddings=state[1]
    )
    # The train function captured the old list of trainable variables.
    self.model.train_function = self.model.make_train_function(force=True)
    logging.info(
        "Epoch %d: training the top %d of %d encoder layers%s.",
        epoch + 1,
        self._num_layers - state[0],
        self._num_layers,
        "" if state[1] else " and the embeddings",
    )


class BestWeightsCheckpoint(tf_keras.callbacks.Callback):
  """Saves the weights of the best epoch so far (no optimizer state),
  atomically.

  The best value and its epoch are saved with the weights (best.json), so a
  run resumed from its backup still knows which epoch was best before it was
  killed; a fresh run ignores what an earlier run left behind.

  With --ema_decay the saved weights are the moving averages, which are what
  validation measured.
  """

  RECORD_FILENAME = "best.json"

  def __init__(self, directory: str, monitor: str, mode: str):
    super().__init__()
    self._directory = directory
    self.monitor = monitor
    self._better = (
        (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    )
    self.best: Optional[float] = None
    self.best_epoch: Optional[int] = None
    self._first_epoch = True

  def on_epoch_begin(self, epoch, logs=None):
    if not self._first_epoch:
      return
    self._first_epoch = False
    # A resumed run starts at the epoch it was killed in (0-based `epoch`
    # = epochs completed); records of later epochs belong to another run.
    record = read_json_record(
        os.path.join(self._directory, self.RECORD_FILENAME)
    )
    if (
        record
        and record.get("monitor") == self.monitor
        and 1 <= record.get("epoch", 0) <= epoch
    ):
      self.best, self.best_epoch = float(record["best"]), record["epoch"]
      logging.info(
          "Resumed: epoch %d had the best %s so far, %.4f.",
          self.best_epoch,
          self.monitor,
          self.best,
      )

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    value = logs.get(self.monitor)
    if value is None or not math.isfinite(value):
      return
    if not math.isfinite(logs.get("loss", 0.0)):
      return  # Weights that gave a NaN loss are never the best.
    if self.best is None or self._better(value, self.best):
      self.best, self.best_epoch = float(value), epoch + 1
      with io_utils.staged_directory(self._directory, replace=True) as staging:
        with moving_averages_swapped_in(self.model):
          write_weights(self.model, staging)
        io_utils.write_text_atomically(
            os.path.join(staging, self.RECORD_FILENAME),
            json.dumps(
                {
                    "monitor": self.monitor,
                    "best": self.best,
                    "epoch": self.best_epoch,
                }
            )
            + "\n",
        )
      logging.info(
          "Epoch %d: %s=%.4f is the best so far; weights saved to %s.",
          epoch + 1,
          self.monitor,
          value,
          self._directory,
      )


def read_json_record(path: str) -> Optional[dict]:
  """The JSON object in `path`, or None if it is missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


class PersistentHistory(tf_keras.callbacks.Callback):
  """Each epoch's logs, kept in a JSON file that survives a killed run.

  Keras' History only holds the epochs of the current `fit()`; a run resumed
  from its backup would forget the epochs before the kill. This keeps every
  epoch of the run: a resumed run keeps the epochs completed before the one
  it resumes in, a fresh run starts an empty file.

  Attributes:
    history: metric name -> list of per-epoch values, like Keras' History.
  """

  def __init__(self, path: str):
    super().__init__()
    self._path = path
    self.history: dict[str, list[float]] = {}
    self._first_epoch = True

  def on_epoch_begin(self, epoch, logs=None):
    if not self._first_epoch:
      return
    self._first_epoch = False
    record = (read_json_record(self._path) or {}) if epoch else {}
    self.history = {
        name: [float(v) for v in values[:epoch]]
        for name, values in record.items()
        if isinstance(values, list) and len(values) >= epoch
    }
    if self.history:
      logging.info(
          "Resumed at epoch %d; the history of the %d epoch(s) "
          "before it is kept.",
          epoch + 1,
          epoch,
      )

  def on_epoch_end(self, epoch, logs=None):
    for name, value in (logs or {}).items():
      self.history.setdefault(name, []).append(float(value))
    io_utils.write_text_atomically(self._path, json.dumps(self.history) + "\n")


class ResumableEarlyStopping(tf_keras.callbacks.EarlyStopping):
  """Keras' EarlyStopping that a resumed run continues.

  Keras counts the epochs without improvement afresh in every `fit`, so a
  run resumed from its backup would stop later than an uninterrupted one.
  This one rebuilds the count and the best value, by Keras' own rule, from
  the monitored values of the epochs completed before the one the run
  resumes in: those of the chief's `history.json`, which every worker of a
  multi-worker run reads, so that all stop together.

  The weights of the best epoch are not held in memory (Keras'
  `restore_best_weights`): `BestWeightsCheckpoint` keeps them on disk.
  """

  def __init__(self, history_path: str, **kwargs):
    super().__init__(restore_best_weights=False, **kwargs)
    self._history_path = history_path
    self._first_epoch = True

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    self._first_epoch = True

  def on_epoch_begin(self, epoch, logs=None):
    if not self._first_epoch:
      return
    self._first_epoch = False
    if not epoch:
      return
    values = (read_json_record(self._history_path) or {}).get(self.monitor)
    if not isinstance(values, list) or len(values) < epoch:
      logging.warning(
          "Resumed at epoch %d, but %s has no %s for the epochs before it; "
          "early stopping counts from here.",
          epoch + 1,
          self._history_path,
          self.monitor,
      )
      return
    for past_epoch, value in enumerate(values[:epoch]):
      if past_epoch < self.start_from_epoch:
        continue
      # Keras' on_epoch_end, without stopping: the run went on after it.
      self.wait += 1
      if self._is_improvement(float(value), self.best):
        self.best, self.best_epoch = float(value), past_epoch
        if self.baseline is None or self._is_improvement(
            float(value), self.baseline
        ):
          self.wait = 0
    logging.info(
        "Resumed early stopping: best %s %.4f in epoch %d, %d epoch(s) "
        "without improvement since (patience %d).",
        self.monitor,
        self.best,
        self.best_epoch + 1,
        self.wait,
        self.patience,
    )


class EpochSummary(tf_keras.callbacks.Callback):
  """Logs one readable line per epoch, including the padding fraction."""

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    parts = [
        f"{name}={value:.4f}"
        for name, value in sorted(logs.items())
        if "pad_fraction" not in name
    ]
    padding = logs.get("pad_fraction")
    if padding is not None:
      parts.append(f"padding={100 * padding:.1f}% of training tokens")
    logging.info("Epoch %d: %s", epoch + 1, ", ".join(parts))
