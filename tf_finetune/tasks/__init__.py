"""The tasks a model can be fine-tuned for, by `--task` name.

Each task implements `base.Task`: how its examples are read, its model, loss
and metrics, how outputs are post-processed and what its export serves.
Adding a task is adding a module and registering it (`register`).
"""

from __future__ import annotations

import importlib

from tf_finetune import config as config_lib

# --task name -> "module:class", imported on use (TensorFlow loads with it).
_REGISTRY = {
    "classification": "tf_finetune.tasks.classification:Classification",
    "regression": "tf_finetune.tasks.regression:Regression",
    "multi_label": "tf_finetune.tasks.multi_label:MultiLabel",
    "token_classification":
        "tf_finetune.tasks.token_classification:TokenClassification",
    "question_answering":
        "tf_finetune.tasks.question_answering:QuestionAnswering",
    "translation": "tf_finetune.tasks.translation:Translation",
}


def register(name: str, task_class: str | type) -> None:
  """Makes `--task=name` run `task_class` ("module:Class", or the class)."""
  _REGISTRY[name] = task_class


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def task_class(name: str) -> type:
  """The class registered as `--task=name`."""
  if name not in _REGISTRY:
    raise ValueError(f"--task={name!r} is not one of "
                     f"{', '.join(_REGISTRY)}.")
  found = _REGISTRY[name]
  if isinstance(found, str):
    module_name, class_name = found.split(":")
    found = getattr(importlib.import_module(module_name), class_name)
  return found


def get_task(config: config_lib.TaskConfig):
  """A new task object for `config.task`, no run bound yet."""
  return task_class(config.task)(config)


def load_trained(model_dir: str, task_config: config_lib.TaskConfig = None):
  """Loads a finished run from `model_dir` (no download), its task bound.

  Args:
    model_dir: The training run's directory.
    task_config: Replaces the run's task settings (evaluation overrides).
  """
  config = config_lib.read_config(model_dir)
  task = get_task(task_config or config.task)
  return task.load_trained(model_dir, config)
