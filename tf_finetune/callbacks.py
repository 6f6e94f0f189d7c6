"""Keras callbacks for fine-tuning runs."""

from __future__ import annotations

import math
import os
import time
from typing import Optional

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import io_utils
from tf_finetune.optimization import current_learning_rate

WEIGHTS_PREFIX = "weights"


def save_weights_atomically(model: tf_keras.Model, directory: str) -> None:
  """Writes `model`'s weights to `directory`, replacing it only when done."""
  with io_utils.staged_directory(directory, replace=True) as staging:
    model.save_weights(os.path.join(staging, WEIGHTS_PREFIX))


def weights_path(directory: str) -> str:
  return os.path.join(directory, WEIGHTS_PREFIX)


class StepLogger(tf_keras.callbacks.Callback):
  """Every N steps: learning rate and loss to TensorBoard, progress to the log.

  Keras' TensorBoard callback writes per-epoch metrics; fine-tuning runs are
  a few epochs long, so the learning-rate curve and the loss need per-step
  points, and a long epoch needs progress lines in the log.
  """

  def __init__(self, log_dir: str, every_steps: int, total_steps: int,
               global_batch_size: int):
    super().__init__()
    self._log_dir = log_dir
    self._every_steps = every_steps
    self._total_steps = total_steps
    self._global_batch_size = global_batch_size
    self._writer = None
    self._last = None

  def on_train_begin(self, logs=None):
    self._writer = tf.summary.create_file_writer(
        os.path.join(self._log_dir, "train"))
    self._last = (time.time(), int(self.model.optimizer.iterations.numpy()))

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step % self._every_steps:
      return
    rate = current_learning_rate(self.model.optimizer)
    loss = (logs or {}).get("loss")
    with self._writer.as_default(step=step):
      tf.summary.scalar("learning_rate", rate)
      if loss is not None:
        tf.summary.scalar("batch_loss", loss)
    now = time.time()
    last_time, last_step = self._last
    speed = (step - last_step) * self._global_batch_size / max(
        now - last_time, 1e-9)
    self._last = (now, step)
    logging.info("Step %d/%d: loss %.4f, learning rate %.3g, %.1f examples/s",
                 step, self._total_steps, float(loss or float("nan")), rate,
                 speed)

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
        "--clip_norm on, or check the data; the last good checkpoint is kept.")
    logging.error(self.message)
    self.model.stop_training = True


class BestWeightsCheckpoint(tf_keras.callbacks.Callback):
  """Saves the weights of the best epoch so far, atomically."""

  def __init__(self, directory: str, monitor: str, mode: str):
    super().__init__()
    self._directory = directory
    self.monitor = monitor
    self._better = (lambda a, b: a < b) if mode == "min" else (
        lambda a, b: a > b)
    self.best: Optional[float] = None
    self.best_epoch: Optional[int] = None

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or not math.isfinite(value):
      return
    if self.best is None or self._better(value, self.best):
      self.best, self.best_epoch = float(value), epoch + 1
      save_weights_atomically(self.model, self._directory)
      logging.info("Epoch %d: %s=%.4f is the best so far; weights saved to %s.",
                   epoch + 1, self.monitor, value, self._directory)


class EpochSummary(tf_keras.callbacks.Callback):
  """Logs one readable line per epoch, including the padding fraction."""

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    parts = [f"{name}={value:.4f}" for name, value in sorted(logs.items())
             if "pad_fraction" not in name]
    padding = logs.get("pad_fraction")
    if padding is not None:
      parts.append(f"padding={100 * padding:.1f}% of training tokens")
    logging.info("Epoch %d: %s", epoch + 1, ", ".join(parts))
