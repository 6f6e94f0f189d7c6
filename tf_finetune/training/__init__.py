"""Fine-tuning for a task, in named phases.

`train(config)` runs them in order: `prepare` (the task reads, checks and
encodes the data), `plan_batches` (global batch and steps for the
strategy), `fit` (builds the task's model inside the strategy's scope and
fits it with Keras callbacks, keeping the best validation epoch),
`evaluate` (the saved weights, as evaluate/predict/export load them, and
which data chose what: `selection`),
`export` (a SavedModel) and `summarize` (summary.json, curves, the
overfitting verdict). Benchmarks and the learning-rate range test call the
same phases. Everything goes to `config.model_dir` (see `artifacts`), each
file atomically.

Modules: `phases` (prepare, plan_batches, the datasets, build_model, fit,
evaluate, export), `summary` (RunSummary, summarize), `fit_callbacks`,
`fit_record` (resuming after training), `fingerprint` (what a run's
weights depend on, checked on reruns) and `precision`.
"""

from __future__ import annotations

import tf_keras

from tf_finetune import artifacts, io_utils
from tf_finetune import distribution as distribution_lib
from tf_finetune.config import RunConfig
from tf_finetune.training import fingerprint
from tf_finetune.training.fit_record import FitRecord, finished_fit
from tf_finetune.training.phases import (
    BatchPlan,
    build_model,
    evaluate,
    export,
    fit,
    get_strategy,
    plan_batches,
    prepare,
    selection,
    training_dataset,
    validation_dataset,
)
from tf_finetune.training.precision import (
    has_native_bfloat16,
    precision_policy,
    resolve_precision,
)
from tf_finetune.training.summary import RunSummary, summarize


def train(config: RunConfig) -> RunSummary:
  """Fine-tunes, evaluates and exports a model as `config` says.

  Rerunning the same config resumes: from the last backup if training was
  killed, from the saved weights (evaluation and export) if it had finished.
  A rerun whose settings or data would train other weights is refused
  (`fingerprint`), unless `overwrite_model_dir` starts afresh.
  In a multi-worker run the other workers return after training, with a
  summary of their steps and weights only.

  Raises:
    ValueError: for bad input (files, columns, labels, model, TF_CONFIG)
      or a changed rerun, before anything in `model_dir` is changed.
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
  run_fingerprint = fingerprint.run_fingerprint(
      config, prepared.encoded, plan.replicas
  )
  if config.overwrite_model_dir:
    if chief:
      artifacts.remove_run_state(config.model_dir)
    distribution_lib.barrier(strategy)  # No worker reads what goes.
  else:
    fingerprint.check_unchanged(config.model_dir, run_fingerprint)
  record = finished_fit(config, run_fingerprint, chief=chief) or fit(
      config, prepared, strategy, plan, fingerprint=run_fingerprint
  )
  if not chief:
    return RunSummary(
        worker=distribution_lib.worker_name(strategy),
        global_steps=record.global_steps,
        weights_fingerprint=record.weights_fingerprint,
    )
  trained, eval_results = evaluate(config, prepared, plan, record)
  export_dir = export(config, trained, prepared, record)
  return summarize(
      config,
      prepared,
      plan,
      record,
      eval_results,
      export_dir,
      selection=selection(config, record, trained.task, list(eval_results)),
  )
