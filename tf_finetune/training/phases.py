"""The phases of a training run, each a public function with a small
typed result.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import (
    artifacts,
    callbacks,
    optimization,
    tasks,
)
from tf_finetune import distribution as distribution_lib
from tf_finetune.config import RunConfig
from tf_finetune.data import pipeline, streaming
from tf_finetune.tasks.base import PreparedData, Task, TrainedModel
from tf_finetune.training import fingerprint as fingerprint_lib
from tf_finetune.training import recipes
from tf_finetune.training.fit_callbacks import fit_callbacks
from tf_finetune.training.fit_record import FitRecord, write_fit_record
from tf_finetune.training.precision import precision_policy, resolve_precision


def get_strategy(
    distribution: str, tpu: Optional[str] = None
) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `--distribution` (see `distribution`)."""
  return distribution_lib.get_strategy(distribution, tpu)


def prepare(config: RunConfig) -> PreparedData:
  """Phase 1: the task reads, checks and encodes the splits; --recipe
  chooses its settings from the number of training examples.

  Raises:
    ValueError: for bad files, columns, labels or model, naming the flag.
  """
  prepared = tasks.get_task(config.task).prepare(config)
  prepared.config = recipes.resolve(
      prepared.config, len(prepared.examples["train"])
  )
  return prepared


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
    epochs: Epochs to train: --epochs, or more to reach --min_steps.
  """

  replicas: int
  global_batch: int
  eval_batch: int
  steps_per_epoch: int
  total_steps: int
  epochs: int


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
  # A streamed run may state its epoch length (--steps_per_epoch) instead
  # of counting the training rows.
  steps_per_epoch = data.steps_per_epoch or pipeline.num_batches(
      num_train_examples, global_batch
  )
  epochs = recipes.extended_epochs(
      train_config.epochs, steps_per_epoch, train_config.min_steps
  )
  if epochs != train_config.epochs:
    logging.info(
        "--min_steps=%d: training for %d epochs instead of %d (%d steps "
        "per epoch).",
        train_config.min_steps,
        epochs,
        train_config.epochs,
        steps_per_epoch,
    )
  plan = BatchPlan(
      replicas=replicas,
      global_batch=global_batch,
      eval_batch=data.batch_size * replicas,
      steps_per_epoch=steps_per_epoch,
      total_steps=steps_per_epoch * epochs,
      epochs=epochs,
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
    config: RunConfig,
    prepared: PreparedData,
    plan: BatchPlan,
    *,
    start: tuple[int, int] = (0, 0),
) -> tf.data.Dataset:
  """The shuffled, bucketed batches of the run's epochs, back to back.

  Args:
    config: The run.
    prepared: Its examples.
    plan: Its batches.
    start: (0-based epoch, batches of it already trained on): where a
      resumed run starts; the batches before are left out.
  """
  epochs = plan.epochs
  epoch, batch = start
  if epoch >= epochs:
    # Backed up after its last epoch: Keras trains no more; any dataset
    # does.
    epoch, batch = epochs - 1, 0
  train = prepared.encoded["train"]
  if isinstance(train, streaming.StreamedSplit):
    worker_index, num_workers = streaming.worker_position(
        tf.distribute.get_strategy()
    )
    return streaming.training_dataset(
        train,
        batch_size=plan.global_batch,
        steps_per_epoch=plan.steps_per_epoch,
        # A resumed run skips the batches it trained on.
        start_batch=epoch * plan.steps_per_epoch + batch,
        num_batches=(epochs - epoch) * plan.steps_per_epoch - batch,
        bucketing=config.data.bucketing,
        seed=config.train.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        num_workers=num_workers,
        worker_index=worker_index,
    )
  return pipeline.training_dataset(
      prepared.encoded["train"],
      batch_size=plan.global_batch,
      bucketing=config.data.bucketing,
      seed=config.train.seed,
      pad_id=prepared.encoder.pad_id,
      shuffle_buffer=config.data.shuffle_buffer,
      epochs=epochs,
      start_epoch=epoch,
      start_batch=batch,
  )


def validation_dataset(
    prepared: PreparedData, plan: BatchPlan
) -> Optional[tf.data.Dataset]:
  """Labelled validation batches, or None without a validation split."""
  if "validation" not in prepared.encoded:
    return None
  validation = prepared.encoded["validation"]
  if isinstance(validation, streaming.StreamedSplit):
    return streaming.inference_dataset(
        validation, batch_size=plan.eval_batch, with_labels=True
    )
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
    *,
    fingerprint: Optional[dict] = None,
) -> FitRecord:
  """Phase 3: builds and fits the model, keeps the best epoch, saves the
  final weights.

  `fingerprint` (`training.fingerprint.run_fingerprint`) is recorded with
  the backup and with the record of the finished fit.

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
      if fingerprint is not None:
        fingerprint_lib.write_backup_record(config.model_dir, fingerprint)
    run_callbacks, nan_guard, history, best, early_stopping = fit_callbacks(
        config,
        validation is not None,
        total_steps=plan.total_steps,
        steps_per_epoch=plan.steps_per_epoch,
        global_batch_size=plan.global_batch,
        output_dir=output_dir,
    )
    run_callbacks += task.training_callbacks(model, config)
    # The batches from where the backup (if any) resumes: Keras restores the
    # weights and counts the steps, but would start the data afresh.
    resume = callbacks.resume_point(
        os.path.join(config.model_dir, artifacts.BACKUP_DIR),
        plan.steps_per_epoch,
    )
    if resume != (0, 0):
      logging.info(
          "Resuming from the backup in epoch %d after %d of its %d steps.",
          resume[0] + 1,
          resume[1],
          plan.steps_per_epoch,
      )
    start = time.time()
    model.fit(
        training_dataset(config, prepared, plan, start=resume),
        validation_data=validation,
        epochs=plan.epochs,
        # One dataset of all epochs: Keras keeps its iterator across them.
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=run_callbacks,
        verbose=2,
    )
    train_seconds = time.time() - start
    global_steps = int(model.optimizer.iterations.numpy())
  if nan_guard.message:
    raise callbacks.NonFiniteLossError(nan_guard.message)

  # The final weights are the best epoch's when they were restored, or when
  # the last epoch was the best (without EMA, whose best weights are the
  # averages): then checkpoints/final refers to checkpoints/best instead of
  # holding a second copy.
  holds_best = False
  if best is not None and best.best_epoch is not None:
    epochs_run = len(history.history.get("loss", []))
    if train_config.restore_best_weights:
      artifacts.restore_weights(
          model, os.path.join(output_dir, artifacts.BEST_WEIGHTS_DIR)
      )
      holds_best = True
    else:
      holds_best = best.best_epoch == epochs_run and not train_config.ema_decay
  artifacts.save_final_weights(model, output_dir, best=holds_best)
  weights_fingerprint = distribution_lib.weights_fingerprint(model)
  worker = distribution_lib.worker_name(strategy)
  logging.info(
      "%sTrained weights after %d steps: SHA-256 %s.",
      worker.capitalize() + ": " if worker else "",
      global_steps,
      weights_fingerprint,
  )
  record = FitRecord(
      history=history.history,
      best_epoch=best.best_epoch if best else None,
      best_metric=best.best if best else None,
      stopped_early=bool(early_stopping and early_stopping.stopped_epoch),
      global_steps=global_steps,
      train_seconds=round(train_seconds, 1),
      weights_fingerprint=weights_fingerprint,
      fingerprint=fingerprint,
  )
  if chief:
    write_fit_record(config, record)
    # The backup is gone (Keras deletes it when fit returns); so goes its
    # record.
    backup_dir = os.path.join(config.model_dir, artifacts.BACKUP_DIR)
    artifacts.remove_file(backup_dir, fingerprint_lib.FILENAME)
    try:
      os.rmdir(backup_dir)
    except OSError:
      pass  # Not empty: something else is kept there.
  distribution_lib.remove_scratch(config.model_dir, strategy)
  return record


def selection(
    config: RunConfig,
    record: FitRecord,
    task: Task,
    splits: Sequence[str],
) -> dict[str, str]:
  """Which data chose what in a run: the "selection" block of
  eval_results.json and summary.json.

  Args:
    config: The run config.
    record: How training went (the best epoch).
    task: The task, bound to the run's chosen values.
    splits: The evaluated splits.

  Returns:
    What chose the kept epoch, the stopping epoch (with early stopping)
    and each value the task chose after training ("validation", or the
    flag or rule that set it); then, per evaluated split, whether its
    metrics are "selection" metrics (the split chose something above) or
    "held out".
  """
  train_config = config.train
  restored = record.best_epoch is not None and train_config.restore_best_weights
  chosen = {"kept_epoch": "validation" if restored else "last epoch"}
  if "validation" in splits and train_config.early_stopping_patience:
    chosen["stopping_epoch"] = "validation"
  chosen.update(task.selection())
  selected_on_validation = "validation" in chosen.values()
  for split in splits:
    chosen[f"{split}_metrics"] = (
        "selection"
        if split == "validation" and selected_on_validation
        else "held out"
    )
  return chosen


def evaluate(
    config: RunConfig,
    prepared: PreparedData,
    plan: BatchPlan,
    record: FitRecord,
) -> tuple[TrainedModel, dict[str, dict]]:
  """Phase 4: evaluates the saved weights on the validation and test splits.

  Evaluates what evaluate/predict/export will load: the saved weights in a
  float32 model (bf16 compute is for training speed; serving stays float32
  so it runs well on any CPU). Values the task chooses on validation data
  (a multi-label threshold) are chosen first, saved, and bound.
  eval_results.json also says which data chose what (`selection`): the
  validation split's metrics are selection metrics when it chose the kept
  epoch or a threshold; the test split's are held out.

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
      config.model_dir,
      artifacts.EVAL_RESULTS_FILENAME,
      {
          "selection": selection(config, record, task, list(eval_results)),
          **eval_results,
      },
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
  write_fit_record(config, dataclasses.replace(record, export_dir=export_dir))
  return export_dir
