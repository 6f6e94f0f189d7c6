import dataclasses
import typing
from typing import Optional

import pytest
from absl import flags

from tf_finetune import config as config_lib
from tf_finetune import flag_definitions, tasks
from tf_finetune.tasks import settings as task_settings

GROUPS = (
    config_lib.DataConfig,
    config_lib.ModelConfig,
    config_lib.TrainConfig,
    config_lib.TaskConfig,
    # Settings several tasks share, declared once.
    task_settings.LongDocumentSettings,
) + tuple(tasks.settings_class(name) for name in tasks.names())


def _train_flags() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  flag_definitions.define_train_flags(flag_values)
  return flag_values


def _settings(config_cls) -> list[dataclasses.Field]:
  """The fields `config_cls` declares that are no nested config (a task's
  settings: without the --task they all inherit, nor the settings it shares
  with other tasks through a base class)."""
  types = typing.get_type_hints(config_cls)
  inherited = {
      field.name
      for base in config_cls.__bases__
      if dataclasses.is_dataclass(base)
      for field in dataclasses.fields(base)
  }
  return [
      field
      for field in dataclasses.fields(config_cls)
      if not dataclasses.is_dataclass(types[field.name])
      and field.name not in inherited
  ]


def test_every_setting_has_a_flag_with_its_default_and_help():
  flag_values = _train_flags()
  defined = set()
  for config_cls in GROUPS + (config_lib.RunConfig,):
    for field in _settings(config_cls):
      flag = flag_values[field.name]
      defined.add(field.name)
      default = None if field.default is dataclasses.MISSING else field.default
      assert flag.default == default, field.name
      help_text = field.metadata[config_lib.HELP]
      assert help_text.strip(), field.name
      assert flag.help.endswith(help_text), field.name
      choices = config_lib.choices_of(field)
      if choices:
        assert flag.flag_type() == "string enum", field.name
        assert flag.parser.enum_values == list(choices), field.name
  assert set(flag_values) == defined


def test_setting_names_are_unique_across_groups():
  names = [
      field.name
      for config_cls in GROUPS + (config_lib.RunConfig,)
      for field in _settings(config_cls)
  ]
  assert len(names) == len(set(names))


def _toy_config(size_help: str):

  @dataclasses.dataclass(frozen=True)
  class Toy:
    size: int = config_lib.setting(3, size_help)
    rate: Optional[float] = config_lib.setting(None, "A rate.")
    name: str = config_lib.setting("a", "A name.")
    verbose: bool = config_lib.setting(False, "Talk more.")
    mode: str = config_lib.setting("fast", "A mode.", choices=("fast", "slow"))

  return Toy


@pytest.mark.parametrize("size_help", ["Items per box.", "Boxes per crate."])
def test_flag_help_and_type_come_from_the_field(size_help):
  flag_values = flags.FlagValues()
  flag_definitions.define_config_flags(
      _toy_config(size_help), flag_values=flag_values
  )
  assert flag_values["size"].help == size_help
  assert {name: flag_values[name].flag_type() for name in flag_values} == {
      "size": "int",
      "rate": "float",
      "name": "string",
      "verbose": "bool",
      "mode": "string enum",
  }
  assert flag_values["rate"].default is None
  assert flag_values["mode"].help == "<fast|slow>: A mode."


def test_only_the_named_fields_get_flags():
  flag_values = flags.FlagValues()
  flag_definitions.define_config_flags(
      _toy_config("Items."), ["size", "mode"], flag_values=flag_values
  )
  assert sorted(flag_values) == ["mode", "size"]


def test_a_field_without_help_gets_no_flag():

  @dataclasses.dataclass(frozen=True)
  class Bare:
    size: int = 3

  with pytest.raises(TypeError, match="Bare.size has no help text"):
    flag_definitions.define_config_flags(Bare, flag_values=flags.FlagValues())


def test_flags_for_a_trained_run_default_to_its_values():
  flag_values = flags.FlagValues()
  flag_definitions.define_config_flags(
      task_settings.TranslationSettings,
      ["num_beams"],
      flag_values=flag_values,
      for_trained_run=True,
  )
  flag = flag_values["num_beams"]
  assert flag.default is None
  assert flag.help.startswith("--task=translation: beam width")
  assert flag.help.endswith("Unset: the value the run was trained with.")


def test_defining_again_keeps_the_flags():
  flag_values = _train_flags()
  flag_definitions.define_train_flags(flag_values)
  flag_values(["train", "--epochs=5"])
  flag_definitions.define_train_flags(flag_values)
  assert flag_values.epochs == 5


def test_parsed_flags_become_the_run_config(tmp_path):
  flag_values = _train_flags()
  flag_values(
      [
          "train",
          "--model=bert-base-uncased",
          "--train_file=train.csv",
          f"--model_dir={tmp_path}",
          "--tfds_validation_split=",
          "--nobucketing",
          "--max_seq_length=64",
          "--pooling=mean",
          "--hidden_dropout=0.2",
          "--learning_rate=3e-5",
          "--schedule=cosine",
          "--warmup_steps=10",
          "--task=regression",
          "--regression_loss=huber",
          "--export_dir=/models/x",
      ]
  )
  config = flag_definitions.run_config_from_flags(flag_values)
  assert config == config_lib.RunConfig(
      model_dir=str(tmp_path),
      export_dir="/models/x",
      data=config_lib.DataConfig(
          train_file="train.csv",
          tfds_validation_split=None,
          bucketing=False,
          max_seq_length=64,
      ),
      model=config_lib.ModelConfig(
          model="bert-base-uncased", pooling="mean", hidden_dropout=0.2
      ),
      train=config_lib.TrainConfig(
          learning_rate=3e-5, schedule="cosine", warmup_steps=10
      ),
      task=config_lib.task_config(task="regression", regression_loss="huber"),
  )
  assert config.train.early_stopping_metric == "val_pearson"


def test_run_config_needs_model_dir():
  flag_values = _train_flags()
  flag_values(["train", "--model=bert-base-uncased", "--train_file=a.csv"])
  with pytest.raises(ValueError, match="--model_dir is required"):
    flag_definitions.run_config_from_flags(flag_values)


def test_invalid_flag_value_names_the_flag(tmp_path):
  flag_values = _train_flags()
  flag_values(
      [
          "train",
          "--model=bert-base-uncased",
          "--train_file=a.csv",
          f"--model_dir={tmp_path}",
          "--task=token_classification",
          "--tagging_scheme=BIO",
      ]
  )
  with pytest.raises(ValueError, match="--tagging_scheme='BIO' is not"):
    flag_definitions.run_config_from_flags(flag_values)


def test_a_setting_of_another_task_is_refused(tmp_path):
  """Each task takes only its own settings: a flag meant for another task
  is a mistake worth one line, not a silently ignored value."""
  flag_values = _train_flags()
  flag_values(
      [
          "train",
          "--model=bert-base-uncased",
          "--train_file=a.csv",
          f"--model_dir={tmp_path}",
          "--doc_stride=64",
      ]
  )
  with pytest.raises(
      ValueError,
      match="--doc_stride is a setting of --task=question_answering, not of "
      "--task=classification",
  ):
    flag_definitions.run_config_from_flags(flag_values)
  flag_values["task"].value = "question_answering"
  config = flag_definitions.run_config_from_flags(flag_values)
  assert config.task.doc_stride == 64
  assert type(config.task).__name__ == "QuestionAnsweringSettings"


def test_pretrain_flags_are_its_settings_and_the_shared_ones(tmp_path):
  flag_values = flags.FlagValues()
  flag_definitions.define_pretrain_flags(flag_values)
  shared = (
      config_lib.PRETRAIN_DATA_FLAGS
      + config_lib.PRETRAIN_MODEL_FLAGS
      + config_lib.PRETRAIN_TRAIN_FLAGS
  )
  own = [field.name for field in _settings(config_lib.PretrainConfig)]
  assert sorted(flag_values) == sorted(own + list(shared))
  # Fine-tuning's head, task and early stopping have no pretraining flag.
  assert not {"pooling", "task", "early_stopping_patience"} & set(flag_values)
  flag_values(
      [
          "pretrain",
          "--model=bert-base-uncased",
          "--text_files=a.txt,b/*.txt",
          f"--model_dir={tmp_path}",
          "--masking=whole_word",
          "--mask_probability=0.2",
          "--max_steps=7",
          "--max_seq_length=64",
          "--hidden_dropout=0.2",
          "--learning_rate=3e-5",
      ]
  )
  config = flag_definitions.pretrain_config_from_flags(flag_values)
  assert config == config_lib.PretrainConfig(
      model_dir=str(tmp_path),
      text_files="a.txt,b/*.txt",
      masking="whole_word",
      mask_probability=0.2,
      max_steps=7,
      data=config_lib.DataConfig(max_seq_length=64),
      model=config_lib.ModelConfig(
          model="bert-base-uncased", hidden_dropout=0.2
      ),
      train=config_lib.TrainConfig(learning_rate=3e-5),
  )
  # Pretraining keeps its last weights and exports nothing.
  assert not config.train.restore_best_weights
  assert config.train.early_stopping_patience == 0
  assert not config.train.export
