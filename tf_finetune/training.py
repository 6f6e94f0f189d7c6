"""Fine-tuning for a task, in named phases.

`train(config)` runs them in order: `prepare` (the task reads, checks and
encodes the data), `plan_batches` (global batch and steps for the
strategy), `fit` (builds the task's model inside the strategy's scope and
fits it with Keras callbacks, keeping the best validation epoch),
`evaluate` (the saved weights, as evaluate/predict/export load them),
`export` (a SavedModel) and `summarize` (summary.json, curves, the
overfitting verdict). Benchmarks and the learning-rate range test call the
same phases. Everything goes to `config.model_dir` (see `artifacts`), each
file atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Optional

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import (
    artifacts,
    callbacks,
    io_utils,
    optimization,
    reporting,
    tasks,
)
from tf_finetune import distribution as distribution_lib
from tf_finetune.config import RunConfig
from tf_finetune.data import pipeline
from tf_finetune.tasks.base import PreparedData, TrainedModel


def get_strategy(
    distribution: str, tpu: Optional[str] = None
) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `--distribution` (see `distribution`)."""
  return distribution_lib.get_strategy(distribution, tpu)


def has_native_bfloat16() -> bool:
  """Whether the devices training would use compute bfloat16 natively."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return all(
        tf.config.experimental.get_device_details(gpu).get(
            "compute_capability", (0, 0)
        )
        >= (8, 0)
        for gpu in gpus
    )
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      flags = f.read()
  except OSError:
    return False
  return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
  if precision != "auto":
    return precision
  return "bf16" if has_native_bfloat16() else "fp32"


@contextlib.contextmanager
def precision_policy(precision: str):
  """Sets the Keras mixed-precision policy for the run, then restores it.

  auto resolves to bf16 where the hardware computes in bfloat16 natively
  (`has_native_bfloat16`), else to fp32; the README compares their speed.
  """
  previous = tf_keras.mixed_precision.global_policy()
  name = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[
      resolve_precision(precision)
  ]
  tf_keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def _monitor_mode(metric: str) -> str:
  return "min" if metric.endswith("loss") else "max"


def _callbacks(
    config: RunConfig,
    has_validation: bool,
    *,
    total_steps: int,
    global_batch_size: int,
    output_dir: str,
):
  """The run's callbacks.

  Their files go to `output_dir`: model_dir, or a scratch directory on the
  non-chief workers of a multi-worker run.
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
      tf_keras.callbacks.TensorBoard(
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
    mode = _monitor_mode(train.early_stopping_metric)
    best = callbacks.BestWeightsCheckpoint(
        os.path.join(output_dir, artifacts.BEST_WEIGHTS_DIR),
        monitor=train.early_stopping_metric,
        mode=mode,
    )
    found.append(best)
    if train.early_stopping_patience:
      early_stopping = tf_keras.callbacks.EarlyStopping(
          monitor=train.early_stopping_metric,
          mode=mode,
          patience=train.early_stopping_patience,
          min_delta=train.early_stopping_min_delta,
          restore_best_weights=train.restore_best_weights,
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
  """

  history: dict[str, list[float]]
  best_epoch: Optional[int]
  best_metric: Optional[float]
  stopped_early: bool
  global_steps: int
  train_seconds: float
  weights_fingerprint: str
  export_dir: Optional[str] = None


def _write_fit_record(config: RunConfig, record: FitRecord) -> None:
  artifacts.write_json(
      config.model_dir,
      artifacts.FIT_RECORD_FILENAME,
      {"config": json.loads(config.to_json()), **dataclasses.asdict(record)},
  )


def finished_fit(config: RunConfig, *, chief: bool) -> Optional[FitRecord]:
  """The record of a finished `fit` of this same config in model_dir, if any.

  A run killed after training (while evaluating or exporting) and started
  again with the same command goes straight to evaluation and export: its
  backup is gone, and without this record it would train from scratch.
  """
  record = callbacks.read_json_record(
      os.path.join(config.model_dir, artifacts.FIT_RECORD_FILENAME)
  )
  if not record or record.pop("config", None) != json.loads(config.to_json()):
    return None
  final = os.path.join(config.model_dir, artifacts.FINAL_WEIGHTS_DIR)
  if chief:
    io_utils.recover_staged_directory(final)
  if not os.path.isfile(callbacks.weights_path(final) + ".index"):
    return None
  try:
    record = FitRecord(**record)
  except TypeError:
    return None
  logging.info(
      "Training already finished in %s (%d steps); using its " "saved weights.",
      config.model_dir,
      record.global_steps,
  )
  return record


def prepare(config: RunConfig) -> PreparedData:
  """Phase 1: the task reads, checks and encodes the splits.

  Raises:
    ValueError: for bad files, columns, labels or model, naming the flag.
  """
  return tasks.get_task(config.task).prepare(config)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """How the examples become updates on the run's devices.

  Attributes:
    replicas: Replicas in sync, of all workers.
    global_batch: Examples per update: batch_size x accumulated
      micro-batches x replicas.
    eval_batch: Examples per evaluation step: batch_size x replicas.
    steps_per_epoch: Updates per epoch.
    total_steps: Updates in the whole run.
  """

  replicas: int
  global_batch: int
  eval_batch: int
  steps_per_epoch: int
  total_steps: int


def plan_batches(
    config: RunConfig, num_train_examples: int, strategy: tf.distribute.Strategy
) -> BatchPlan:
  """Phase 2: the global batch and steps for the strategy's replicas."""
  data, train_config = config.data, config.train
  replicas = strategy.num_replicas_in_sync
  # Examples per update: 16 per replica x 4 accumulated micro-batches x 2
  # replicas = 128. Evaluation batches are one micro-batch per replica.
  # Replicas of all workers count: 2 workers x 1 GPU = 2 replicas.
  accumulation = train_config.grad_accum_steps
  global_batch = data.batch_size * accumulation * replicas
  steps_per_epoch = pipeline.num_batches(num_train_examples, global_batch)
  plan = BatchPlan(
      replicas=replicas,
      global_batch=global_batch,
      eval_batch=data.batch_size * replicas,
      steps_per_epoch=steps_per_epoch,
      total_steps=steps_per_epoch * train_config.epochs,
  )
  logging.info(
      "Strategy %s with %d replica(s): %d per replica x %d "
      "accumulated micro-batch(es) x %d replica(s) = global batch "
      "%d; precision %s.",
      type(strategy).__name__,
      replicas,
      data.batch_size,
      accumulation,
      replicas,
      global_batch,
      resolve_precision(train_config.precision),
  )
  logging.info(
      "%d training examples, %d steps per epoch, %d steps in all "
      "(%d warmup).",
      num_train_examples,
      plan.steps_per_epoch,
      plan.total_steps,
      optimization.warmup_steps_for(train_config, plan.total_steps),
  )
  return plan


def training_dataset(
    config: RunConfig, prepared: PreparedData, plan: BatchPlan
) -> tf.data.Dataset:
  """The shuffled, bucketed batches of one epoch of training examples."""
  return pipeline.training_dataset(
      prepared.encoded["train"],
      batch_size=plan.global_batch,
      bucketing=config.data.bucketing,
      seed=config.train.seed,
      pad_id=prepared.encoder.pad_id,
      shuffle_buffer=config.data.shuffle_buffer,
  )


def validation_dataset(
    prepared: PreparedData, plan: BatchPlan
) -> Optional[tf.data.Dataset]:
  """Labelled validation batches, or None without a validation split."""
  if "validation" not in prepared.encoded:
    return None
  dataset, _ = pipeline.inference_dataset(
      prepared.encoded["validation"],
      batch_size=plan.eval_batch,
      with_labels=True,
  )
  return dataset


def build_model(
    config: RunConfig,
    prepared: PreparedData,
    plan: BatchPlan,
    *,
    learning_rate=None,
) -> tf_keras.Model:
  """The task's compiled model; call inside the precision policy and the
  strategy's scope. `learning_rate` replaces the config's schedule."""
  return prepared.task.build_model(
      config,
      prepared,
      total_steps=plan.total_steps,
      steps_per_epoch=plan.steps_per_epoch,
      learning_rate=learning_rate,
  )


def fit(
    config: RunConfig,
    prepared: PreparedData,
    strategy: tf.distribute.Strategy,
    plan: BatchPlan,
) -> FitRecord:
  """Phase 3: builds and fits the model, keeps the best epoch, saves the
  final weights.

  Every worker of a multi-worker run runs all of this (saving a checkpoint
  is collective); only the chief writes to model_dir.

  Raises:
    callbacks.NonFiniteLossError: when the loss became NaN or Inf.
  """
  train_config = config.train
  chief = distribution_lib.is_chief(strategy)
  output_dir = distribution_lib.output_dir(config.model_dir, strategy)
  task = prepared.task
  validation = validation_dataset(prepared, plan)
  with precision_policy(train_config.precision), strategy.scope():
    model = build_model(config, prepared, plan)
    # Inputs are valid and the model is built: from here on the run owns
    # model_dir.
    if chief:
      task.save_run_files(config.model_dir, config, prepared, model)
      artifacts.remove_file(config.model_dir, artifacts.FIT_RECORD_FILENAME)
    run_callbacks, nan_guard, history, best, early_stopping = _callbacks(
        config,
        validation is not None,
        total_steps=plan.total_steps,
        global_batch_size=plan.global_batch,
        output_dir=output_dir,
    )
    run_callbacks += task.training_callbacks(model, config)
    start = time.time()
    model.fit(
        training_dataset(config, prepared, plan),
        validation_data=validation,
        epochs=train_config.epochs,
        callbacks=run_callbacks,
        verbose=2,
    )
    train_seconds = time.time() - start
    global_steps = int(model.optimizer.iterations.numpy())
  if nan_guard.message:
    raise callbacks.NonFiniteLossError(nan_guard.message)

  if (
      best is not None
      and best.best_epoch is not None
      and train_config.restore_best_weights
  ):
    artifacts.restore_weights(
        model, os.path.join(output_dir, artifacts.BEST_WEIGHTS_DIR)
    )
  callbacks.save_weights_atomically(
      model, os.path.join(output_dir, artifacts.FINAL_WEIGHTS_DIR)
  )
  fingerprint = distribution_lib.weights_fingerprint(model)
  worker = distribution_lib.worker_name(strategy)
  logging.info(
      "%sTrained weights after %d steps: SHA-256 %s.",
      worker.capitalize() + ": " if worker else "",
      global_steps,
      fingerprint,
  )
  record = FitRecord(
      history=history.history,
      best_epoch=best.best_epoch if best else None,
      best_metric=best.best if best else None,
      stopped_early=bool(early_stopping and early_stopping.stopped_epoch),
      global_steps=global_steps,
      train_seconds=round(train_seconds, 1),
      weights_fingerprint=fingerprint,
  )
  if chief:
    _write_fit_record(config, record)
  distribution_lib.remove_scratch(config.model_dir, strategy)
  return record


def evaluate(
    config: RunConfig, prepared: PreparedData, plan: BatchPlan
) -> tuple[TrainedModel, dict[str, dict]]:
  """Phase 4: evaluates the saved weights on the validation and test splits.

  Evaluates what evaluate/predict/export will load: the saved weights in a
  float32 model (bf16 compute is for training speed; serving stays float32
  so it runs well on any CPU). Values the task chooses on validation data
  (a multi-label threshold) are chosen first, saved, and bound.

  Returns:
    (the loaded run, split name -> the task's metrics).
  """
  trained = artifacts.load_trained(config.model_dir)
  task, encoded = trained.task, prepared.encoded
  outputs = {
      split: task.predict(
          trained.model, encoded[split], batch_size=plan.eval_batch
      )
      for split in ("validation", "test")
      if split in encoded
  }
  chosen = {}
  if "validation" in outputs:
    chosen = task.choose(
        prepared.examples["validation"],
        encoded["validation"],
        outputs["validation"],
    )
  artifacts.write_task_state(config.model_dir, chosen)
  task.bind(dataclasses.replace(task.state, chosen=chosen))
  eval_results = {
      split: task.metrics(
          prepared.examples[split], encoded[split], split_outputs
      )
      for split, split_outputs in outputs.items()
  }
  artifacts.write_json(
      config.model_dir, artifacts.EVAL_RESULTS_FILENAME, eval_results
  )
  for split, results in eval_results.items():
    logging.info("%s: %s", split, task.describe(results))
  return trained, eval_results


def export(
    config: RunConfig,
    trained: TrainedModel,
    prepared: PreparedData,
    record: FitRecord,
) -> Optional[str]:
  """Phase 5: the SavedModel of these weights (once), or None if not asked."""
  if not config.train.export:
    return None
  if record.export_dir:
    logging.info(
        "These weights were already exported to %s.", record.export_dir
    )
    return record.export_dir
  train_examples = prepared.examples["train"]
  export_dir = trained.task.export(
      trained,
      export_base=config.resolved_export_dir,
      sample_texts=train_examples.texts[:32],
      sample_pairs=(train_examples.text_pairs or [])[:32] or None,
  )
  _write_fit_record(config, dataclasses.replace(record, export_dir=export_dir))
  return export_dir


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
    overfitting: The overfitting verdict (see `reporting`).
    history: Metric name -> per-epoch values.
    curves_png: The plot of the curves, or None.
    export_dir: The SavedModel version directory, or None.
    eval_results: Split name -> the task's metrics.
    worker: A non-chief worker's name (its summary has steps and weights
      only), or None.
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
  history: dict = dataclasses.field(default_factory=dict)
  curves_png: Optional[str] = None
  export_dir: Optional[str] = None
  eval_results: dict = dataclasses.field(default_factory=dict)
  worker: Optional[str] = None

  def to_json_dict(self) -> dict:
    """summary.json: every field but eval_results (eval_results.json)."""
    values = dataclasses.asdict(self)
    del values["eval_results"], values["worker"]
    if values["export_dir"] is None:
      del values["export_dir"]
    return values


def summarize(
    config: RunConfig,
    prepared: PreparedData,
    plan: BatchPlan,
    record: FitRecord,
    eval_results: dict[str, dict],
    export_dir: Optional[str],
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
      curves, monitor=train_config.early_stopping_metric, best_epoch=kept_epoch
  )
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
      history=curves,
      curves_png=reporting.plot_curves(
          curves,
          os.path.join(config.model_dir, artifacts.CURVES_FILENAME),
          best_epoch=kept_epoch,
      ),
      export_dir=export_dir,
      eval_results=eval_results,
  )
  logging.info(
      "Training stopped after %d epoch(s) (%s); kept epoch %s. %s",
      epochs_run,
      summary.stop_reason.replace("_", " "),
      kept_epoch,
      diagnosis["message"],
  )
  artifacts.write_json(
      config.model_dir, artifacts.TRAIN_SUMMARY_FILENAME, summary.to_json_dict()
  )
  return summary


def train(config: RunConfig) -> RunSummary:
  """Fine-tunes, evaluates and exports a model as `config` says.

  Rerunning the same config resumes: from the last backup if training was
  killed, from the saved weights (evaluation and export) if it had finished.
  In a multi-worker run the other workers return after training, with a
  summary of their steps and weights only.

  Raises:
    ValueError: for bad input (files, columns, labels, model, TF_CONFIG),
      before anything in `model_dir` is changed.
    callbacks.NonFiniteLossError: when the loss became NaN or Inf.
  """
  io_utils.check_writable(config.model_dir, "--model_dir")
  # First: a multi-worker strategy must set up the TensorFlow runtime before
  # any operation runs.
  strategy = get_strategy(config.train.distribution, config.train.tpu)
  chief = distribution_lib.is_chief(strategy)
  tf_keras.utils.set_random_seed(config.train.seed)
  prepared = prepare(config)
  config = prepared.config
  plan = plan_batches(config, len(prepared.encoded["train"]), strategy)
  record = finished_fit(config, chief=chief) or fit(
      config, prepared, strategy, plan
  )
  if not chief:
    return RunSummary(
        worker=distribution_lib.worker_name(strategy),
        global_steps=record.global_steps,
        weights_fingerprint=record.weights_fingerprint,
    )
  trained, eval_results = evaluate(config, prepared, plan)
  export_dir = export(config, trained, prepared, record)
  return summarize(config, prepared, plan, record, eval_results, export_dir)
