"""--recipe: settings chosen from the size of the training data.

`--recipe=recommended` fills the settings the user left unset (None in
`TrainConfig`, see `config.RECIPE_SETTINGS`) by one rule, once the training
examples are read; what the user set on the command line or in a flag file
is kept. The README's "Few training examples" section gives the reasons and
sources. The resolved values are written to config.json, so evaluation,
export and a resumed run see numbers, not the recipe.
"""

from __future__ import annotations

import dataclasses
import math

from absl import logging

from tf_finetune import config as config_lib
from tf_finetune.models import backbone as backbone_lib

# Below this many training examples the recipe takes the few-sample levers.
FEW_EXAMPLES = 1000

# Few-sample levers: at least this many updates, and this EMA decay (an
# average over about 1 / (1 - 0.99) = 100 updates, a tenth of the run).
FEW_SAMPLE_MIN_STEPS = 1000
FEW_SAMPLE_EMA_DECAY = 0.99

# One re-initialized layer per this many encoder layers (2 of BERT-base's
# 12, 4 of BERT-large's 24), and at least one.
LAYERS_PER_REINIT_LAYER = 6


def reinit_layers_for(model: str) -> int:
  """The top layers the recipe re-initializes in `--model`'s encoder.

  0 for an encoder without a layer per depth (ALBERT shares one layer).
  """
  model_config = backbone_lib.load_model_config(model)
  if model_config.model_type in backbone_lib.SHARED_LAYER_MODEL_TYPES:
    return 0
  layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
  return max(1, layers // LAYERS_PER_REINIT_LAYER) if layers else 0


def recommended(
    config: config_lib.RunConfig,
    num_train_examples: int,
    *,
    encoder_head: bool,
) -> dict[str, float | int]:
  """What --recipe=recommended chooses for `num_train_examples`.

  Args:
    config: The run config (its --model is read for the encoder's depth).
    num_train_examples: Training examples, as read.
    encoder_head: Whether the task puts a head on a pretrained encoder
      (only then are layers re-initialized).

  Returns:
    Setting name -> value, for every setting in `config.RECIPE_SETTINGS`.
  """
  chosen = dict(config_lib.RECIPE_SETTINGS)  # Enough data: the defaults.
  if num_train_examples < FEW_EXAMPLES:
    chosen["min_steps"] = FEW_SAMPLE_MIN_STEPS
    chosen["ema_decay"] = FEW_SAMPLE_EMA_DECAY
    if encoder_head and config.model.model:
      chosen["reinit_layers"] = reinit_layers_for(config.model.model)
  # TEXT LENGTH: the recipe's choice of truncation and long-document
  # handling goes here.
  return chosen


def resolve(
    config: config_lib.RunConfig,
    num_train_examples: int,
    *,
    encoder_head: bool,
) -> config_lib.RunConfig:
  """`config` with every unset recipe setting filled; logs the choice.

  Without a recipe the settings are already filled (`TrainConfig`).
  """
  train = config.train
  if train.resolved:
    return config
  chosen = recommended(config, num_train_examples, encoder_head=encoder_head)
  filled = {
      name: value
      for name, value in chosen.items()
      if getattr(train, name) is None
  }
  kept = sorted(set(chosen) - set(filled))
  size = "fewer" if num_train_examples < FEW_EXAMPLES else "not fewer"
  logging.info(
      "--recipe=%s: %d training examples, %s than %d: %s%s.",
      train.recipe,
      num_train_examples,
      size,
      FEW_EXAMPLES,
      " ".join(f"--{name}={value}" for name, value in sorted(filled.items())),
      (
          "; kept as given: "
          + " ".join(f"--{name}={getattr(train, name)}" for name in kept)
          if kept
          else ""
      ),
  )
  return dataclasses.replace(config, train=dataclasses.replace(train, **filled))


def extended_epochs(epochs: int, steps_per_epoch: int, min_steps: int) -> int:
  """The epochs that give at least `min_steps` updates (never fewer than
  `epochs`): --epochs=3, 112 steps per epoch, --min_steps=1000 -> 9."""
  if not min_steps or epochs * steps_per_epoch >= min_steps:
    return epochs
  return math.ceil(min_steps / max(steps_per_epoch, 1))
