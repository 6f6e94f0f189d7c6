"""Reading whole texts and text pairs: the sentence-level encoder tasks.

Classification, regression and multi-label read the `--text_column` (and
`--text_pair_column`) of CSV, TSV, JSONL files or TFDS, and predict one
output vector per text or pair. `TextTask` implements that once.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional

import numpy as np
from absl import logging

from tf_finetune.config import DataConfig
from tf_finetune.data import pipeline, readers, shards, streaming
from tf_finetune.tasks import encoder, streamed_text
from tf_finetune.text.long_documents import LongDocuments
from tf_finetune.training import recipes

# TFDS text features of the data sets with a known layout: (text, text pair,
# label). A run whose --text_column is not a feature of the data set gets
# these; a pair data set read with one text column is refused.
TFDS_TEXT_FEATURES = {
    "glue/cola": ("sentence", None, "label"),
    "glue/sst2": ("sentence", None, "label"),
    "glue/mrpc": ("sentence1", "sentence2", "label"),
    "glue/qqp": ("question1", "question2", "label"),
    "glue/stsb": ("sentence1", "sentence2", "label"),
    "glue/mnli": ("premise", "hypothesis", "label"),
    "glue/qnli": ("question", "sentence", "label"),
    "glue/rte": ("sentence1", "sentence2", "label"),
    "glue/wnli": ("sentence1", "sentence2", "label"),
    "glue/ax": ("premise", "hypothesis", "label"),
}


def tfds_columns(data: DataConfig) -> tuple[str, Optional[str], str]:
  """The (text, pair, label) features to read from `data.tfds_name`.

  Raises:
    ValueError: when a sentence-pair data set is read with one text column.
  """
  known = TFDS_TEXT_FEATURES.get(data.tfds_name.split(":")[0])
  if known is None:
    return data.text_column, data.text_pair_column, data.label_column
  defaults = data.text_column == DataConfig.text_column
  text = known[0] if defaults else data.text_column
  pair = data.text_pair_column or (known[1] if defaults else None)
  label = (
      known[2]
      if data.label_column == DataConfig.label_column
      else data.label_column
  )
  if known[1] and pair is None:
    raise ValueError(
        f"--tfds_name={data.tfds_name} is a sentence-pair task "
        f"({known[0]}, {known[1]}) but only --text_column={text!r} was "
        f"given; set --text_pair_column={known[1]} (or leave both unset)."
    )
  return text, pair, label


def read_text_split(
    data: DataConfig,
    split: str,
    *,
    path: Optional[str] = None,
    with_labels: bool = True,
) -> Optional[readers.Examples]:
  """Reads the train, validation or test split named by the data config.

  Args:
    data: The data config.
    split: "train", "validation" or "test".
    path: A file (or glob, or comma-separated list of shards) that replaces
      the config's file for this split.
    with_labels: Read the label column.

  Returns:
    The examples, or None when the config names no such split.
  """
  path = path or getattr(data, f"{split}_file")
  if path:
    return shards.read_examples(
        path,
        text_column=data.text_column,
        text_pair_column=data.text_pair_column,
        label_column=data.label_column if with_labels else None,
        flag=f"--{split}_file",
    )
  tfds_split = getattr(data, f"tfds_{split}_split")
  if data.tfds_name and tfds_split:
    text, pair, label = tfds_columns(data)
    return readers.read_tfds(
        data.tfds_name,
        tfds_split,
        data_dir=data.tfds_data_dir,
        text_column=text,
        text_pair_column=pair,
        label_column=label if with_labels else None,
    )
  return None


class TextTask(encoder.EncoderTask):
  """A task predicting for a whole text or text pair.

  A text longer than --max_seq_length is truncated (--truncation) or read
  in windows (--long_document=chunks), as the task's settings say
  (`settings.LongDocumentSettings`); pairs keep head truncation.
  """

  def long_documents(self) -> LongDocuments:
    policy = LongDocuments.from_settings(self.config)
    if self.state.text_pair and not policy.is_default:
      raise ValueError(
          f"--truncation={policy.truncation} --long_document="
          f"{self.config.long_document} is for single texts; sentence pairs "
          "are cut longest-first from the end: use --truncation=head "
          "--long_document=truncate."
      )
    return policy

  # Whether the task's data can be streamed (`data.streaming`).
  supports_streaming = False

  def prepare(self, config):
    data = self.resolve_data(config.data)
    # Documents read in windows are batched in memory only (RunConfig
    # refuses --streaming with them).
    windows = getattr(config.task, "long_document", "truncate") == "chunks"
    supported = self.supports_streaming and not windows
    if not streaming.use_streaming(data, supported=supported):
      return super().prepare(config)
    if self._truncation_unset():
      logging.info(
          "--recipe=%s: the training texts are streamed, not measured "
          "ahead: --truncation=head.",
          config.train.recipe,
      )
      self._set_truncation("head")
      config = dataclasses.replace(config, task=self.config)
    return streamed_text.prepare(self, dataclasses.replace(config, data=data))

  def choose_text_length_settings(self, config, tokenizer, train_examples):
    if not self._truncation_unset():
      return config
    if self.state.text_pair:  # Pairs are cut longest-first from the end.
      self._set_truncation("head")
    else:
      self._set_truncation(
          recipes.recommended_truncation(
              train_examples.texts,
              tokenizer,
              config.data.max_seq_length,
              self.config.head_share,
          )
      )
    return dataclasses.replace(config, task=self.config)

  def _truncation_unset(self) -> bool:
    """Whether --recipe is to choose --truncation (a task registered with
    settings of its own may have none)."""
    return getattr(self.config, "truncation", "head") is None

  def _set_truncation(self, truncation: str) -> None:
    self.config = dataclasses.replace(self.config, truncation=truncation)

  def resolve_data(self, data):
    if not data.tfds_name or data.train_file:
      return data
    text, pair, label = tfds_columns(data)
    return dataclasses.replace(
        data, text_column=text, text_pair_column=pair, label_column=label
    )

  def read(self, data, split, *, path=None, with_labels=True):
    return read_text_split(data, split, path=path, with_labels=with_labels)

  @abc.abstractmethod
  def label_ids(self, examples: readers.Examples) -> np.ndarray:
    """The model targets of `examples`, one row per example."""

  def encode(self, examples, encoder):
    encoded = pipeline.encode_examples(examples, encoder)
    if examples.labels is None:
      return encoded
    return dataclasses.replace(encoded, label_ids=self.label_ids(examples))

  def logits(
      self, model, encoded: pipeline.EncodedExamples, *, batch_size: int
  ) -> np.ndarray:
    """float32 [num_examples, head_size] logits, in input order."""
    if isinstance(encoded, streaming.StreamedSplit):
      return model.predict(
          streaming.inference_dataset(
              encoded, batch_size=batch_size, with_labels=False
          ),
          verbose=0,
      ).astype(np.float32)
    dataset, order = pipeline.inference_dataset(
        encoded, batch_size=batch_size, with_labels=False
    )
    logits = model.predict(dataset, verbose=0)
    restored = np.empty_like(logits, dtype=np.float32)
    restored[order] = logits
    return restored

  def server_input_names(self) -> tuple[str, ...]:
    """serving_default's inputs: the text, and the pair if the run has one."""
    return self.input_names[: 2 if self.state.text_pair else 1]
