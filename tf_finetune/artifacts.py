"""The files a training run leaves in `model_dir`, and loading them back.

  config.json          resolved run configuration
  label_vocab.txt      one label per line, in id order
  task_state.json      what the task chose on validation data (a
                       multi-label threshold); {} for most tasks
  tokenizer/           the model's own tokenizer (Hugging Face format)
  backbone/config.json the encoder architecture (translation: the
                       encoder-decoder's; tokenizer/ then holds its
                       tokenizer or the run's spiece.model)
  checkpoints/best/    weights of the best validation epoch
  checkpoints/final/   the weights training ended with (best, if validated)
  logs/                TensorBoard event files
  backup/              state to resume a killed run (removed when done)
  history.json         per-epoch metrics, kept across resumptions
  training_finished.json  the config and results of a finished fit, so a
                       run killed while evaluating or exporting resumes there
  eval_results.json    validation and test metrics
  summary.json         epochs run, best epoch, why training stopped, the
                       overfitting diagnosis, speed
  curves.png           training and validation loss and metric per epoch
  export/<version>/    SavedModels for TF Serving
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import tf_keras

from tf_finetune import callbacks, config as config_lib, io_utils
from tf_finetune.data import labels
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models.classifier import TextClassifier
from tf_finetune.tokenization import TextEncoder

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


def save_run_files(model_dir: str, config: config_lib.RunConfig,
                   label_vocab, tokenizer, backbone_config) -> None:
  """Writes what evaluation, prediction and export need besides weights."""
  config_lib.write_config(config, model_dir)
  labels.write_label_vocab(label_vocab, model_dir)
  for name, save in ((TOKENIZER_DIR, tokenizer.save_pretrained),
                     (BACKBONE_DIR, backbone_config.save_pretrained)):
    with io_utils.staged_directory(os.path.join(model_dir, name),
                                   replace=True) as staging:
      save(staging)


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


def write_task_state(model_dir: str, state: dict[str, Any]) -> str:
  return write_json(model_dir, TASK_STATE_FILENAME, state)


def read_task_state(model_dir: str) -> dict[str, Any]:
  path = os.path.join(model_dir, TASK_STATE_FILENAME)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def build_classifier(backbone, num_labels: int,
                     model_config: config_lib.ModelConfig,
                     seed: int, *, label_smoothing: float = 0.0,
                     grad_accum_steps: int = 1, per_token: bool = False,
                     loss_fn=None) -> TextClassifier:
  """The task model on `backbone`, its variables created.

  Args:
    backbone: The Hugging Face TF encoder.
    num_labels: Outputs of the head (the task's head size).
    model_config: Pooling, dropout and head penalties.
    seed: Seeds the head's initializer and dropout.
    label_smoothing: For the default (cross-entropy) loss.
    grad_accum_steps: Micro-batches per update.
    per_token: A head on every token (token classification).
    loss_fn: The task's per-example loss; default cross-entropy.
  """
  model = TextClassifier(backbone, num_labels, pooling=model_config.pooling,
                         dropout=model_config.dropout, l1=model_config.l1,
                         l2=model_config.l2, seed=seed,
                         label_smoothing=label_smoothing,
                         grad_accum_steps=grad_accum_steps,
                         per_token=per_token, loss_fn=loss_fn)
  model(model.dummy_inputs())  # Creates the head's variables.
  return model


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A finished run loaded back from its `model_dir`."""

  config: config_lib.RunConfig
  label_vocab: list[str]
  tokenizer: Any
  encoder: TextEncoder
  model: tf_keras.Model
  task_state: dict = dataclasses.field(default_factory=dict)


def load_trained(model_dir: str) -> TrainedModel:
  """Rebuilds the trained classifier from `model_dir` (no download)."""
  config = config_lib.read_config(model_dir)
  from tf_finetune import tasks  # Local: tasks import this module's users.
  task = tasks.get_task(config.task)
  if task.owns_model:
    return task.load_trained(model_dir, config)
  label_vocab = labels.read_label_vocab(model_dir)
  weights_dir = os.path.join(model_dir, FINAL_WEIGHTS_DIR)
  io_utils.recover_staged_directory(weights_dir)
  if not os.path.isfile(callbacks.weights_path(weights_dir) + ".index"):
    raise ValueError(f"--model_dir={model_dir!r} has no trained weights in "
                     f"{FINAL_WEIGHTS_DIR}; did training finish?")
  tokenizer = backbone_lib.load_tokenizer(os.path.join(model_dir,
                                                       TOKENIZER_DIR))
  encoder = TextEncoder.from_hf_tokenizer(tokenizer,
                                          config.data.max_seq_length)
  backbone = backbone_lib.backbone_from_config(os.path.join(model_dir,
                                                            BACKBONE_DIR))
  model = build_classifier(backbone, task.head_size(label_vocab), config.model,
                           config.train.seed, per_token=task.per_token,
                           loss_fn=task.loss_fn(config.train))
  restore_weights(model, weights_dir)
  return TrainedModel(config, label_vocab, tokenizer, encoder, model,
                      read_task_state(model_dir))


def restore_weights(model: tf_keras.Model, weights_dir: str) -> None:
  """Loads weights saved by `callbacks.save_weights_atomically`.

  Every variable of `model` must be found; the optimizer's slots, saved with
  training checkpoints, may be left unused.
  """
  status = model.load_weights(callbacks.weights_path(weights_dir))
  status.assert_existing_objects_matched().expect_partial()
