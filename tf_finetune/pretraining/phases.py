"""The phases of a pretraining run after its texts are prepared: fit, save
the models, summarize."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import artifacts, callbacks, io_utils, optimization
from tf_finetune import distribution as distribution_lib
from tf_finetune.config import PretrainConfig
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models import masked_lm
from tf_finetune.pretraining.data import (
    PreparedText,
    training_batches,
    validation_batches,
)
from tf_finetune.training import BatchPlan, precision_policy, resolve_precision
from tf_finetune.training.fit_callbacks import fit_callbacks

# What a pretraining run writes in model_dir, besides the files of a
# training run it shares (config.json, logs/, backup/, history.json).
BACKBONE_DIR = "backbone"
MASKED_LM_DIR = "mlm"
SUMMARY_FILENAME = "summary.json"


def limit_steps(plan: BatchPlan, max_steps: int) -> BatchPlan:
  """`plan` with at most `max_steps` updates (0: no limit)."""
  if not max_steps or max_steps >= plan.total_steps:
    return plan
  logging.info(
      "--max_steps=%d: training stops after %d of those %d steps; the "
      "learning-rate schedule spans the %d.",
      max_steps,
      max_steps,
      plan.total_steps,
      max_steps,
  )
  return dataclasses.replace(plan, total_steps=max_steps)


class StopAtStep(tf_keras.callbacks.Callback):
  """Stops training once the optimizer has made `max_steps` updates.

  The epoch it stops in ends early; its validation still runs.
  """

  def __init__(self, max_steps: int):
    super().__init__()
    self.max_steps = max_steps

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) >= self.max_steps:
      self.model.stop_training = True


class Throughput(tf_keras.callbacks.Callback):
  """Times the updates after each epoch's first execution (which also
  traces the graph or starts the input pipeline); validation is not timed.

  Attributes:
    steps: Updates timed.
    seconds: Their time.
  """

  def __init__(self):
    super().__init__()
    self.steps = 0
    self.seconds = 0.0
    self._last: Optional[tuple[float, int]] = None

  def on_epoch_begin(self, epoch, logs=None):
    self._last = None

  def on_train_batch_end(self, batch, logs=None):
    now, step = time.perf_counter(), int(
        self.model.optimizer.iterations.numpy()
    )
    if self._last is not None:
      self.seconds += now - self._last[0]
      self.steps += step - self._last[1]
    self._last = (now, step)


@dataclasses.dataclass(frozen=True)
class PretrainRecord:
  """What fitting did.

  Attributes:
    history: Metric name -> per-epoch values (across resumed runs).
    global_steps: Optimizer updates.
    train_seconds: Time in `fit`, validation and graph tracing included.
    timed_steps: Updates timed for throughput (after each epoch's first).
    timed_seconds: Their time.
    fresh_weights: Weights the checkpoint did not have (a fresh head).
  """

  history: dict
  global_steps: int
  train_seconds: float
  timed_steps: int
  timed_seconds: float
  fresh_weights: list[str]


def build_model(
    config: PretrainConfig, prepared: PreparedText, plan: BatchPlan
) -> tuple[masked_lm.MaskedLanguageModel, list[str]]:
  """The compiled masked-LM model; call inside the precision policy and the
  strategy's scope. Returns it and the weights that started fresh."""
  model_config, train_config = config.model, config.train
  mlm, fresh = masked_lm.load_masked_lm(
      model_config.model,
      allow_pickle_weights=model_config.allow_pickle_weights,
      config_overrides=model_config.config_overrides,
  )
  backbone_lib.check_tokenizer_fits(
      prepared.tokenizer, mlm.config, model_config.model
  )
  model = masked_lm.MaskedLanguageModel(
      mlm, gather_targets=not train_config.jit_compile
  )
  model(model.dummy_inputs())
  optimizer = optimization.create_optimizer(
      train_config, plan.total_steps, steps_per_epoch=plan.steps_per_epoch
  )
  model.compile(
      optimizer=optimizer,
      steps_per_execution=train_config.steps_per_execution,
      jit_compile=train_config.jit_compile,
  )
  return model, fresh


def fit(
    config: PretrainConfig,
    prepared: PreparedText,
    strategy: tf.distribute.Strategy,
    plan: BatchPlan,
) -> tuple[masked_lm.MaskedLanguageModel, PretrainRecord]:
  """Builds the model and trains it on masked batches.

  The callbacks are the training run's (TensorBoard, per-step logs, history,
  a stop at a non-finite loss, backups to resume a killed run); the last
  weights are kept.

  Raises:
    callbacks.NonFiniteLossError: when the loss became NaN or Inf.
  """
  train_config = config.train
  chief = distribution_lib.is_chief(strategy)
  output_dir = distribution_lib.output_dir(config.model_dir, strategy)
  validation = validation_batches(prepared, plan.eval_batch)
  with precision_policy(train_config.precision), strategy.scope():
    model, fresh = build_model(config, prepared, plan)
    if chief:  # Inputs are valid and the model is built.
      io_utils.write_text_atomically(
          os.path.join(config.model_dir, "config.json"),
          config.to_json() + "\n",
      )
    # No validation metric is watched: no best-epoch checkpoint and no
    # early stopping; validation is still run and logged.
    run_callbacks, nan_guard, history, _, _ = fit_callbacks(
        config,
        False,
        total_steps=plan.total_steps,
        steps_per_epoch=plan.steps_per_epoch,
        global_batch_size=plan.global_batch,
        output_dir=output_dir,
    )
    throughput = Throughput()
    run_callbacks = [throughput] + run_callbacks
    if plan.total_steps < plan.steps_per_epoch * train_config.epochs:
      run_callbacks.append(StopAtStep(plan.total_steps))
    start = time.time()
    model.fit(
        training_batches(prepared, plan.global_batch),
        validation_data=validation,
        epochs=train_config.epochs,
        callbacks=run_callbacks,
        verbose=2,
    )
    train_seconds = time.time() - start
    global_steps = int(model.optimizer.iterations.numpy())
  if nan_guard.message:
    raise callbacks.NonFiniteLossError(nan_guard.message)
  record = PretrainRecord(
      history=history.history,
      global_steps=global_steps,
      train_seconds=round(train_seconds, 1),
      timed_steps=throughput.steps,
      timed_seconds=throughput.seconds,
      fresh_weights=fresh,
  )
  distribution_lib.remove_scratch(config.model_dir, strategy)
  return model, record


def save_models(
    config: PretrainConfig,
    prepared: PreparedText,
    model: masked_lm.MaskedLanguageModel,
) -> dict[str, str]:
  """Writes backbone/ (for `train --model=`) and mlm/ (to pretrain further),
  each with --model's tokenizer files, atomically.

  Returns:
    Directory name -> its path.
  """
  model_config = config.model
  original = backbone_lib.load_model_config(model_config.model)

  def save_backbone(directory):
    masked_lm.save_backbone(
        model.mlm,
        model_config.model,
        directory,
        allow_pickle_weights=model_config.allow_pickle_weights,
    )
    prepared.tokenizer.save_pretrained(directory)

  def save_masked_lm(directory):
    model.mlm.save_pretrained(directory)
    # The checkpoint's own config, not the run's dropout overrides.
    original.save_pretrained(directory)
    prepared.tokenizer.save_pretrained(directory)

  artifacts.save_directories(
      config.model_dir,
      {BACKBONE_DIR: save_backbone, MASKED_LM_DIR: save_masked_lm},
  )
  return {
      name: os.path.join(config.model_dir, name)
      for name in (BACKBONE_DIR, MASKED_LM_DIR)
  }


@dataclasses.dataclass(frozen=True)
class PretrainSummary:
  """What a pretraining run did; saved as summary.json.

  Attributes:
    train_loss: Mean cross-entropy over the targets of the last epoch.
    train_masked_accuracy: Share of those targets predicted right.
    validation_loss: The same on the validation texts, or None.
    validation_masked_accuracy: The same, or None.
    epochs_run: Epochs trained (the last may stop at --max_steps).
    global_steps: Optimizer updates.
    global_batch_size: Examples per update.
    replicas: Replicas in sync.
    precision: "fp32", "bf16" or "fp16".
    train_examples: Training texts.
    validation_examples: Validation texts.
    mean_tokens_per_example: Tokens of a training text, specials included,
      padding not.
    train_seconds: Time in `fit`, validation and graph tracing included.
    examples_per_second: Training examples per second of the timed updates
      (all but each epoch's first execution).
    tokens_per_second: examples_per_second x mean_tokens_per_example.
    fresh_weights: Weights the checkpoint did not have (its masked-LM head).
    backbone_dir: The encoder for `train --model=`.
    masked_lm_dir: The encoder and head, for `pretrain --model=`.
    history: Metric name -> per-epoch values.
  """

  train_loss: float
  train_masked_accuracy: float
  validation_loss: Optional[float]
  validation_masked_accuracy: Optional[float]
  epochs_run: int
  global_steps: int
  global_batch_size: int
  replicas: int
  precision: str
  train_examples: int
  validation_examples: int
  mean_tokens_per_example: float
  train_seconds: float
  examples_per_second: float
  tokens_per_second: float
  fresh_weights: list
  backbone_dir: str
  masked_lm_dir: str
  history: dict


def summarize(
    config: PretrainConfig,
    prepared: PreparedText,
    plan: BatchPlan,
    record: PretrainRecord,
    saved: dict[str, str],
) -> PretrainSummary:
  """Writes summary.json and returns it."""
  history = record.history

  def last(name):
    values = history.get(name)
    return round(values[-1], 4) if values else None

  # Examples per second of the timed updates: steps x global batch (each
  # epoch's last, smaller batch counted whole).
  examples_per_second = (
      record.timed_steps * plan.global_batch / record.timed_seconds
      if record.timed_seconds
      else 0.0
  )
  mean_tokens = prepared.mean_tokens()
  summary = PretrainSummary(
      train_loss=last("loss"),
      train_masked_accuracy=last("masked_accuracy"),
      validation_loss=last("val_loss"),
      validation_masked_accuracy=last("val_masked_accuracy"),
      epochs_run=len(history.get("loss", [])),
      global_steps=record.global_steps,
      global_batch_size=plan.global_batch,
      replicas=plan.replicas,
      precision=resolve_precision(config.train.precision),
      train_examples=len(prepared.texts["train"]),
      validation_examples=len(prepared.texts.get("validation", ())),
      mean_tokens_per_example=round(mean_tokens, 2),
      train_seconds=record.train_seconds,
      examples_per_second=round(examples_per_second, 1),
      tokens_per_second=round(examples_per_second * mean_tokens, 1),
      fresh_weights=record.fresh_weights,
      backbone_dir=saved[BACKBONE_DIR],
      masked_lm_dir=saved[MASKED_LM_DIR],
      history=history,
  )
  artifacts.write_json(
      config.model_dir, SUMMARY_FILENAME, dataclasses.asdict(summary)
  )
  logging.info(
      "Pretrained %d steps: masked-LM loss %s (accuracy %s), validation %s "
      "(%s); %.1f examples/s, %.0f tokens/s.",
      summary.global_steps,
      summary.train_loss,
      summary.train_masked_accuracy,
      summary.validation_loss,
      summary.validation_masked_accuracy,
      summary.examples_per_second,
      summary.tokens_per_second,
  )
  return summary
