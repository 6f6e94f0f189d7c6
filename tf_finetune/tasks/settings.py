"""Each task's own settings: one frozen dataclass per task.

Every class extends `config.TaskConfig` (which holds `--task`); its fields
are flags of the binaries like every other setting, and a flag given to a
task it does not belong to is refused. The task registry names each task's
settings class, so a task defined outside the package brings its own.

This module loads no TensorFlow: configs and flags are built and checked
before a run imports its task.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

from tf_finetune.config import (
    DataConfig,
    RunConfig,
    TaskConfig,
    read_config,
    require,
    setting,
)

REGRESSION_LOSSES = ("mse", "huber")
# Which tokens of a text longer than --max_seq_length are kept.
TRUNCATIONS = ("head", "tail", "head_tail")
# How a text longer than --max_seq_length is read.
LONG_DOCUMENT_MODES = ("truncate", "chunks")
# How the head's logits of a document's windows become one.
CHUNK_POOLINGS = ("mean", "max")
TAGGING_SCHEMES = ("IOB1", "IOB2", "IOBES")
# --model_config value naming the built-in small from-scratch translator.
DEFAULT_MODEL_CONFIG = "default"
# --warm_start values: "none" loads --model as a whole encoder-decoder;
# "bert2bert" builds one from a BERT-family encoder checkpoint (Rothe et al.,
# 2020), the checkpoint's weights in both the encoder and the decoder.
WARM_STARTS = ("none", "bert2bert")


_WHOLE_TEXT_TASKS = "--task=classification, regression and multi_label"


@dataclasses.dataclass(frozen=True)
class LongDocumentSettings(TaskConfig):
  """How the whole-text tasks read texts longer than --max_seq_length.

  Classification, regression and multi-label share these settings; the
  packing code applies them, so training, evaluation, prediction and the
  exported SavedModel read a long text the same way.
  """

  truncation: Optional[str] = setting(
      None,
      f"{_WHOLE_TEXT_TASKS}: which tokens of a text longer than "
      "--max_seq_length are kept: the first ones (head), the last ones "
      "(tail), or both ends (head_tail, --head_share of them from the "
      "start). Sun et al. (2019) found head+tail best on long reviews and "
      "news. Sentence pairs are cut longest-first from the end (head only). "
      "Unset: head, or what --recipe chooses from the training texts' "
      "lengths.",
      choices=TRUNCATIONS,
  )
  head_share: float = setting(
      0.25,
      "--truncation=head_tail: the fraction of the token budget kept from "
      "the start of the text (rounded half up), the rest from its end; "
      "0.25 of BERT's 510 keeps 128 + 382 tokens, the split of Sun et al. "
      "(2019).",
  )
  long_document: str = setting(
      "truncate",
      f"{_WHOLE_TEXT_TASKS}: a text longer than --max_seq_length is "
      "truncated (--truncation), or read in overlapping windows of "
      "--max_seq_length tokens (chunks), each with its own special tokens, "
      "the head's logits pooled over a document's windows into one "
      "prediction; in training (the loss is on the pooled logits), "
      "evaluation, prediction and the export alike.",
      choices=LONG_DOCUMENT_MODES,
  )
  chunk_stride: int = setting(
      0,
      "--long_document=chunks: tokens each window repeats from the end of "
      "the one before (the overlap, as the Hugging Face tokenizers' "
      "stride).",
  )
  chunk_pooling: str = setting(
      "mean",
      "--long_document=chunks: how the head's logits over a document's "
      "windows become its prediction: their mean or their elementwise max.",
      choices=CHUNK_POOLINGS,
  )
  max_chunks: int = setting(
      8,
      "--long_document=chunks: most windows per document, which bounds "
      "memory (a batch holds at most --batch_size x --max_chunks windows); "
      "a longer document is first cut to what these windows hold, as "
      "--truncation says.",
  )

  def __post_init__(self):
    super().__post_init__()
    require(
        0.0 <= self.head_share <= 1.0,
        f"--head_share={self.head_share} must be in [0, 1]: the fraction "
        "of the kept tokens that come from the start of the text.",
    )
    require(
        self.chunk_stride >= 0,
        f"--chunk_stride={self.chunk_stride} must be at least 0 (tokens "
        "a window shares with the one before).",
    )
    require(
        self.max_chunks >= 1,
        f"--max_chunks={self.max_chunks} must be at least 1.",
    )

  @property
  def chunks(self) -> bool:
    return self.long_document == "chunks"

  def check_run(self, run: RunConfig) -> None:
    """Pairs keep head truncation; windows need dynamic shapes (no XLA).
    Without a recipe an unset --truncation is head."""
    super().check_run(run)
    if self.truncation is None and run.train.recipe == "none":
      # Frozen: filled in place, as `TrainConfig` fills its unset settings;
      # a recipe fills it once the training texts are read.
      object.__setattr__(self, "truncation", "head")
    pair = run.data.text_pair_column
    require(
        not pair or (self.truncation in (None, "head") and not self.chunks),
        f"--truncation={self.truncation} --long_document="
        f"{self.long_document} is for single texts; sentence pairs "
        f"(--text_pair_column={pair!r}) are cut longest-first from the end: "
        "use --truncation=head --long_document=truncate.",
    )
    require(
        self.chunk_stride < run.data.max_seq_length - 2 or not self.chunks,
        f"--chunk_stride={self.chunk_stride} must be smaller than the "
        f"tokens a window holds (--max_seq_length={run.data.max_seq_length} "
        "less the special tokens).",
    )
    train = run.train
    require(
        not self.chunks
        or not (train.jit_compile or train.distribution == "tpu"),
        "--long_document=chunks runs the encoder on each document's windows "
        "(a number known only at run time), which XLA cannot compile; drop "
        "--jit_compile and --distribution=tpu.",
    )


@dataclasses.dataclass(frozen=True)
class ClassificationSettings(LongDocumentSettings):
  """--task=classification: one label per text or pair."""


@dataclasses.dataclass(frozen=True)
class RegressionSettings(LongDocumentSettings):
  """--task=regression: a number per text or pair."""

  regression_loss: str = setting(
      "mse", "Loss of --task=regression.", choices=REGRESSION_LOSSES
  )
  huber_delta: float = setting(
      1.0, "Where --regression_loss=huber turns from quadratic to linear."
  )

  def __post_init__(self):
    super().__post_init__()
    require(
        self.huber_delta > 0.0,
        f"--huber_delta={self.huber_delta} must be positive.",
    )


@dataclasses.dataclass(frozen=True)
class MultiLabelSettings(LongDocumentSettings):
  """--task=multi_label: any number of labels per text or pair."""

  label_delimiter: Optional[str] = setting(
      None,
      "--task=multi_label: separates the labels in the label column, "
      "e.g. '|'.",
  )
  label_columns: Optional[str] = setting(
      None,
      "--task=multi_label: comma-separated 0/1 columns, one per label, "
      "instead of --label_column.",
  )
  threshold: float = setting(
      0.5,
      "--task=multi_label: a label is predicted when its probability is "
      "at least this.",
      changes_weights=False,
  )
  tune_threshold: bool = setting(
      True,
      "--task=multi_label: pick the threshold with the best validation "
      "micro-F1 and save it with the model and its export.",
      changes_weights=False,
  )

  def __post_init__(self):
    super().__post_init__()
    require(
        0.0 < self.threshold < 1.0,
        f"--threshold={self.threshold} must be in (0, 1).",
    )
    require(self.label_delimiter != "", "--label_delimiter must not be empty.")
    require(
        not (self.label_delimiter and self.label_columns),
        "--label_delimiter and --label_columns are both set; multi-label "
        "data has either one column of delimited labels or one 0/1 "
        "column per label.",
    )

  @property
  def label_column_names(self) -> list[str]:
    return [
        name.strip()
        for name in (self.label_columns or "").split(",")
        if name.strip()
    ]


@dataclasses.dataclass(frozen=True)
class TokenClassificationSettings(TaskConfig):
  """--task=token_classification: a tag per word."""

  tokens_column: str = setting(
      "tokens",
      "--task=token_classification, JSONL: field with the list of " "words.",
  )
  tags_column: str = setting(
      "tags",
      "--task=token_classification, JSONL: field with the list of " "tags.",
  )
  tag_column_index: int = setting(
      -1,
      "--task=token_classification, CoNLL files: column of the tag (-1: "
      "the last; the word is always the first).",
  )
  tagging_scheme: str = setting(
      "IOB2",
      "--task=token_classification: how tags mark entities, for "
      f"entity-level metrics: {', '.join(TAGGING_SCHEMES)}.",
  )

  def __post_init__(self):
    super().__post_init__()
    require(
        self.tagging_scheme in TAGGING_SCHEMES,
        f"--tagging_scheme={self.tagging_scheme!r} is not a tagging "
        f"scheme this toolkit knows; use one of "
        f"{', '.join(TAGGING_SCHEMES)}.",
    )


@dataclasses.dataclass(frozen=True)
class QuestionAnsweringSettings(TaskConfig):
  """--task=question_answering: the span of a context that answers."""

  question_column: str = setting(
      "question",
      "--task=question_answering, JSONL/CSV: field with the " "question.",
  )
  context_column: str = setting(
      "context",
      "--task=question_answering, JSONL/CSV: field with the "
      "passage holding the answer.",
  )
  doc_stride: int = setting(
      128,
      "--task=question_answering: a context longer than one window is "
      "read in windows, each starting this many tokens after the previous "
      "one.",
  )
  max_question_length: int = setting(
      64,
      "--task=question_answering: question tokens kept (at most half of "
      "--max_seq_length).",
  )
  max_answer_length: int = setting(
      30,
      "--task=question_answering: longest answer, in tokens.",
      changes_weights=False,
  )
  n_best_size: int = setting(
      20,
      "--task=question_answering: start and end candidates per window.",
      changes_weights=False,
  )
  allow_no_answer: bool = setting(
      False,
      "--task=question_answering: the model may answer nothing (SQuAD "
      "v2.0 unanswerable questions).",
  )
  null_score_threshold: Optional[float] = setting(
      None,
      "--task=question_answering with --allow_no_answer: answer nothing "
      "when the no-answer score beats the best span's by more than this; "
      "unset: chosen on the validation data for the best F1.",
      changes_weights=False,
  )

  def __post_init__(self):
    super().__post_init__()
    for name in (
        "doc_stride",
        "max_question_length",
        "max_answer_length",
        "n_best_size",
    ):
      require(
          getattr(self, name) >= 1,
          f"--{name}={getattr(self, name)} must be at least 1.",
      )
    require(
        self.question_column != self.context_column,
        f"--question_column and --context_column are both "
        f"{self.question_column!r}; they must be different columns.",
    )
    require(
        self.null_score_threshold is None or self.allow_no_answer,
        "--null_score_threshold is for models that may answer nothing; "
        "set --allow_no_answer too.",
    )


def _target_file(split: str) -> Optional[str]:
  return setting(
      None,
      f"From plain line-aligned files: the target-language lines of "
      f"--{split}_file (which then holds the source-language lines, one "
      "per line).",
      # Its contents count, for the training and validation splits.
      changes_weights=False,
  )


# Encoder-classifier levers that have no meaning for an encoder-decoder:
# (config group, setting, the only value allowed).
_CLASSIFIER_ONLY = (
    ("train", "grad_accum_steps", 1),
    ("train", "reinit_layers", 0),
    ("train", "unfreeze_schedule", "none"),
    ("model", "backbone_l1", 0.0),
    ("model", "backbone_l2", 0.0),
    ("model", "l2_sp", 0.0),
    ("data", "text_pair_column", None),
)


# Levers that need an encoder's layer stack: they apply to the pretrained
# encoder and decoder of --warm_start=bert2bert only.
_WARM_START_ONLY = (
    ("layerwise_lr_decay", 1.0),
    ("freeze_layers", 0),
    ("freeze_embeddings", False),
)


# The translation settings that only choose how translations are searched
# for: `evaluate` and `export` take them to override a finished run's.
TRANSLATION_DECODING = ("num_beams", "length_penalty", "no_repeat_ngram_size")


def with_decoding(model_dir: str, overrides: dict) -> Optional[TaskConfig]:
  """The run's task settings with the given decoding flags replaced; None
  when there are none (the run's own settings)."""
  if not overrides:
    return None
  task = read_config(model_dir).task
  if not isinstance(task, TranslationSettings):
    raise ValueError(
        f"--{next(iter(overrides))} chooses how a translator searches; the "
        f"run in {model_dir} is --task={task.task}."
    )
  return dataclasses.replace(task, **overrides)


@dataclasses.dataclass(frozen=True)
class TranslationSettings(TaskConfig):
  """--task=translation: an encoder-decoder writes the target text."""

  source_column: str = setting(
      "source",
      "--task=translation: column (JSONL field) of the source " "text.",
  )
  target_column: str = setting(
      "target",
      "--task=translation: column (JSONL field) of the " "translation.",
  )
  source_language: Optional[str] = setting(
      None,
      "--task=translation with --tfds_name: language code of the "
      "sources in the data set's translation feature, e.g. en.",
  )
  target_language: Optional[str] = setting(
      None,
      "--task=translation with --tfds_name: language code of the "
      "translations in the data set's translation feature, e.g. de.",
  )
  source_prefix: str = setting(
      "",
      "--task=translation: text put before every source, e.g. "
      "'translate English to German: ' for T5.",
  )
  max_source_length: int = setting(
      128,
      "--task=translation: tokens per source (end-of-sequence "
      "included); longer sources are cut.",
  )
  max_target_length: int = setting(
      128,
      "--task=translation: tokens per target (end-of-sequence "
      "included) in training, and most tokens generated per translation.",
  )
  num_beams: int = setting(
      1,
      "--task=translation: beam width of evaluation, prediction and the "
      "exported SavedModel (1: greedy decoding).",
      changes_weights=False,
  )
  length_penalty: float = setting(
      1.0,
      "--task=translation with --num_beams above 1: beam search ranks "
      "finished translations by log-probability / length ** length_penalty; "
      "above 0 favours longer translations, below 0 shorter ones.",
      changes_weights=False,
  )
  vocab_size: int = setting(
      8000,
      "--task=translation with --model_config: pieces of the "
      "SentencePiece vocabulary trained on the training sources and "
      "targets.",
  )
  jit_generate: bool = setting(
      False,
      "--task=translation: XLA-compile generation in evaluation and "
      "prediction. Decoding gets faster once compiled, but every new batch "
      "shape compiles again, so it pays off on large sets only.",
      changes_weights=False,
  )
  no_repeat_ngram_size: int = setting(
      0,
      "--task=translation: evaluation, prediction and the exported "
      "SavedModel never repeat an n-gram of this size within a translation "
      "(e.g. 3); 0 turns it off.",
      changes_weights=False,
  )
  train_target_file: Optional[str] = _target_file("train")
  validation_target_file: Optional[str] = _target_file("validation")
  test_target_file: Optional[str] = _target_file("test")
  model_config: Optional[str] = setting(
      None,
      "From scratch, instead of --model: a Hugging "
      "Face config.json of an encoder-decoder (e.g. a small T5) with random "
      f"weights, or '{DEFAULT_MODEL_CONFIG}' for the built-in small T5; a "
      "SentencePiece vocabulary of --vocab_size is trained on the training "
      "data.",
  )
  warm_start: str = setting(
      "none",
      "--task=translation: 'bert2bert' builds the encoder-decoder from "
      "--model, a BERT-family encoder checkpoint (BERT, RoBERTa, ELECTRA): "
      "its weights start both the encoder and a decoder with causal "
      "self-attention and new cross-attention, and its tokenizer reads "
      "sources and writes targets. 'none': --model is a whole "
      "encoder-decoder (T5, Marian, BART).",
      choices=WARM_STARTS,
  )
  share_encoder_decoder: bool = setting(
      False,
      "--task=translation with --warm_start=bert2bert: the encoder and the "
      "decoder share one set of weights (all but the decoder's "
      "cross-attention and output layer), about half the parameters.",
  )

  def __post_init__(self):
    super().__post_init__()
    for name in ("max_source_length", "max_target_length"):
      require(
          2 <= getattr(self, name) <= 8192,
          f"--{name}={getattr(self, name)} must be between 2 and 8192.",
      )
    require(
        self.num_beams >= 1,
        f"--num_beams={self.num_beams} must be at least 1 (1: greedy).",
    )
    require(
        math.isfinite(self.length_penalty),
        f"--length_penalty={self.length_penalty} must be a finite number "
        "(1.0: transformers' default).",
    )
    require(
        self.no_repeat_ngram_size >= 0,
        f"--no_repeat_ngram_size={self.no_repeat_ngram_size} must be "
        "non-negative (0 = off).",
    )
    require(
        not (self.jit_generate and self.no_repeat_ngram_size),
        f"--jit_generate with --no_repeat_ngram_size="
        f"{self.no_repeat_ngram_size}: transformers' n-gram ban runs only "
        "eagerly, so it cannot be XLA-compiled; drop --jit_generate or set "
        "--no_repeat_ngram_size=0 (the exported SavedModel bans repeats in "
        "its own search).",
    )
    require(
        self.vocab_size >= 16,
        f"--vocab_size={self.vocab_size} must be at least 16.",
    )
    require(
        self.source_column != self.target_column,
        f"--source_column and --target_column are both "
        f"{self.source_column!r}; they must be two columns.",
    )
    require(
        self.model_config is None
        or self.model_config == DEFAULT_MODEL_CONFIG
        or os.path.isfile(self.model_config),
        f"--model_config={self.model_config!r} is not a file; expected "
        "a Hugging Face config.json of an encoder-decoder or "
        f"{DEFAULT_MODEL_CONFIG!r}.",
    )

    require(
        not self.share_encoder_decoder or self.warm_start != "none",
        "--share_encoder_decoder needs --warm_start=bert2bert: only an "
        "encoder-decoder warm-started from one encoder checkpoint has "
        "encoder and decoder weights of the same shapes to share.",
    )
    require(
        self.warm_start == "none" or self.model_config is None,
        f"--warm_start={self.warm_start} starts from the pretrained "
        f"--model; --model_config={self.model_config!r} trains from "
        "scratch; use one of them.",
    )

  def target_file(self, split: str) -> Optional[str]:
    """--{split}_target_file."""
    return getattr(self, f"{split}_target_file")

  def check_run(self, run: RunConfig) -> None:
    """A pretrained --model or a --model_config, the target files' source
    files, and none of the classifier-only levers."""
    model = run.model.model
    require(
        bool(model or self.model_config),
        "--model is required: a pretrained encoder-decoder (hub name or "
        "local directory), or --model_config to train one from scratch.",
    )
    require(
        not (model and self.model_config),
        f"--model={model!r} and --model_config={self.model_config!r} are "
        "both set; fine-tune a pretrained --model or train --model_config "
        "from scratch, not both.",
    )
    data: DataConfig = run.data
    for split in ("train", "validation", "test"):
      require(
          not self.target_file(split) or bool(getattr(data, f"{split}_file")),
          f"--{split}_target_file needs --{split}_file: the source-"
          "language lines that its lines translate.",
      )
    for name, allowed in _WARM_START_ONLY:
      value = getattr(run.train, name)
      require(
          value == allowed or value is None or self.warm_start != "none",
          f"--{name}={value!r} needs an encoder's layer stack: it applies "
          "with --task=translation only to --warm_start=bert2bert models "
          f"(leave it at {allowed!r}).",
      )
    for group, name, allowed in _CLASSIFIER_ONLY:
      value = getattr(getattr(run, group), name)
      # None: unset, for --recipe to fill (with the allowed value).
      require(
          value == allowed or value is None,
          f"--{name}={value!r} is not supported with --task=translation "
          f"(leave it at {allowed!r}).",
      )
    require(
        not data.tfds_name
        or bool(self.source_language and self.target_language),
        f"--tfds_name={data.tfds_name!r} with --task=translation needs "
        "--source_language and --target_language (e.g. en and de).",
    )
