"""--recipe: a step budget, the pooling, and what to keep of long texts
chosen from the lengths of the training texts.

`--recipe=recommended` fills the settings the user left unset (None in
`TrainConfig`, see `config.RECIPE_SETTINGS`, and --pooling) once the
training examples are read, and an unset --truncation of a whole-text task
from the training texts' lengths, before they are encoded
(`recommended_truncation`, called by the task); what the user set on the
command line or in a flag file is kept. The README's "Few training
examples", "Long documents" and "Measured" sections give the reasons,
sources and measurements. The resolved values are written to config.json,
so evaluation, export and a resumed run see values, not the recipe.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from absl import logging

from tf_finetune import config as config_lib
from tf_finetune.text.long_documents import LongDocuments

# The recipe gives every run at least this many updates: more epochs
# where --epochs would give fewer, early stopping still in charge. At batch
# 32 and 2 epochs that lengthens runs on fewer than 16,000 examples.
MIN_STEPS = 1000

# Text length: when more than this share of the training texts are longer
# than --max_seq_length, the recipe keeps both their ends
# (--truncation=head_tail), measured on at most LENGTH_SAMPLE training
# texts...
LONG_TEXTS = 0.5
LENGTH_SAMPLE = 2000
# ...provided the head keeps at least this many tokens: Sun et al.'s head
# (128 of 510 tokens at --head_share=0.25, so --max_seq_length=512).
HEAD_TAIL_MIN_HEAD = 128


# The text's vector: the mean of its token states, which is what
# sentence-embedding checkpoints were trained to pool, where the pooler of
# a BERT checkpoint was trained on next-sentence prediction, if at all
# (README, "Measured").
POOLING = "mean"

# The group of `RunConfig` each setting the recipe chooses belongs to.
_GROUPS = dict.fromkeys(config_lib.RECIPE_SETTINGS, "train") | {
    "pooling": "model"
}


def recommended() -> dict[str, float | int | str]:
  """What --recipe=recommended chooses at every size of training data
  measured: the step budget (README, "Few training examples") and the
  pooling.

  Returns:
    Setting name -> value, for every setting in `config.RECIPE_SETTINGS`
    and --pooling.
  """
  return dict(config_lib.RECIPE_SETTINGS, min_steps=MIN_STEPS, pooling=POOLING)


def long_text_share(
    texts: Sequence[str], tokenizer, budget: int
) -> tuple[float, int]:
  """The share of `texts` with more than `budget` tokens (special tokens
  not counted).

  Measured with the model's own tokenizer on at most `LENGTH_SAMPLE`
  evenly spaced texts; returns (share, texts measured).
  """
  if not texts:
    return 0.0, 0
  sample = list(texts[:: max(1, math.ceil(len(texts) / LENGTH_SAMPLE))])
  ids = tokenizer(sample, add_special_tokens=False, verbose=False)["input_ids"]
  long_texts = sum(len(text_ids) > budget for text_ids in ids)
  return long_texts / len(sample), len(sample)


def recommended_truncation(
    texts: Sequence[str], tokenizer, max_seq_length: int, head_share: float
) -> str:
  """What --recipe=recommended keeps of a long training text; logs why.

  head_tail when more than `LONG_TEXTS` of the training texts are longer
  than --max_seq_length and --head_share of the token budget keeps at
  least `HEAD_TAIL_MIN_HEAD` tokens of the head, else head: Sun et al.
  (2019) found the first 128 and the last 382 of 510 tokens better than
  the first 510 on long reviews and news, but with a budget of 126 tokens
  (32 of them the head) head+tail lost to the head on 20 Newsgroups
  (README, "Measured").
  """
  budget = max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
  share, measured = long_text_share(texts, tokenizer, budget)
  head = LongDocuments(truncation="head_tail", head_share=head_share)
  head_tokens = head.head_tokens(budget)
  if share <= LONG_TEXTS:
    truncation, why = "head", f"not more than {100 * LONG_TEXTS:.0f}%"
  elif head_tokens < HEAD_TAIL_MIN_HEAD:
    truncation, why = "head", (
        f"more than {100 * LONG_TEXTS:.0f}%, but --head_share={head_share} "
        f"of {budget} tokens keeps {head_tokens} of the head, fewer than "
        f"{HEAD_TAIL_MIN_HEAD}"
    )
  else:
    truncation, why = "head_tail", (
        f"more than {100 * LONG_TEXTS:.0f}%, and --head_share={head_share} "
        f"of {budget} tokens keeps {head_tokens} of the head"
    )
  logging.info(
      "--recipe=recommended: %.0f%% of %d training texts measured are "
      "longer than --max_seq_length=%d, %s: --truncation=%s.",
      100 * share,
      measured,
      max_seq_length,
      why,
      truncation,
  )
  return truncation


def resolve(
    config: config_lib.RunConfig, num_train_examples: int
) -> config_lib.RunConfig:
  """`config` with every unset recipe setting filled; logs the choice.

  Without a recipe the settings are already filled (`TrainConfig`,
  `RunConfig`).
  """
  if config.train.recipe == "none":
    return config

  def given(name):
    return getattr(getattr(config, _GROUPS[name]), name)

  chosen = recommended()
  filled = {
      name: value for name, value in chosen.items() if given(name) is None
  }
  if not filled:
    return config
  kept = sorted(set(chosen) - set(filled))
  logging.info(
      "--recipe=%s: %d training examples: %s%s.",
      config.train.recipe,
      num_train_examples,
      " ".join(f"--{name}={value}" for name, value in sorted(filled.items())),
      (
          "; kept as given: "
          + " ".join(f"--{name}={given(name)}" for name in kept)
          if kept
          else ""
      ),
  )
  for group in sorted({_GROUPS[name] for name in filled}):
    settings = {
        name: value for name, value in filled.items() if _GROUPS[name] == group
    }
    config = dataclasses.replace(
        config,
        **{group: dataclasses.replace(getattr(config, group), **settings)},
    )
  return config


def extended_epochs(epochs: int, steps_per_epoch: int, min_steps: int) -> int:
  """The epochs that give at least `min_steps` updates (never fewer than
  `epochs`): --epochs=3, 112 steps per epoch, --min_steps=1000 -> 9."""
  if not min_steps or epochs * steps_per_epoch >= min_steps:
    return epochs
  return math.ceil(min_steps / max(steps_per_epoch, 1))
