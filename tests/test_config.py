import dataclasses
import json

import pytest

from tf_finetune import config as config_lib, tasks


def _config(tmp_path, **train):
  return config_lib.RunConfig(
      model_dir=str(tmp_path),
      data=config_lib.DataConfig(train_file="train.csv"),
      model=config_lib.ModelConfig(model="bert-base-uncased"),
      train=config_lib.TrainConfig(**train),
  )


def test_config_round_trips_through_model_dir(tmp_path):
  config = _config(tmp_path, learning_rate=3e-5, schedule="cosine")
  path = config_lib.write_config(config, str(tmp_path))
  assert json.load(open(path))["train"]["schedule"] == "cosine"
  assert config_lib.read_config(str(tmp_path)) == config


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("learning_rate", 0.0, "--learning_rate=0.0"),
        ("schedule", "exponential", "--schedule='exponential'"),
        ("epochs", 0, "--epochs=0"),
        ("warmup_ratio", 1.5, "--warmup_ratio=1.5"),
        ("distribution", "tpu_pod", "--distribution='tpu_pod'"),
    ],
)
def test_invalid_training_values_name_their_flag(tmp_path, field, value, flag):
  with pytest.raises(ValueError, match=flag.replace("(", r"\(")):
    _config(tmp_path, **{field: value})


def test_two_data_sources_conflict():
  with pytest.raises(ValueError, match="--train_file and --tfds_name"):
    config_lib.DataConfig(train_file="a.csv", tfds_name="glue/sst2")


def test_pair_column_must_differ_from_text_column():
  with pytest.raises(ValueError, match="--text_pair_column='text'"):
    config_lib.DataConfig(train_file="a.csv", text_pair_column="text")


def test_read_config_of_a_directory_without_run(tmp_path):
  with pytest.raises(ValueError, match="has no config.json"):
    config_lib.read_config(str(tmp_path))


def test_unknown_fields_in_saved_config_are_reported(tmp_path):
  config = _config(tmp_path)
  values = json.loads(config.to_json())
  values["train"]["learning_rat"] = 1e-5
  with pytest.raises(ValueError, match="learning_rat"):
    config_lib.RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "config_cls, values, message",
    [
        (
            config_lib.ModelConfig,
            {"model": "m", "pooling": "max"},
            "--pooling='max' is not one of auto, pooler, cls, mean.",
        ),
        (
            config_lib.task_config,
            {"task": "regression", "regression_loss": "l1"},
            "--regression_loss='l1' is not one of mse, huber.",
        ),
        (
            config_lib.task_config,
            {"task": "summarization"},
            "--task='summarization' is not one of classification,",
        ),
    ],
)
def test_values_outside_the_choices_name_their_flag(
    config_cls, values, message
):
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    config_cls(**values)


def test_every_setting_has_help_text():
  for config_cls in (
      config_lib.DataConfig,
      config_lib.ModelConfig,
      config_lib.TrainConfig,
      *(tasks.settings_class(name) for name in tasks.names()),
  ):
    for field in dataclasses.fields(config_cls):
      assert field.metadata[config_lib.HELP].strip(), field.name


def test_other_tasks_settings_are_dropped_from_a_saved_config():
  """config.json files that held every task's settings in one group still
  load, keeping only their task's."""
  saved = json.loads(
      config_lib.RunConfig(
          model_dir="m",
          data=config_lib.DataConfig(train_file="t.csv"),
          model=config_lib.ModelConfig(model="bert"),
          task=config_lib.task_config("regression", huber_delta=2.0),
      ).to_json()
  )
  saved["task"].update(doc_stride=128, num_beams=1, threshold=0.5)
  loaded = config_lib.RunConfig.from_dict(saved)
  # Saved without a recipe: the unset --truncation was saved as head.
  assert loaded.task == config_lib.task_config(
      "regression", huber_delta=2.0, truncation="head"
  )
  saved["task"]["not_a_setting"] = 1
  with pytest.raises(ValueError, match="Unknown RegressionSettings fields"):
    config_lib.RunConfig.from_dict(saved)
