"""The tasks a model can be fine-tuned for, by `--task` name.

Each task implements `base.Task`: how its examples are read, its model, loss
and metrics, how outputs are post-processed and what its export serves. The
registry knows each task's class (imported on first use: TensorFlow loads
with it) and the validation metrics its model reports, so that configs and
flags can be checked without loading TensorFlow. Adding a task is writing
its class and one `register` call, in the package or in user code.

This module imports nothing else from tf_finetune: `config` asks it which
tasks exist.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Union


@dataclasses.dataclass(frozen=True)
class Registration:
  """A registered task.

  Attributes:
    task_class: The class, or "module:Class" to import on first use.
    monitors: The validation metrics its model reports during training,
      the default --early_stopping_metric first.
  """

  task_class: type | str
  monitors: tuple[str, ...]


_REGISTRY: dict[str, Registration] = {}


def register(
    name: str, task_class: type | str, *, monitors: tuple[str, ...]
) -> None:
  """Makes `--task=name` run `task_class` (a `base.Task` subclass, or
  "module:Class"); re-registering a name replaces it."""
  if not monitors:
    raise ValueError(f"Task {name!r} needs at least one validation metric.")
  _REGISTRY[name] = Registration(task_class, tuple(monitors))


def unregister(name: str) -> None:
  """Forgets `--task=name` (a task registered by user code)."""
  _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
  """The registered --task names, built-in ones first."""
  return tuple(_REGISTRY)


def monitors(name: str) -> tuple[str, ...]:
  """The validation metrics of --task=name, its default first."""
  return _registration(name).monitors


def all_monitors() -> tuple[str, ...]:
  """Every registered task's metrics (the --early_stopping_metric values)."""
  return tuple(
      dict.fromkeys(
          metric for entry in _REGISTRY.values() for metric in entry.monitors
      )
  )


def _registration(name: str) -> Registration:
  if name not in _REGISTRY:
    raise ValueError(
        f"--task={name!r} is not one of " f"{', '.join(_REGISTRY)}."
    )
  return _REGISTRY[name]


def task_class(name: str) -> type:
  """The class registered as `--task=name`."""
  found = _registration(name).task_class
  if isinstance(found, str):
    module_name, class_name = found.split(":")
    found = getattr(importlib.import_module(module_name), class_name)
  return found


def get_task(config: Any):
  """A new task object for `config.task` (a `config.TaskConfig`), no run
  bound yet."""
  return task_class(config.task)(config)


register(
    "classification",
    "tf_finetune.tasks.classification:Classification",
    monitors=("val_accuracy", "val_loss", "val_macro_f1"),
)
register(
    "regression",
    "tf_finetune.tasks.regression:Regression",
    monitors=("val_pearson", "val_loss"),
)
register(
    "multi_label",
    "tf_finetune.tasks.multi_label:MultiLabel",
    monitors=("val_micro_f1", "val_loss", "val_macro_f1"),
)
register(
    "token_classification",
    "tf_finetune.tasks.token_classification:TokenClassification",
    monitors=("val_loss", "val_accuracy"),
)
register(
    "question_answering",
    "tf_finetune.tasks.question_answering:QuestionAnswering",
    monitors=("val_loss", "val_position_accuracy"),
)
register(
    "translation",
    "tf_finetune.tasks.translation:Translation",
    monitors=("val_loss", "val_token_accuracy"),
)
