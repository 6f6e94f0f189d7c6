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
    settings_class: The task's settings (a `config.TaskConfig` subclass),
      or "module:Class"; None: `config.TaskConfig` itself (no settings).
  """

  task_class: type | str
  monitors: tuple[str, ...]
  settings_class: type | str | None = None


_REGISTRY: dict[str, Registration] = {}


def register(
    name: str,
    task_class: type | str,
    *,
    monitors: tuple[str, ...],
    settings_class: type | str | None = None,
) -> None:
  """Makes `--task=name` run `task_class` (a `base.Task` subclass, or
  "module:Class"); re-registering a name replaces it.

  Args:
    name: The --task value.
    task_class: The task, or "module:Class" imported on first use.
    monitors: The validation metrics its model reports, the default
      --early_stopping_metric first.
    settings_class: Its settings, a frozen dataclass extending
      `config.TaskConfig` whose fields are made with `config.setting` (they
      become flags), or "module:Class"; None for a task without settings.
  """
  if not monitors:
    raise ValueError(f"Task {name!r} needs at least one validation metric.")
  _REGISTRY[name] = Registration(task_class, tuple(monitors), settings_class)


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


def _resolve(found: type | str) -> type:
  if isinstance(found, str):
    module_name, class_name = found.split(":")
    found = getattr(importlib.import_module(module_name), class_name)
  return found


def task_class(name: str) -> type:
  """The class registered as `--task=name`."""
  return _resolve(_registration(name).task_class)


def settings_class(name: str) -> type:
  """The settings class of `--task=name` (`config.TaskConfig` if none)."""
  found = _registration(name).settings_class
  return _resolve(found or "tf_finetune.config:TaskConfig")


def get_task(config: Any):
  """A new task object for `config.task` (a `config.TaskConfig`), no run
  bound yet."""
  return task_class(config.task)(config)


register(
    "classification",
    "tf_finetune.tasks.classification:Classification",
    monitors=("val_accuracy", "val_loss", "val_macro_f1"),
    settings_class="tf_finetune.tasks.settings:ClassificationSettings",
)
register(
    "regression",
    "tf_finetune.tasks.regression:Regression",
    monitors=("val_pearson", "val_loss"),
    settings_class="tf_finetune.tasks.settings:RegressionSettings",
)
register(
    "multi_label",
    "tf_finetune.tasks.multi_label:MultiLabel",
    monitors=("val_micro_f1", "val_loss", "val_macro_f1"),
    settings_class="tf_finetune.tasks.settings:MultiLabelSettings",
)
register(
    "token_classification",
    "tf_finetune.tasks.token_classification:TokenClassification",
    monitors=("val_loss", "val_accuracy"),
    settings_class="tf_finetune.tasks.settings:TokenClassificationSettings",
)
register(
    "question_answering",
    "tf_finetune.tasks.question_answering:QuestionAnswering",
    monitors=("val_loss", "val_position_accuracy"),
    settings_class="tf_finetune.tasks.settings:QuestionAnsweringSettings",
)
register(
    "translation",
    "tf_finetune.tasks.translation:Translation",
    monitors=("val_loss", "val_token_accuracy"),
    settings_class="tf_finetune.tasks.settings:TranslationSettings",
)
