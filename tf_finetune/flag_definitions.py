"""Command-line flags of the binaries, and their translation into configs.

Only the binaries (train.py, evaluate.py, predict.py, export.py, lr_find.py,
tune.py, pretrain.py) import this module; the library takes the typed configs built here.
The flags of the run configuration are generated from the fields of the config
dataclasses (made by `config.setting`): a flag's name, type, default, allowed
values and help text all come from its field, so the two cannot drift apart.
Flags that set no config field are written in their binary with `define_flag`.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, Callable, Iterable, Optional

from absl import app, flags, logging

from tf_finetune import config as config_lib
from tf_finetune import console, io_utils, tasks

FLAGS = flags.FLAGS

_DEFINERS = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
}


def define_flag(
    kind: Callable,
    name: str,
    default: Any,
    help_text: str,
    *,
    flag_values: Optional[flags.FlagValues] = None,
    **kwargs,
) -> None:
  """Defines a flag unless it exists (binaries' main() may run repeatedly).

  Args:
    kind: An absl DEFINE function, e.g. `flags.DEFINE_string`.
    name: The flag's name.
    default: Its default.
    help_text: Its help.
    flag_values: Where to define it; the global FLAGS when None.
    **kwargs: Further arguments of `kind` (enum_values).
  """
  flag_values = FLAGS if flag_values is None else flag_values
  if name not in flag_values:
    kind(
        name=name,
        default=default,
        help=help_text,
        flag_values=flag_values,
        **kwargs,
    )


def _flag_types(config_cls: type) -> dict[str, tuple[type, bool]]:
  """Each field's type without Optional, and whether it was Optional."""
  types_by_name = {}
  for name, annotation in typing.get_type_hints(config_cls).items():
    args = typing.get_args(annotation)
    optional = (
        typing.get_origin(annotation) in (typing.Union, types.UnionType)
        and type(None) in args
    )
    if optional:
      (annotation,) = (arg for arg in args if arg is not type(None))
    types_by_name[name] = annotation, optional
  return types_by_name


def define_config_flags(
    config_cls: type,
    names: Optional[Iterable[str]] = None,
    *,
    flag_values: Optional[flags.FlagValues] = None,
    for_trained_run: bool = False,
) -> None:
  """Defines one flag per setting of a config dataclass.

  A field whose type is itself a config dataclass (RunConfig.data) has no
  flag; its own fields get theirs. Each flag is defined unless it exists.

  Args:
    config_cls: A dataclass whose fields are made by `config.setting`.
    names: Only the flags of these fields of `config_cls`; all when None.
    flag_values: Where to define the flags; the global FLAGS when None.
    for_trained_run: For binaries that read a finished run: the flags
      default to None, which stands for the value the run was trained with.

  Raises:
    TypeError: A field's type has no flag type, or it has no help text.
    KeyError: A name is not a field of `config_cls`.
  """
  fields = {field.name: field for field in dataclasses.fields(config_cls)}
  flag_types = _flag_types(config_cls)
  for name in fields if names is None else names:
    field = fields[name]
    field_type, _ = flag_types[name]
    if dataclasses.is_dataclass(field_type):
      define_config_flags(
          field_type, flag_values=flag_values, for_trained_run=for_trained_run
      )
      continue
    help_text = field.metadata.get(config_lib.HELP)
    if not help_text:
      raise TypeError(
          f"{config_cls.__name__}.{name} has no help text; make "
          "it with config.setting."
      )
    default = field.default
    if default is dataclasses.MISSING or for_trained_run:
      default = None
    if for_trained_run:
      help_text += " Unset: the value the run was trained with."
    choices = config_lib.choices_of(field)
    if choices is not None:
      define_flag(
          flags.DEFINE_enum,
          name,
          default,
          help_text,
          enum_values=list(choices),
          flag_values=flag_values,
      )
    elif field_type in _DEFINERS:
      define_flag(
          _DEFINERS[field_type],
          name,
          default,
          help_text,
          flag_values=flag_values,
      )
    else:
      raise TypeError(
          f"{config_cls.__name__}.{name}: no flag type for "
          f"{field_type!r}; use str, int, float or bool."
      )


def define_task_flags(
    flag_values: Optional[flags.FlagValues] = None,
    *,
    for_trained_run: bool = False,
) -> None:
  """Defines --task and the settings of every registered task.

  Settings of the same name in two tasks share one flag (and must agree on
  its type and default).
  """
  for name in tasks.names():
    define_config_flags(
        tasks.settings_class(name),
        flag_values=flag_values,
        for_trained_run=for_trained_run,
    )


def define_train_flags(flag_values: Optional[flags.FlagValues] = None) -> None:
  """Defines the flags of every setting of a training run (RunConfig)."""
  define_config_flags(config_lib.RunConfig, flag_values=flag_values)
  define_task_flags(flag_values)


def task_config_from_flags(
    flag_values: Optional[flags.FlagValues] = None,
) -> config_lib.TaskConfig:
  """The settings of --task from parsed flags.

  Raises:
    ValueError: a setting of another task was given on the command line.
  """
  flag_values = FLAGS if flag_values is None else flag_values
  name = flag_values["task"].value
  settings_class = tasks.settings_class(name)
  own = {field.name for field in dataclasses.fields(settings_class)}
  for other in tasks.names():
    for field in dataclasses.fields(tasks.settings_class(other)):
      if field.name not in own and flag_values[field.name].present:
        raise ValueError(
            f"--{field.name} is a setting of --task={other}, not of "
            f"--task={name}."
        )
  return config_from_flags(settings_class, flag_values)


def config_from_flags(
    config_cls: type, flag_values: Optional[flags.FlagValues] = None
) -> Any:
  """Builds `config_cls` (and the configs nested in it) from parsed flags.

  An empty value of an optional string setting whose default is not None
  (--tfds_validation_split='') stands for None, the only way to unset it.

  Args:
    config_cls: A dataclass whose flags `define_config_flags` defined.
    flag_values: The parsed flags; the global FLAGS when None.

  Returns:
    The validated config.
  """
  flag_values = FLAGS if flag_values is None else flag_values
  flag_types = _flag_types(config_cls)
  values = {}
  for field in dataclasses.fields(config_cls):
    field_type, optional = flag_types[field.name]
    if field_type is config_lib.TaskConfig:
      values[field.name] = task_config_from_flags(flag_values)
      continue
    if dataclasses.is_dataclass(field_type):
      values[field.name] = config_from_flags(field_type, flag_values)
      continue
    values[field.name] = _setting_value(field, optional, flag_values)
  return config_cls(**values)


def _setting_value(
    field: dataclasses.Field, optional: bool, flag_values: flags.FlagValues
) -> Any:
  """The value of the flag of `field`; '' unsets an optional string."""
  value = flag_values[field.name].value
  if (
      value == ""
      and optional
      and field.default not in (None, dataclasses.MISSING)
  ):
    value = None
  return value


def settings_from_flags(
    config_cls: type,
    names: Iterable[str],
    flag_values: Optional[flags.FlagValues] = None,
) -> dict[str, Any]:
  """The values of the flags of some fields of `config_cls`, by field name.

  For binaries that define only some of a config's flags
  (`define_config_flags(config_cls, names)`); the other fields keep their
  defaults.
  """
  flag_values = FLAGS if flag_values is None else flag_values
  flag_types = _flag_types(config_cls)
  fields = {field.name: field for field in dataclasses.fields(config_cls)}
  return {
      name: _setting_value(fields[name], flag_types[name][1], flag_values)
      for name in names
  }


def run_config_from_flags(
    flag_values: Optional[flags.FlagValues] = None,
) -> config_lib.RunConfig:
  """Builds the validated run config from parsed flags (FLAGS when None)."""
  flag_values = FLAGS if flag_values is None else flag_values
  if not flag_values.model_dir:
    raise ValueError(
        "--model_dir is required: the directory the run writes "
        "its checkpoints, logs and exports to."
    )
  return config_from_flags(config_lib.RunConfig, flag_values)


def app_run(main: Callable[[list], object]) -> None:
  """absl's `app.run(main)`, with TensorFlow's start-up notices filtered
  out of stderr (see `console`) before `main` imports TensorFlow."""
  console.filter_tensorflow_noise()
  app.run(main)


def run_main(program: str, argv, main: Callable[[], object]) -> None:
  """Runs a binary's body; user errors and a full disk become one line and
  exit code 2.

  Args:
    program: The binary's name, for messages.
    argv: What absl left of the command line (the program name only, unless
      something was not a flag).
    main: The body, reading FLAGS.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  try:
    main()
  except (ValueError, io_utils.DiskFullError) as e:
    logging.error("%s", e)
    print(f"{program}: error: {e}", file=sys.stderr)
    sys.exit(2)


def _pretrain_groups() -> dict[str, tuple[type, tuple[str, ...]]]:
  """PretrainConfig's groups: field -> (class, the settings with flags)."""
  return {
      "data": (config_lib.DataConfig, config_lib.PRETRAIN_DATA_FLAGS),
      "model": (config_lib.ModelConfig, config_lib.PRETRAIN_MODEL_FLAGS),
      "train": (config_lib.TrainConfig, config_lib.PRETRAIN_TRAIN_FLAGS),
  }


def _pretrain_own_settings() -> list[str]:
  """The settings of PretrainConfig itself (not of its groups)."""
  return [
      field.name
      for field in dataclasses.fields(config_lib.PretrainConfig)
      if field.name not in _pretrain_groups()
  ]


def define_pretrain_flags(
    flag_values: Optional[flags.FlagValues] = None,
) -> None:
  """Defines the flags of the pretrain binary (`config.PretrainConfig`)."""
  define_config_flags(
      config_lib.PretrainConfig,
      _pretrain_own_settings(),
      flag_values=flag_values,
  )
  for group_cls, names in _pretrain_groups().values():
    define_config_flags(group_cls, names, flag_values=flag_values)


def pretrain_config_from_flags(
    flag_values: Optional[flags.FlagValues] = None,
) -> config_lib.PretrainConfig:
  """Builds the validated pretraining config from parsed flags."""
  flag_values = FLAGS if flag_values is None else flag_values
  if not flag_values.model_dir:
    raise ValueError(
        "--model_dir is required: the directory pretraining writes the "
        "backbone, logs and backups to."
    )
  groups = {
      name: group_cls(**settings_from_flags(group_cls, names, flag_values))
      for name, (group_cls, names) in _pretrain_groups().items()
  }
  return config_lib.PretrainConfig(
      **groups,
      **settings_from_flags(
          config_lib.PretrainConfig, _pretrain_own_settings(), flag_values
      ),
  )
