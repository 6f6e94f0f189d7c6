"""Typed, frozen run configuration.

Configuration flows one way: flag defaults, then `--flagfile`, then explicit
flags are turned into these dataclasses by the binaries; the library only ever
sees the dataclasses. Each setting is written once, as a field made by
`setting`: the field's default, help text and allowed values are also those of
the flag of the same name, which flag_definitions.py generates from it. Every
field is validated in `__post_init__`, with errors that name the flag a user
would change. A run writes its resolved config to `<model_dir>/config.json` so
that evaluation, prediction and export rebuild exactly what was trained.

Modules: `fields` (`setting` and the checks), `groups` (data, model, task),
`training` (how a run trains), `pretraining` (the pretrain binary's run:
the groups above plus its own settings); this module holds the run's config and its
config.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from tf_finetune import io_utils, tasks
from tf_finetune.config.fields import (
    CHANGES_WEIGHTS,
    CHOICES,
    HELP,
    Choices,
    check_choices,
    choices_of,
    require,
    setting,
)
from tf_finetune.config.groups import (
    POOLINGS,
    DataConfig,
    ModelConfig,
    TaskConfig,
    task_config,
)
from tf_finetune.config.pretraining import (
    MASKINGS,
    PRETRAIN_DATA_FLAGS,
    PRETRAIN_MODEL_FLAGS,
    PRETRAIN_TRAIN_FLAGS,
    PretrainConfig,
)
from tf_finetune.config.training import (
    DISTRIBUTIONS,
    PRECISIONS,
    RECIPE_SETTINGS,
    RECIPES,
    SCHEDULES,
    UNFREEZE_SCHEDULES,
    TrainConfig,
    early_stopping_metrics,
)

CONFIG_FILENAME = "config.json"
# The tasks whose data can be streamed (--streaming).
STREAMING_TASKS = ("classification",)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs: where it writes, and the groups."""

  model_dir: str = setting(
      dataclasses.MISSING,
      "Where the run writes its checkpoints, TensorBoard "
      "logs, results, config and SavedModels.",
      changes_weights=False,
  )
  data: DataConfig
  model: ModelConfig
  train: TrainConfig = TrainConfig()
  export_dir: Optional[str] = setting(
      None,
      "Base directory of exported SavedModels (default: "
      "<model_dir>/export).",
      changes_weights=False,
  )
  task: TaskConfig = dataclasses.field(default_factory=lambda: task_config())
  overwrite_model_dir: bool = setting(
      False,
      "Start afresh in --model_dir: drop the backup of an interrupted run "
      "and the checkpoints, history and record of a finished one (earlier "
      "exports stay). Without it, a rerun resumes or reuses the run there, "
      "and refuses if its settings or data changed.",
      changes_weights=False,
  )

  def __post_init__(self):
    require(bool(self.model_dir), "--model_dir is required.")
    require(
        bool(self.data.train_file or self.data.tfds_name),
        "No training data: set --train_file (CSV, TSV or JSONL) or "
        "--tfds_name.",
    )
    self.task.check_run(self)
    if self.model.pooling is None and self.train.recipe == "none":
      # Frozen: filled in place, as `TrainConfig` fills its unset settings;
      # a recipe fills it once the training examples are read.
      object.__setattr__(
          self, "model", dataclasses.replace(self.model, pooling="auto")
      )
    require(
        not self.data.streaming or self.task.task in STREAMING_TASKS,
        f"--streaming reads data for --task={', '.join(STREAMING_TASKS)} "
        f"only; --task={self.task.task} reads its files in memory (drop "
        "--streaming).",
    )
    require(
        not self.data.streaming
        or getattr(self.task, "long_document", "truncate") != "chunks",
        "--long_document=chunks reads its files in memory; drop --streaming "
        "or use --long_document=truncate.",
    )
    monitors = tasks.monitors(self.task.task)
    metric = self.train.early_stopping_metric
    if metric == "auto":
      # Frozen: the resolved metric is written in place once, here, so the
      # saved config.json names the metric that was actually watched.
      object.__setattr__(
          self,
          "train",
          dataclasses.replace(self.train, early_stopping_metric=monitors[0]),
      )
    else:
      require(
          metric in monitors,
          f"--early_stopping_metric={metric!r} is not reported by "
          f"--task={self.task.task}; use one of {', '.join(monitors)}.",
      )

  @property
  def resolved_export_dir(self) -> str:
    return self.export_dir or os.path.join(self.model_dir, "export")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> RunConfig:
    return cls(
        model_dir=values["model_dir"],
        export_dir=values.get("export_dir"),
        data=_from_dict(DataConfig, values.get("data", {})),
        model=_from_dict(ModelConfig, values.get("model", {})),
        train=_from_dict(TrainConfig, values.get("train", {})),
        task=_task_from_dict(values.get("task", {})),
    )


def _from_dict(cls, values: dict[str, Any]):
  known = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(
        f"Unknown {cls.__name__} fields in {CONFIG_FILENAME}: "
        f"{', '.join(unknown)}."
    )
  return cls(**values)


def _task_from_dict(values: dict[str, Any]) -> TaskConfig:
  """The task settings saved in config.json.

  Runs saved before each task had its own settings class kept every task's
  settings in one group; the other tasks' settings are dropped.
  """
  name = values.get("task", TaskConfig.task)
  settings_class = tasks.settings_class(name)
  own = {field.name for field in dataclasses.fields(settings_class)}
  others = {
      field.name
      for other in tasks.names()
      for field in dataclasses.fields(tasks.settings_class(other))
  }
  return _from_dict(
      settings_class,
      {
          key: value
          for key, value in values.items()
          if key in own or key not in others
      },
  )


def write_config(config: RunConfig, directory: str) -> str:
  """Writes `config` as JSON into `directory` atomically; returns the path."""
  path = os.path.join(directory, CONFIG_FILENAME)
  io_utils.write_text_atomically(path, config.to_json() + "\n")
  return path


def read_config(model_dir: str) -> RunConfig:
  """Reads the config a training run wrote into `model_dir`."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not os.path.isfile(path):
    raise ValueError(
        f"--model_dir={model_dir!r} has no {CONFIG_FILENAME}; "
        "is it the directory of a finished training run?"
    )
  with open(path, encoding="utf-8") as f:
    return RunConfig.from_dict(json.load(f))
