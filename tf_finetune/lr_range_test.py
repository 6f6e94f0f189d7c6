"""The learning-rate range test (Smith, 2017): loss against a rising rate.

The rate grows geometrically from `min_learning_rate` to `max_learning_rate`
over `num_steps` training steps, one batch each, on the run's own data,
model and optimizer settings. The training loss first falls, then explodes;
a good peak rate for fine-tuning sits well before the explosion. We suggest
the rate one tenth of the one where the smoothed loss was lowest, and report
the rate of steepest descent as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import tf_keras
from absl import logging

from tf_finetune import io_utils, optimization, reporting, training
from tf_finetune.config import RunConfig

PLOT_FILENAME = "lr_find.png"
RESULTS_FILENAME = "lr_find.json"
# The test stops once the smoothed loss exceeds this many times its minimum.
_DIVERGENCE_FACTOR = 4.0
_SMOOTHING = 0.9


class _LossRecorder(tf_keras.callbacks.Callback):
  """Records (rate, loss) per step; stops when the loss diverges."""

  def __init__(self, schedule: optimization.ExponentialRangeSchedule):
    super().__init__()
    self._schedule = schedule
    self.rates: list[float] = []
    self.losses: list[float] = []
    self.smoothed: list[float] = []
    self._average = 0.0

  def on_epoch_end(self, epoch, logs=None):
    # One step per "epoch", so the logged loss is that step's loss.
    loss = float((logs or {}).get("loss", math.nan))
    self.rates.append(float(self._schedule(epoch)))
    self.losses.append(loss)
    if not math.isfinite(loss):
      self.model.stop_training = True
      return
    self._average = _SMOOTHING * self._average + (1 - _SMOOTHING) * loss
    smoothed = self._average / (1 - _SMOOTHING ** len(self.losses))
    self.smoothed.append(smoothed)
    if smoothed > _DIVERGENCE_FACTOR * min(self.smoothed):
      self.model.stop_training = True


def suggest_learning_rate(rates: list[float], smoothed: list[float]) -> dict:
  """Picks rates from a range-test curve.

  Returns:
    "suggested": a tenth of the rate at the lowest smoothed loss;
    "lowest_loss": that rate; "steepest": the rate where the smoothed loss
    fell fastest against log(rate), before the lowest point.
  """
  if len(smoothed) < 3:
    raise ValueError(
        "The range test ran fewer than 3 steps; raise "
        "--lr_find_steps or --lr_find_max."
    )
  lowest = int(np.argmin(smoothed))
  steepest = 0  # A curve that never fell has no descent before its lowest.
  if lowest >= 2:
    slopes = np.gradient(
        np.asarray(smoothed[: lowest + 1]),
        np.log(np.asarray(rates[: lowest + 1])),
    )
    steepest = int(np.argmin(slopes))
  return {
      "suggested": rates[lowest] / 10.0,
      "lowest_loss": rates[lowest],
      "steepest": rates[steepest],
  }


def find_learning_rate(
    config: RunConfig,
    *,
    num_steps: int = 200,
    min_learning_rate: float = 1e-7,
    max_learning_rate: float = 1.0,
) -> dict:
  """Runs the range test and writes its plot and numbers to model_dir.

  Returns:
    The results written to lr_find.json: the suggestion, the curve, and the
    paths of the files.
  """
  if not 0 < min_learning_rate < max_learning_rate:
    raise ValueError(
        f"--lr_find_min={min_learning_rate} must be positive "
        f"and below --lr_find_max={max_learning_rate}."
    )
  if num_steps < 3:
    raise ValueError(f"--lr_find_steps={num_steps} must be at least 3.")
  io_utils.check_writable(config.model_dir, "--model_dir")
  tf_keras.utils.set_random_seed(config.train.seed)
  prepared = training.prepare(config)
  config = prepared.config
  strategy = training.get_strategy(config.train.distribution)
  plan = dataclasses.replace(
      training.plan_batches(config, len(prepared.encoded["train"]), strategy),
      steps_per_epoch=1,
      total_steps=num_steps,
  )
  dataset = training.training_dataset(config, prepared, plan).repeat()
  schedule = optimization.ExponentialRangeSchedule(
      min_learning_rate, max_learning_rate, num_steps
  )
  recorder = _LossRecorder(schedule)
  with training.precision_policy(config.train.precision), strategy.scope():
    model = training.build_model(config, prepared, plan, learning_rate=schedule)
    model.fit(
        dataset,
        epochs=num_steps,
        steps_per_epoch=1,
        callbacks=[recorder],
        verbose=0,
    )
  finite = [
      (rate, loss)
      for rate, loss in zip(recorder.rates, recorder.losses)
      if math.isfinite(loss)
  ]
  rates = [rate for rate, _ in finite]
  picks = suggest_learning_rate(rates, recorder.smoothed)
  if picks["lowest_loss"] == rates[0]:
    logging.warning(
        "The smoothed loss was lowest at the first rate, %.3g: it never "
        "fell, and the suggestion is below the tested range; lower "
        "--lr_find_min.",
        rates[0],
    )
  results = {
      **picks,
      "steps_run": len(recorder.losses),
      "stopped_on_divergence": len(recorder.losses) < num_steps,
      "learning_rates": rates,
      "losses": [loss for _, loss in finite],
      "smoothed_losses": recorder.smoothed,
      "plot": reporting.plot_learning_rate_range(
          rates,
          recorder.smoothed,
          os.path.join(config.model_dir, PLOT_FILENAME),
          suggestion=picks["suggested"],
      ),
  }
  io_utils.write_text_atomically(
      os.path.join(config.model_dir, RESULTS_FILENAME),
      json.dumps(results, indent=2) + "\n",
  )
  logging.info(
      "Range test: %d steps, loss lowest at learning rate %.3g, "
      "steepest descent at %.3g.",
      results["steps_run"],
      picks["lowest_loss"],
      picks["steepest"],
  )
  return results
