"""The texts of a pretraining run, tokenized, and their masked batches."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune.config import PretrainConfig
from tf_finetune.data import masking, pipeline, readers
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks.encoder import TOKENIZER_CHECK_SAMPLES
from tf_finetune.text import families
from tf_finetune.text.tokenization import (
    TextEncoder,
    TokenizerNotSupportedError,
    check_matches_tokenizer,
)
from tf_finetune.text.wordpiece import CONTINUING_SUBWORD_PREFIX


@dataclasses.dataclass
class PreparedText:
  """A pretraining run's texts, read, checked and tokenized.

  Attributes:
    config: The run's config.
    texts: Split name ("train", "validation") -> the texts as read.
    encoded: Split name -> token ids, with the ids themselves as the
      targets before masking (`IGNORED` pads them).
    tokenizer: The model's own tokenizer (Hugging Face).
    encoder: The in-graph tokenizer that reproduces it.
    masker: Chooses and replaces the targets of each batch.
  """

  config: PretrainConfig
  texts: dict[str, readers.Examples]
  encoded: dict[str, pipeline.EncodedExamples]
  tokenizer: Any
  encoder: TextEncoder
  masker: masking.Masker

  def mean_tokens(self, split: str = "train") -> float:
    """Tokens per example (special tokens included, no padding)."""
    return float(np.mean(self.encoded[split].lengths))


def _read(path: str, config: PretrainConfig, flag: str) -> readers.Examples:
  """A CSV/TSV/JSONL file's --text_column, else a plain text file's lines."""
  if os.path.splitext(path)[1].lower() in readers.SUFFIX_FORMATS:
    return readers.read_file(
        path,
        text_column=config.data.text_column,
        text_pair_column=None,
        label_column=None,
        flag=flag,
    )
  return readers.read_text_files(path, flag)


def _joined(parts: list[readers.Examples]) -> readers.Examples:
  if len(parts) == 1:
    return parts[0]
  return readers.Examples(
      " and ".join(part.source for part in parts),
      [text for part in parts for text in part.texts],
      None,
      None,
      [line for part in parts for line in part.line_numbers],
      [row for part in parts for row in part.rows],
  )


def _subset(examples: readers.Examples, indices, source: str):
  return readers.Examples(
      source,
      [examples.texts[i] for i in indices],
      None,
      None,
      [examples.line_numbers[i] for i in indices],
      [examples.rows[i] for i in indices],
  )


def read_texts(config: PretrainConfig) -> dict[str, readers.Examples]:
  """The training and (if any) validation texts of the run.

  Raises:
    ValueError: for unreadable files, naming the flag, file and line.
  """
  parts = []
  if config.text_files:
    parts.append(readers.read_text_files(config.text_files, "--text_files"))
  if config.data.train_file:
    parts.append(
        readers.read_file(
            config.data.train_file,
            text_column=config.data.text_column,
            text_pair_column=None,
            label_column=None,
        )
    )
  train = _joined(parts)
  texts = {"train": train}
  if config.data.validation_file:
    texts["validation"] = _read(
        config.data.validation_file, config, "--validation_file"
    )
  elif config.validation_fraction:
    order = np.random.default_rng(config.train.seed).permutation(len(train))
    held_out = int(round(config.validation_fraction * len(train)))
    if not 1 <= held_out < len(train):
      raise ValueError(
          f"--validation_fraction={config.validation_fraction} of "
          f"{len(train)} texts leaves {held_out} for validation and "
          f"{len(train) - held_out} for training; both need at least one."
      )
    texts["validation"] = _subset(
        train, sorted(order[:held_out]), f"{train.source} (held out)"
    )
    texts["train"] = _subset(train, sorted(order[held_out:]), train.source)
  for split, examples in texts.items():
    logging.info("%s texts: %d from %s.", split, len(examples), examples.source)
  return texts


def text_encoder(tokenizer, config: PretrainConfig) -> TextEncoder:
  """The in-graph tokenizer of --model's tokenizer, as fine-tuning's."""
  model = config.model.model
  family = backbone_lib.model_family(model)
  try:
    return TextEncoder.from_hf_tokenizer(
        tokenizer, config.data.max_seq_length, model_inputs=family.model_inputs
    )
  except TokenizerNotSupportedError as e:
    raise ValueError(f"--model={model!r} ({family.name}): {e}") from e


def make_masker(
    tokenizer, encoder: TextEncoder, config: PretrainConfig
) -> masking.Masker:
  """The run's masker: --mask_probability, --masking.

  Raises:
    ValueError: for a tokenizer without a mask token, or --masking=whole_word
      with a tokenizer that does not mark where words continue (not
      WordPiece).
  """
  model = config.model.model
  if tokenizer.mask_token_id is None:
    raise ValueError(
        f"--model={model!r}: the tokenizer has no mask token; masked-LM "
        "pretraining needs one."
    )
  vocab_size = len(tokenizer)
  continuation_ids = None
  if config.masking == "whole_word":
    if encoder.tokenizer_type != families.WORDPIECE:
      raise ValueError(
          f"--masking=whole_word needs a WordPiece tokenizer, whose "
          f"'{CONTINUING_SUBWORD_PREFIX}' pieces mark where a word "
          f"continues; --model={model!r} has a {encoder.tokenizer_type} "
          "tokenizer: use --masking=token."
      )
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    continuation_ids = [
        i
        for i, token in enumerate(tokens)
        if token and token.startswith(CONTINUING_SUBWORD_PREFIX)
    ]
  return masking.Masker(
      mask_id=tokenizer.mask_token_id,
      special_ids=set(tokenizer.all_special_ids)
      | {encoder.cls_id, encoder.sep_id, encoder.pad_id},
      vocab_size=vocab_size,
      probability=config.mask_probability,
      continuation_ids=continuation_ids,
  )


def prepare(config: PretrainConfig) -> PreparedText:
  """Reads the texts, checks the in-graph tokenizer, tokenizes.

  Raises:
    ValueError: for bad files, model or tokenizer, naming the flag.
  """
  texts = read_texts(config)
  backbone_lib.check_model_source(
      config.model.model, config.model.allow_pickle_weights
  )
  tokenizer = backbone_lib.load_tokenizer(config.model.model)
  encoder = text_encoder(tokenizer, config)
  masker = make_masker(tokenizer, encoder, config)
  check_matches_tokenizer(
      encoder, tokenizer, texts["train"].texts[:TOKENIZER_CHECK_SAMPLES]
  )
  encoded = {}
  for split, examples in texts.items():
    found = pipeline.encode_examples(examples, encoder)
    # The targets before masking are the ids themselves.
    encoded[split] = dataclasses.replace(
        found, label_ids=found.input_ids, label_padding=masking.IGNORED
    )
  return PreparedText(config, texts, encoded, tokenizer, encoder, masker)


def training_batches(
    prepared: PreparedText, global_batch: int
) -> tf.data.Dataset:
  """Shuffled, bucketed batches of (features, labels), masked afresh each
  epoch."""
  config = prepared.config
  batches = pipeline.training_dataset(
      prepared.encoded["train"],
      batch_size=global_batch,
      bucketing=config.data.bucketing,
      seed=config.train.seed,
      pad_id=prepared.encoder.pad_id,
      shuffle_buffer=config.data.shuffle_buffer,
  )
  return masking.masked_batches(
      batches, prepared.masker, seed=config.train.seed, fresh_each_epoch=True
  )


def validation_batches(
    prepared: PreparedText, eval_batch: int
) -> tf.data.Dataset | None:
  """Validation batches, masked the same way every epoch; None without."""
  if "validation" not in prepared.encoded:
    return None
  batches, _ = pipeline.inference_dataset(
      prepared.encoded["validation"], batch_size=eval_batch, with_labels=True
  )
  return masking.masked_batches(
      batches,
      prepared.masker,
      seed=prepared.config.train.seed + 1,
      fresh_each_epoch=False,
  )
