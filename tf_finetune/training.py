"""Fine-tuning for a task: the one entry point that trains.

`train(config)` reads the data, builds the model inside the distribution
strategy's scope, fits it with Keras callbacks, restores the best validation
epoch, evaluates, and exports a SavedModel. Everything it writes goes to
`config.model_dir` (see `artifacts`), each file atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Optional

import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import (artifacts, callbacks, io_utils, optimization,
                         reporting, serving, tasks)
from tf_finetune import distribution as distribution_lib
from tf_finetune.config import DataConfig, RunConfig
from tf_finetune.data import pipeline, readers
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks import base as task_base
from tf_finetune.tokenization import TextEncoder, check_matches_tokenizer

# Training texts compared against the model's own tokenizer before training.
_TOKENIZER_CHECK_SAMPLES = 256


def get_strategy(distribution: str,
                 tpu: Optional[str] = None) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `--distribution` (see `distribution`)."""
  return distribution_lib.get_strategy(distribution, tpu)


def has_native_bfloat16() -> bool:
  """Whether the devices training would use compute bfloat16 natively."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return all(tf.config.experimental.get_device_details(gpu).get(
        "compute_capability", (0, 0)) >= (8, 0) for gpu in gpus)
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
  name = {"fp32": "float32", "bf16": "mixed_bfloat16",
          "fp16": "mixed_float16"}[resolve_precision(precision)]
  tf_keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def read_split(data: DataConfig, split: str, *, path: Optional[str] = None,
               with_labels: bool = True) -> Optional[readers.Examples]:
  """Reads a split of a text-level task (see `tasks.base.read_text_split`)."""
  return task_base.read_text_split(data, split, path=path,
                                   with_labels=with_labels)


def _monitor_mode(metric: str) -> str:
  return "min" if metric.endswith("loss") else "max"


def _callbacks(config: RunConfig, has_validation: bool, *, total_steps: int,
               global_batch_size: int, output_dir: str):
  """The run's callbacks.

  Their files go to `output_dir`: model_dir, or a scratch directory on the
  non-chief workers of a multi-worker run.
  """
  train = config.train
  model_dir = config.model_dir
  nan_guard = callbacks.StopOnNonFiniteLoss()
  history = callbacks.PersistentHistory(
      os.path.join(output_dir, artifacts.HISTORY_FILENAME))
  found = [
      nan_guard,
      history,
      # Keras sends the summaries of non-chief workers to scratch itself.
      tf_keras.callbacks.TensorBoard(
          os.path.join(model_dir, artifacts.LOG_DIR), profile_batch=0),
      callbacks.StepLogger(os.path.join(output_dir, artifacts.LOG_DIR),
                           train.log_every_steps, total_steps,
                           global_batch_size),
      callbacks.EpochSummary(),
  ]
  if train.ema_decay:
    found.append(callbacks.ValidateWithMovingAverages())
  best = early_stopping = None
  if has_validation:
    mode = _monitor_mode(train.early_stopping_metric)
    best = callbacks.BestWeightsCheckpoint(
        os.path.join(output_dir, artifacts.BEST_WEIGHTS_DIR),
        monitor=train.early_stopping_metric, mode=mode)
    found.append(best)
    if train.early_stopping_patience:
      early_stopping = tf_keras.callbacks.EarlyStopping(
          monitor=train.early_stopping_metric, mode=mode,
          patience=train.early_stopping_patience,
          min_delta=train.early_stopping_min_delta,
          restore_best_weights=train.restore_best_weights, verbose=1)
      found.append(early_stopping)
  # Last, so an epoch is backed up only after its history and best weights
  # are saved: a run killed in between redoes the epoch's end, losing
  # nothing. Every worker restores from the chief's backup; Keras sends
  # the other workers' backups to scratch.
  found.append(callbacks.BackupAndRestore(
      os.path.join(model_dir, artifacts.BACKUP_DIR),
      save_freq=train.save_every_steps or "epoch"))
  return found, nan_guard, history, best, early_stopping


def build_compiled_classifier(config: RunConfig, *, tokenizer,
                              num_labels: int, total_steps: int,
                              steps_per_epoch: int = 1,
                              learning_rate=None,
                              label_vocab=None) -> tf_keras.Model:
  """The pretrained backbone with a fresh head, compiled for fine-tuning.

  Applies every optimization lever of the config: dropout overrides,
  backbone penalties (L1/L2 or L2-SP), layer-wise learning rates, frozen
  layers, label smoothing, gradient accumulation, EMA, XLA. Call inside the
  strategy scope and precision policy of the run.

  Args:
    config: The run config.
    tokenizer: The model's Hugging Face tokenizer (checked against it).
    num_labels: Classes of the head (classification).
    total_steps: Optimizer updates in the whole run (for the schedule).
    steps_per_epoch: Updates per epoch (the step schedule's interval).
    learning_rate: A schedule replacing the config's (the range test's).
    label_vocab: The task's output names; sizes the head of any task
      (default: `num_labels` classes).
  """
  model_config, train_config = config.model, config.train
  task = tasks.get_task(config.task)
  if label_vocab is None:
    label_vocab = [str(i) for i in range(num_labels)]
  backbone = backbone_lib.load_backbone(
      model_config.model,
      allow_pickle_weights=model_config.allow_pickle_weights,
      config_overrides=model_config.config_overrides)
  backbone_lib.check_tokenizer_fits(tokenizer, backbone.config,
                                    model_config.model)
  model = artifacts.build_classifier(
      backbone, task.head_size(label_vocab), model_config, train_config.seed,
      label_smoothing=train_config.label_smoothing,
      grad_accum_steps=train_config.grad_accum_steps,
      per_token=task.per_token, loss_fn=task.loss_fn(train_config))
  _add_backbone_penalties(model, model_config)
  optimizer = optimization.create_optimizer(
      train_config, total_steps, steps_per_epoch=steps_per_epoch,
      learning_rate=learning_rate,
      lr_multipliers=backbone_lib.layerwise_lr_multipliers(
          backbone, train_config.layerwise_lr_decay))
  # Slots for every variable now, before any is frozen: layers unfrozen
  # later must find theirs (optimizer variables cannot be created mid-fit).
  optimizer.build(model.trainable_variables)
  _freeze_initial_layers(backbone, train_config)
  model.compile(
      optimizer=optimizer,
      metrics=task.keras_metrics(label_vocab),
      steps_per_execution=train_config.steps_per_execution,
      jit_compile=train_config.jit_compile)
  return model


def _add_backbone_penalties(model, model_config) -> None:
  """Adds --backbone_l1/--backbone_l2 or --l2_sp to the model's losses."""
  l1, l2, l2_sp = (model_config.backbone_l1, model_config.backbone_l2,
                   model_config.l2_sp)
  if not (l1 or l2 or l2_sp):
    return
  variables = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=model_config.regularize_embeddings)
  if l1 or l2:
    def penalty():
      total = 0.0
      for variable in variables:
        if l1:
          total += l1 * tf.reduce_sum(tf.abs(variable))
        if l2:
          total += l2 * tf.reduce_sum(tf.square(variable))
      return total
    model.add_loss(penalty)
  if l2_sp:
    # The pretrained values, outside the model's checkpoint: a resumed run
    # loads them again from --model, so they always mean "pretrained".
    anchors = [tf.Variable(variable.read_value(), trainable=False)
               for variable in variables]

    def distance_from_pretrained():
      return l2_sp * tf.add_n([
          tf.reduce_sum(tf.square(variable - anchor))
          for variable, anchor in zip(variables, anchors)])
    model.add_loss(distance_from_pretrained)
  logging.info("Backbone penalties on %d kernels: l1=%g l2=%g l2_sp=%g.",
               len(variables), l1, l2, l2_sp)


def _freeze_initial_layers(backbone, train_config) -> None:
  gradual = train_config.unfreeze_schedule == "gradual"
  if not (gradual or train_config.freeze_layers or
          train_config.freeze_embeddings):
    return
  num_layers = len(backbone_lib.encoder_layers(backbone))
  backbone_lib.set_trainable_layers(
      backbone,
      frozen_layers=num_layers if gradual else train_config.freeze_layers,
      freeze_embeddings=gradual or train_config.freeze_embeddings)


def _fine_tuning_callbacks(model, train_config) -> list:
  if train_config.unfreeze_schedule != "gradual":
    return []
  return [callbacks.GradualUnfreezing(
      model.backbone,
      num_layers=len(backbone_lib.encoder_layers(model.backbone)),
      freeze_layers=train_config.freeze_layers,
      freeze_embeddings=train_config.freeze_embeddings)]


@dataclasses.dataclass
class PreparedData:
  """A run's examples, labels and tokenizer, encoded and checked.

  `config` is the run's config with the columns the task resolved (a TFDS
  data set's own feature names), the one a run saves.
  """

  label_vocab: list[str]
  tokenizer: Any
  encoder: TextEncoder
  examples: dict[str, readers.Examples]
  encoded: dict[str, pipeline.EncodedExamples]
  config: Optional[RunConfig] = None
  task: Any = None


def prepare_data(config: RunConfig) -> PreparedData:
  """Reads, validates and encodes the splits the config names.

  Raises:
    ValueError: for bad files, columns, labels or model, naming the flag.
  """
  task = tasks.get_task(config.task)
  data = task.resolve_data(config.data)
  config = dataclasses.replace(config, data=data)
  if task.owns_model:
    return PreparedData(**task.prepare(config), config=config, task=task)
  examples = task.read_splits(data)
  train_examples = examples["train"]
  label_vocab = task.label_vocab(train_examples)
  for split in ("validation", "test"):
    if split in examples:
      task.check_labels(examples[split], label_vocab, f"--{split}_file")
  logging.info("Task %s; outputs (%d): %s", task.name, len(label_vocab),
               ", ".join(label_vocab))

  backbone_lib.check_model_source(config.model.model,
                                  config.model.allow_pickle_weights)
  tokenizer = backbone_lib.load_tokenizer(config.model.model)
  encoder = TextEncoder.from_hf_tokenizer(tokenizer, data.max_seq_length)
  sample = slice(0, _TOKENIZER_CHECK_SAMPLES)
  check_matches_tokenizer(
      encoder, tokenizer, train_examples.texts[sample],
      None if train_examples.text_pairs is None else
      train_examples.text_pairs[sample])
  encoded = {split: task.encode(found, encoder, label_vocab)
             for split, found in examples.items()}
  return PreparedData(label_vocab, tokenizer, encoder, examples, encoded,
                      config, task)


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
  artifacts.write_json(config.model_dir, artifacts.FIT_RECORD_FILENAME, {
      "config": json.loads(config.to_json()), **dataclasses.asdict(record)})


def _finished_fit(config: RunConfig, *, chief: bool) -> Optional[FitRecord]:
  """The record of a finished `fit` of this same config in model_dir, if any.

  A run killed after training (while evaluating or exporting) and started
  again with the same command goes straight to evaluation and export: its
  backup is gone, and without this record it would train from scratch.
  """
  record = callbacks.read_json_record(
      os.path.join(config.model_dir, artifacts.FIT_RECORD_FILENAME))
  if not record or record.pop("config", None) != json.loads(config.to_json()):
    return None
  final = os.path.join(config.model_dir, artifacts.FINAL_WEIGHTS_DIR)
  if chief:
    io_utils.recover_staged_directory(final)
  if not os.path.isfile(callbacks.weights_path(final) + ".index"):
    return None
  try:
    return FitRecord(**record)
  except TypeError:
    return None


def _fit(config: RunConfig, prepared: PreparedData,
         strategy: tf.distribute.Strategy, *, train_dataset, validation_dataset,
         total_steps: int, steps_per_epoch: int,
         global_batch: int) -> FitRecord:
  """Builds and fits the model, keeps the best epoch, saves final weights.

  Every worker of a multi-worker run runs all of this (saving a checkpoint
  is collective); only the chief writes to model_dir.
  """
  train_config = config.train
  chief = distribution_lib.is_chief(strategy)
  output_dir = distribution_lib.output_dir(config.model_dir, strategy)
  task = prepared.task
  with precision_policy(train_config.precision), strategy.scope():
    if task.owns_model:
      model = task.build_model(config, prepared, total_steps=total_steps,
                               steps_per_epoch=steps_per_epoch)
    else:
      model = build_compiled_classifier(
          config, tokenizer=prepared.tokenizer,
          num_labels=len(prepared.label_vocab), total_steps=total_steps,
          steps_per_epoch=steps_per_epoch, label_vocab=prepared.label_vocab)
    # Inputs are valid and the model is built: from here on the run owns
    # model_dir.
    if chief:
      if task.owns_model:
        task.save_run_files(config.model_dir, config, prepared, model)
      else:
        artifacts.save_run_files(config.model_dir, config,
                                 prepared.label_vocab, prepared.tokenizer,
                                 model.backbone.config)
      artifacts.remove_file(config.model_dir, artifacts.FIT_RECORD_FILENAME)
    run_callbacks, nan_guard, history, best, early_stopping = _callbacks(
        config, validation_dataset is not None, total_steps=total_steps,
        global_batch_size=global_batch, output_dir=output_dir)
    if not task.owns_model:
      run_callbacks += _fine_tuning_callbacks(model, train_config)
    start = time.time()
    model.fit(train_dataset, validation_data=validation_dataset,
              epochs=train_config.epochs, callbacks=run_callbacks, verbose=2)
    train_seconds = time.time() - start
    global_steps = int(model.optimizer.iterations.numpy())
  if nan_guard.message:
    raise callbacks.NonFiniteLossError(nan_guard.message)

  if (best is not None and best.best_epoch is not None and
      train_config.restore_best_weights):
    artifacts.restore_weights(model, os.path.join(
        output_dir, artifacts.BEST_WEIGHTS_DIR))
  callbacks.save_weights_atomically(
      model, os.path.join(output_dir, artifacts.FINAL_WEIGHTS_DIR))
  fingerprint = distribution_lib.weights_fingerprint(model)
  logging.info("%sTrained weights after %d steps: SHA-256 %s.",
               distribution_lib.worker_name(strategy).capitalize() + ": "
               if distribution_lib.worker_name(strategy) else "",
               global_steps, fingerprint)
  record = FitRecord(
      history=history.history,
      best_epoch=best.best_epoch if best else None,
      best_metric=best.best if best else None,
      stopped_early=bool(early_stopping and early_stopping.stopped_epoch),
      global_steps=global_steps, train_seconds=round(train_seconds, 1),
      weights_fingerprint=fingerprint)
  if chief:
    _write_fit_record(config, record)
  distribution_lib.remove_scratch(config.model_dir, strategy)
  return record


def train(config: RunConfig) -> dict:
  """Fine-tunes, evaluates and exports a classifier as `config` says.

  Rerunning the same config resumes: from the last backup if training was
  killed, from the saved weights (evaluation and export) if it had finished.
  In a multi-worker run the other workers return after training, with a
  summary of their steps and weights only.

  Returns:
    The run summary (also written to summary.json), with the
    evaluation results under "eval_results" and the export directory under
    "export_dir" when exported.

  Raises:
    ValueError: for bad input (files, columns, labels, model, TF_CONFIG),
      before anything in `model_dir` is changed.
    callbacks.NonFiniteLossError: when the loss became NaN or Inf.
  """
  data, train_config = config.data, config.train
  io_utils.check_writable(config.model_dir, "--model_dir")
  # First: a multi-worker strategy must set up the TensorFlow runtime before
  # any operation runs.
  strategy = get_strategy(train_config.distribution, train_config.tpu)
  tf_keras.utils.set_random_seed(train_config.seed)
  prepared = prepare_data(config)
  config, task = prepared.config, prepared.task
  data = config.data
  label_vocab, tokenizer, encoder = (prepared.label_vocab, prepared.tokenizer,
                                     prepared.encoder)
  encoded, train_examples = prepared.encoded, prepared.examples["train"]

  replicas = strategy.num_replicas_in_sync
  # Examples per update: 16 per replica x 4 accumulated micro-batches x 2
  # replicas = 128. Evaluation batches are one micro-batch per replica.
  # Replicas of all workers count: 2 workers x 1 GPU = 2 replicas.
  accumulation = train_config.grad_accum_steps
  global_batch = data.batch_size * accumulation * replicas
  eval_batch = data.batch_size * replicas
  logging.info("Strategy %s with %d replica(s): %d per replica x %d "
               "accumulated micro-batch(es) x %d replica(s) = global batch "
               "%d; precision %s.", type(strategy).__name__, replicas,
               data.batch_size, accumulation, replicas, global_batch,
               resolve_precision(train_config.precision))

  train_dataset = pipeline.training_dataset(
      encoded["train"], batch_size=global_batch, bucketing=data.bucketing,
      seed=train_config.seed, pad_id=encoder.pad_id,
      shuffle_buffer=data.shuffle_buffer)
  validation_dataset = None
  if "validation" in encoded:
    validation_dataset, _ = pipeline.inference_dataset(
        encoded["validation"], batch_size=eval_batch, pad_id=encoder.pad_id,
        with_labels=True)
  steps_per_epoch = pipeline.num_batches(len(encoded["train"]), global_batch)
  total_steps = steps_per_epoch * train_config.epochs
  logging.info("%d training examples, %d steps per epoch, %d steps in all "
               "(%d warmup).", len(train_examples), steps_per_epoch,
               total_steps,
               optimization.warmup_steps_for(train_config, total_steps))

  record = _finished_fit(config, chief=distribution_lib.is_chief(strategy))
  if record is not None:
    logging.info("Training already finished in %s (%d steps); using its "
                 "saved weights.", config.model_dir, record.global_steps)
  else:
    record = _fit(config, prepared, strategy, train_dataset=train_dataset,
                  validation_dataset=validation_dataset,
                  total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  global_batch=global_batch)
  if not distribution_lib.is_chief(strategy):
    return {"worker": distribution_lib.worker_name(strategy),
            "global_steps": record.global_steps,
            "weights_fingerprint": record.weights_fingerprint,
            "eval_results": {}}

  # Evaluate and export what evaluate/predict/export will load: the saved
  # weights in a float32 model (bf16 compute is for training speed; serving
  # stays float32 so it runs well on any CPU).
  trained = artifacts.load_trained(config.model_dir)
  outputs = {split: task.predict(trained.model, encoded[split],
                                 batch_size=eval_batch, pad_id=encoder.pad_id)
             for split in ("validation", "test") if split in encoded}
  task_state = {}
  if "validation" in outputs:
    # Post-processing chosen on validation data (a multi-label threshold).
    task_state = task.fit_state(prepared.examples["validation"],
                                encoded["validation"], outputs["validation"],
                                label_vocab)
  artifacts.write_task_state(config.model_dir, task_state)
  # The export serves what was just chosen (loaded before it was written).
  trained = dataclasses.replace(trained, task_state=task_state)
  eval_results = {
      split: task.metrics(prepared.examples[split], encoded[split],
                          split_outputs, label_vocab, task_state)
      for split, split_outputs in outputs.items()}
  artifacts.write_json(config.model_dir, artifacts.EVAL_RESULTS_FILENAME,
                       eval_results)
  for split, results in eval_results.items():
    logging.info("%s: %s", split, task.describe(results))

  curves = record.history
  epochs_run = len(curves.get("loss", []))
  stopped_early = record.stopped_early
  best_epoch = record.best_epoch
  train_seconds = record.train_seconds
  kept_epoch = (best_epoch if best_epoch and train_config.restore_best_weights
                else epochs_run)
  diagnosis = reporting.diagnose_overfitting(
      curves, monitor=train_config.early_stopping_metric,
      best_epoch=kept_epoch)
  summary = {
      "epochs_run": epochs_run,
      "stop_reason": ("early_stopping" if stopped_early else
                      "completed_all_epochs"),
      "early_stopping_fired": stopped_early,
      "best_epoch": best_epoch,
      "kept_epoch": kept_epoch,
      "best_metric": ({train_config.early_stopping_metric: record.best_metric}
                      if record.best_metric is not None else None),
      "global_batch_size": global_batch,
      "replicas": replicas,
      "precision": resolve_precision(train_config.precision),
      "global_steps": record.global_steps,
      "steps_per_epoch": steps_per_epoch,
      "train_seconds": train_seconds,
      "train_examples_per_second": round(
          epochs_run * len(train_examples) / max(train_seconds, 1e-9), 1),
      "weights_fingerprint": record.weights_fingerprint,
      "overfitting": diagnosis,
      "history": curves,
  }
  summary["curves_png"] = reporting.plot_curves(
      curves, os.path.join(config.model_dir, artifacts.CURVES_FILENAME),
      best_epoch=kept_epoch)
  logging.info("Training stopped after %d epoch(s) (%s); kept epoch %s. %s",
               epochs_run, summary["stop_reason"].replace("_", " "),
               kept_epoch, diagnosis["message"])
  if train_config.export and record.export_dir:
    logging.info("These weights were already exported to %s.",
                 record.export_dir)
    summary["export_dir"] = record.export_dir
  elif train_config.export:
    summary["export_dir"] = export_trained(
        trained, export_base=config.resolved_export_dir,
        sample_texts=train_examples.texts[:32],
        sample_pairs=(train_examples.text_pairs or [])[:32] or None)
    _write_fit_record(config, dataclasses.replace(
        record, export_dir=summary["export_dir"]))
  artifacts.write_json(config.model_dir, artifacts.TRAIN_SUMMARY_FILENAME,
                       summary)
  summary["eval_results"] = eval_results
  return summary


def export_trained(trained: artifacts.TrainedModel, *, export_base: str,
                   sample_texts=(), sample_pairs=None) -> str:
  """Exports a loaded run with its task's serving signature."""
  task = tasks.get_task(trained.config.task)
  if task.owns_model:
    return task.export(trained, export_base=export_base,
                       sample_texts=sample_texts)
  text_pair = trained.config.data.text_pair_column is not None
  server = task.server(trained.model, trained.encoder, trained.label_vocab,
                       text_pair=text_pair, state=trained.task_state)
  return serving.export_server(
      server, encoder=trained.encoder, text_pair=text_pair,
      export_base=export_base, hf_tokenizer=trained.tokenizer,
      checked_output=task.checked_output, sample_texts=sample_texts,
      sample_pairs=sample_pairs, input_names=task.input_names)
