"""Continued masked-language-model pretraining: its own settings and run.

`PretrainConfig` is the configuration of the pretrain binary. It holds the
data, model and training groups of a fine-tuning run (only the settings that
mean the same thing in pretraining get flags; the others keep their defaults)
and the settings that pretraining alone has: the plain text files, how tokens
are masked, the held-out fraction and the step limit.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from tf_finetune.config.fields import check_choices, require, setting
from tf_finetune.config.groups import DataConfig, ModelConfig
from tf_finetune.config.training import TrainConfig

MASKINGS = ("token", "whole_word")

# The settings of the groups that the pretrain binary takes as flags; they
# mean there what they mean in fine-tuning.
PRETRAIN_DATA_FLAGS = (
    "train_file",
    "validation_file",
    "text_column",
    "max_seq_length",
    "batch_size",
    "bucketing",
    "shuffle_buffer",
)
PRETRAIN_MODEL_FLAGS = (
    "model",
    "allow_pickle_weights",
    "hidden_dropout",
    "attention_dropout",
)
PRETRAIN_TRAIN_FLAGS = (
    "epochs",
    "learning_rate",
    "schedule",
    "warmup_ratio",
    "warmup_steps",
    "polynomial_power",
    "min_lr_ratio",
    "restart_cycles",
    "step_decay_factor",
    "step_decay_every_steps",
    "jit_compile",
    "weight_decay",
    "clip_norm",
    "adam_epsilon",
    "seed",
    "distribution",
    "tpu",
    "save_every_steps",
    "log_every_steps",
    "steps_per_execution",
    "precision",
)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """A run of the pretrain binary.

  The last weights are kept: pretraining has no best validation epoch,
  early stopping or export (the training group's defaults for those are
  replaced in `__post_init__`).
  """

  model_dir: str = setting(
      dataclasses.MISSING,
      "Where pretraining writes the backbone, the masked-LM model, "
      "TensorBoard logs, backups and summary.json.",
  )
  text_files: Optional[str] = setting(
      None,
      "Plain UTF-8 text files, one document or sentence per line "
      "(blank lines skipped): comma-separated paths or glob patterns.",
  )
  validation_fraction: float = setting(
      0.0,
      "Hold out this fraction of the texts (chosen with --seed) for the "
      "validation masked-LM loss and accuracy; 0: none, or --validation_file.",
  )
  mask_probability: float = setting(
      0.15,
      "Fraction of the tokens chosen as prediction targets, fresh each "
      "epoch; of those 80% become the mask token, 10% a random token and 10% "
      "stay unchanged.",
  )
  masking: str = setting(
      "token",
      "token: each token is chosen on its own; whole_word: all WordPiece "
      "pieces of a chosen word are chosen together (WordPiece tokenizers).",
      choices=MASKINGS,
  )
  max_steps: int = setting(
      0, "Stop after this many updates, within --epochs; 0: no limit."
  )
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    check_choices(self)
    require(bool(self.model_dir), "--model_dir is required.")
    require(
        bool(self.model.model),
        "--model is required: a Hugging Face hub name or a local directory "
        "with config.json, weights and tokenizer files.",
    )
    require(
        bool(self.text_files or self.data.train_file),
        "No text to pretrain on: set --text_files (plain text, one text per "
        "line) and/or --train_file with --text_column.",
    )
    require(
        not self.data.tfds_name,
        "--tfds_name is not read by pretrain; give --text_files or "
        "--train_file.",
    )
    require(
        0.0 < self.mask_probability < 1.0,
        f"--mask_probability={self.mask_probability} must be in (0, 1); "
        "0.15 is usual.",
    )
    require(
        0.0 <= self.validation_fraction < 1.0,
        f"--validation_fraction={self.validation_fraction} must be in "
        "[0, 1).",
    )
    require(
        not (self.validation_fraction and self.data.validation_file),
        "--validation_fraction and --validation_file both choose validation "
        "texts; give one.",
    )
    require(
        self.max_steps >= 0,
        f"--max_steps={self.max_steps} must be non-negative (0: no limit).",
    )
    # The last weights are kept; nothing watches a validation metric.
    object.__setattr__(
        self,
        "train",
        dataclasses.replace(
            self.train,
            early_stopping_metric="val_loss",
            early_stopping_patience=0,
            restore_best_weights=False,
            export=False,
        ),
    )

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
