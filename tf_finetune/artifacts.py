"""The files a training run leaves in `model_dir`, and helpers to write them.

config.json          resolved run configuration
label_vocab.txt      one label per line, in id order
task_state.json      what the task chose on validation data (a
                     multi-label threshold); {} for most tasks
tokenizer/           the model's own tokenizer (Hugging Face format)
backbone/config.json the encoder architecture (translation: the
                     encoder-decoder's; tokenizer/ then holds its
                     tokenizer or the run's spiece.model)
checkpoints/best/    weights of the best validation epoch
checkpoints/final/   the weights training ended with; a symlink to best
                     when they are the best epoch's (kept checkpoints hold
                     the weights only, no optimizer state)
logs/                TensorBoard event files
backup/              weights and optimizer state to resume a killed run,
                     with the run's fingerprint (fingerprint.json);
                     removed when training finishes
history.json         per-epoch metrics, kept across resumptions
training_finished.json  the config, fingerprint and results of a finished
                     fit, so a run killed while evaluating or exporting
                     resumes there
eval_results.json    validation and test metrics
summary.json         epochs run, best epoch, why training stopped, the
                     overfitting diagnosis, a classifier's accuracy against
                     always answering its most frequent label, speed
curves.png           training and validation loss and metric per epoch
export/<version>/    SavedModels for TF Serving
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Optional

import tf_keras

from tf_finetune import callbacks, io_utils, tasks
from tf_finetune import config as config_lib

TOKENIZER_DIR = "tokenizer"
BACKBONE_DIR = "backbone"
BEST_WEIGHTS_DIR = os.path.join("checkpoints", "best")
FINAL_WEIGHTS_DIR = os.path.join("checkpoints", "final")
LOG_DIR = "logs"
BACKUP_DIR = "backup"
EVAL_RESULTS_FILENAME = "eval_results.json"
TRAIN_SUMMARY_FILENAME = "summary.json"
CURVES_FILENAME = "curves.png"
HISTORY_FILENAME = "history.json"
FIT_RECORD_FILENAME = "training_finished.json"
TASK_STATE_FILENAME = "task_state.json"


def save_directories(
    model_dir: str, savers: dict[str, Callable[[str], object]]
) -> None:
  """Writes each `model_dir/<name>` with `save(directory)`, atomically."""
  for name, save in savers.items():
    with io_utils.staged_directory(
        os.path.join(model_dir, name), replace=True
    ) as staging:
      save(staging)


def save_final_weights(model: tf_keras.Model, output_dir: str, *, best: bool):
  """Writes checkpoints/final: a link to checkpoints/best when `best` (the
  model holds the best epoch's weights), else the model's weights."""
  final_dir = os.path.join(output_dir, FINAL_WEIGHTS_DIR)
  if best:
    io_utils.link_directory(
        final_dir, os.path.join(output_dir, BEST_WEIGHTS_DIR)
    )
  else:
    callbacks.save_weights_atomically(model, final_dir)


def final_weights_dir(model_dir: str) -> str:
  """checkpoints/final of a finished run (or checkpoints/best, which it
  refers to).

  Raises:
    ValueError: when training has not finished there.
  """
  weights_dir = os.path.join(model_dir, FINAL_WEIGHTS_DIR)
  io_utils.recover_staged_directory(weights_dir)
  if os.path.islink(weights_dir):
    weights_dir = os.path.join(
        os.path.dirname(weights_dir), os.readlink(weights_dir)
    )
    if not has_weights(weights_dir):
      raise ValueError(
          f"--model_dir={model_dir!r}: {FINAL_WEIGHTS_DIR} refers to "
          f"{os.path.relpath(weights_dir, model_dir)}, which has no "
          "weights; train again."
      )
  if not has_weights(weights_dir):
    raise ValueError(
        f"--model_dir={model_dir!r} has no trained weights in "
        f"{FINAL_WEIGHTS_DIR}; did training finish?"
    )
  return weights_dir


def has_weights(weights_dir: str) -> bool:
  return os.path.isfile(callbacks.weights_path(weights_dir) + ".index")


def write_json(model_dir: str, filename: str, values: dict[str, Any]) -> str:
  path = os.path.join(model_dir, filename)
  io_utils.write_text_atomically(path, json.dumps(values, indent=2) + "\n")
  return path


def remove_file(model_dir: str, filename: str) -> None:
  """Removes `model_dir/filename` if it exists."""
  try:
    os.remove(os.path.join(model_dir, filename))
  except FileNotFoundError:
    pass


def remove_run_state(model_dir: str) -> None:
  """Removes what a training run left to resume or reuse in `model_dir`:
  its backup, checkpoints, history, TensorBoard logs and the record of a
  finished fit. Exports stay."""
  for name in (BACKUP_DIR, "checkpoints", LOG_DIR):
    shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
  for filename in (HISTORY_FILENAME, FIT_RECORD_FILENAME):
    remove_file(model_dir, filename)


def write_task_state(model_dir: str, state: dict[str, Any]) -> str:
  return write_json(model_dir, TASK_STATE_FILENAME, state)


def read_task_state(model_dir: str) -> dict[str, Any]:
  path = os.path.join(model_dir, TASK_STATE_FILENAME)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def restore_weights(model: tf_keras.Model, weights_dir: str) -> None:
  """Loads weights saved by `callbacks.save_weights_atomically`.

  Every variable of `model` but its optimizer's must be found; optimizer
  state in the checkpoint (older runs saved it) is left unused.
  """
  status = callbacks.weights_checkpoint(model).read(
      callbacks.weights_path(weights_dir)
  )
  status.assert_existing_objects_matched().expect_partial()


def load_trained(
    model_dir: str, task_config: Optional[config_lib.TaskConfig] = None
):
  """Loads a finished run from `model_dir` (no download), its task bound.

  Args:
    model_dir: The training run's directory.
    task_config: Replaces the run's task settings (evaluation overrides).

  Returns:
    A `tasks.base.TrainedModel`.
  """
  config = config_lib.read_config(model_dir)
  task = tasks.get_task(task_config or config.task)
  return task.load_trained(model_dir, config)
