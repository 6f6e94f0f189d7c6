"""The tasks a model can be fine-tuned for, by `--task` name.

Each module says how its examples are read, its head, loss and metrics, how
outputs are post-processed and what its export serves (see `base.Task`).
Adding a task is adding a module and a line here.
"""

from __future__ import annotations

import importlib

from tf_finetune.config import TaskConfig

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


def get_task(config: TaskConfig):
  """The task object for `config.task`."""
  if config.task not in _REGISTRY:
    raise ValueError(f"--task={config.task!r} is not one of "
                     f"{', '.join(_REGISTRY)}.")
  module_name, class_name = _REGISTRY[config.task].split(":")
  return getattr(importlib.import_module(module_name), class_name)(config)
