"""The data, model and task groups of a run's configuration."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

from tf_finetune import tasks
from tf_finetune.config.fields import check_choices, require, setting

if TYPE_CHECKING:
  from tf_finetune.config import RunConfig

POOLINGS = ("auto", "pooler", "cls", "mean")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the examples come from and how they become batches."""

  train_file: Optional[str] = setting(
      None,
      "Training examples: a file, a glob or a comma-separated list of "
      "shards, each .csv, .tsv, .jsonl or .tfrecord (tf.train.Examples with "
      "--text_column/--label_column features), optionally gzip-compressed "
      "(.gz).",
      changes_weights=False,
  )
  validation_file: Optional[str] = setting(
      None,
      "Validation examples, in the format of --train_file; early "
      "stopping and the best checkpoint watch them.",
      changes_weights=False,
  )
  test_file: Optional[str] = setting(
      None,
      "Test examples, in the format of --train_file, evaluated once "
      "when training ends.",
      changes_weights=False,
  )
  tfds_name: Optional[str] = setting(
      None,
      "TensorFlow Datasets name used instead of the files, e.g. " "glue/sst2.",
  )
  tfds_data_dir: Optional[str] = setting(
      None,
      "Where TensorFlow Datasets keeps its prepared data.",
      changes_weights=False,
  )
  tfds_train_split: str = setting("train", "Split of --tfds_name for training.")
  tfds_validation_split: Optional[str] = setting(
      "validation", "Split of --tfds_name for validation ('' for none)."
  )
  tfds_test_split: Optional[str] = setting(
      None,
      "Split of --tfds_name evaluated once when training ends.",
      changes_weights=False,
  )
  text_column: str = setting(
      "text", "Column (or TFDS feature) holding the text."
  )
  text_pair_column: Optional[str] = setting(
      None, "Column holding the second text of sentence-pair tasks."
  )
  label_column: str = setting(
      "label", "Column holding the label (strings or integers)."
  )
  max_seq_length: int = setting(
      128,
      "Tokens per example, [CLS] and [SEP] included; longer texts are "
      "truncated.",
  )
  batch_size: int = setting(
      32,
      "Examples per batch on each replica; the global batch is this times "
      "the number of replicas.",
  )
  bucketing: bool = setting(
      True,
      "Batch examples of similar length together, so that batches "
      "need less padding.",
  )
  shuffle_buffer: int = setting(100_000, "Examples held by the shuffle buffer.")
  streaming: bool = setting(
      False,
      "Read the files a record at a time through tf.data instead of into "
      "memory (--task=classification): shards interleaved, tokenized in the "
      "pipeline, memory bounded by --shuffle_buffer.",
  )
  streaming_threshold_mb: float = setting(
      1024.0,
      "Stream automatically (as --streaming) when the input files of a "
      "classification run hold more than this many megabytes on disk; 0 "
      "never streams unless --streaming.",
  )
  labels: Optional[str] = setting(
      None,
      "The label vocabulary, comma-separated, in id order; a streaming run "
      "then needs no counting pass over the training files for it.",
  )
  steps_per_epoch: Optional[int] = setting(
      None,
      "Streaming: updates per epoch; default from the counting pass over "
      "the training files (ceil(rows / global batch)).",
  )
  cache_dir: Optional[str] = setting(
      None,
      "Streaming: keep the tokenized examples in files in this directory, "
      "written during the first full pass and read by later epochs and "
      "runs; named by a fingerprint of the shards (names, sizes, times), "
      "columns, labels and tokenizer, so changed inputs get new files.",
  )
  skip_bad_records: bool = setting(
      False,
      "Streaming: skip records that cannot be read (wrong field count, bad "
      "JSON, missing or unknown values) instead of stopping; the count is "
      "logged and written to summary.json.",
  )

  def __post_init__(self):
    require(
        not (self.train_file and self.tfds_name),
        "--train_file and --tfds_name are both set; give one source of "
        "training data.",
    )
    require(
        3 <= self.max_seq_length <= 8192,
        f"--max_seq_length={self.max_seq_length} must be between 3 and "
        "8192 (room for [CLS], a token and [SEP]).",
    )
    require(
        self.batch_size >= 1,
        f"--batch_size={self.batch_size} must be at least 1.",
    )
    require(bool(self.text_column), "--text_column must not be empty.")
    require(bool(self.label_column), "--label_column must not be empty.")
    require(
        self.text_pair_column != self.text_column,
        f"--text_pair_column={self.text_pair_column!r} is the same column "
        "as --text_column; a pair needs two different columns.",
    )
    require(
        self.shuffle_buffer >= 1,
        f"--shuffle_buffer={self.shuffle_buffer} must be at least 1.",
    )
    require(
        not (self.streaming and self.tfds_name),
        "--streaming reads --train_file shards; TFDS data sets (--tfds_name) "
        "are read in memory.",
    )
    require(
        self.streaming_threshold_mb >= 0,
        f"--streaming_threshold_mb={self.streaming_threshold_mb} must be at "
        "least 0.",
    )
    require(
        self.steps_per_epoch is None or self.steps_per_epoch >= 1,
        f"--steps_per_epoch={self.steps_per_epoch} must be at least 1.",
    )
    if self.labels is not None:
      names = self.label_vocab
      require(
          len(names) >= 2 and len(set(names)) == len(names),
          f"--labels={self.labels!r} must name at least two distinct labels, "
          "comma-separated.",
      )

  @property
  def label_vocab(self) -> Optional[list[str]]:
    """--labels as a list, or None."""
    if self.labels is None:
      return None
    return [label.strip() for label in self.labels.split(",")]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The pretrained backbone, the head on top of it and their penalties."""

  model: Optional[str] = setting(
      None,
      "Pretrained model: a Hugging Face hub name (bert-base-uncased) or "
      "a local directory holding config.json, weights and tokenizer files.",
  )
  pooling: Optional[str] = setting(
      None,
      "How the sequence becomes one vector: the backbone's pooler "
      "output, the hidden state of the [CLS] token (cls), or the mean of the "
      "tokens that are not padding; auto: the pooler where the encoder has "
      "one (BERT, RoBERTa, ALBERT), else cls (DistilBERT, ELECTRA, DeBERTa). "
      "Unset: auto, or what --recipe chooses (mean).",
      choices=POOLINGS,
  )
  dropout: float = setting(0.1, "Dropout rate before the head.")
  l2: float = setting(0.0, "L2 penalty on the head's kernel.")
  l1: float = setting(0.0, "L1 penalty on the head's kernel.")
  allow_pickle_weights: bool = setting(
      False,
      "Allow loading pickled PyTorch .bin weights (can run code; only "
      "for files you trust).",
      changes_weights=False,
  )
  hidden_dropout: Optional[float] = setting(
      None, "Replace the pretrained config's hidden dropout rate."
  )
  attention_dropout: Optional[float] = setting(
      None, "Replace the pretrained config's attention dropout rate."
  )
  backbone_l2: float = setting(
      0.0,
      "L2 penalty on the encoder's kernels (not on LayerNorm or biases, "
      "nor on the embeddings unless --regularize_embeddings).",
  )
  backbone_l1: float = setting(
      0.0, "L1 penalty on the encoder's kernels, as --backbone_l2."
  )
  l2_sp: float = setting(
      0.0,
      "L2-SP (Li et al., 2018): penalize the squared distance of the "
      "encoder's kernels from their pretrained values instead of from zero "
      "(e.g. 0.01); 0 turns it off.",
  )
  regularize_embeddings: bool = setting(
      False,
      "Apply --backbone_l1, --backbone_l2 and --l2_sp to the "
      "embeddings too.",
  )

  def __post_init__(self):
    check_choices(self)
    require(
        0.0 <= self.dropout < 1.0,
        f"--dropout={self.dropout} must be in [0, 1).",
    )
    require(self.l2 >= 0.0, f"--l2={self.l2} must be non-negative.")
    require(self.l1 >= 0.0, f"--l1={self.l1} must be non-negative.")
    for name in ("hidden_dropout", "attention_dropout"):
      rate = getattr(self, name)
      require(
          rate is None or 0.0 <= rate < 1.0,
          f"--{name}={rate} must be in [0, 1).",
      )
    for name in ("backbone_l2", "backbone_l1", "l2_sp"):
      require(
          getattr(self, name) >= 0.0,
          f"--{name}={getattr(self, name)} must be non-negative.",
      )
    require(
        not (self.l2_sp and self.backbone_l2),
        "--l2_sp and --backbone_l2 both pull the encoder's weights, one "
        "towards the pretrained values and one towards zero; use one.",
    )

  @property
  def config_overrides(self) -> dict[str, float]:
    """Values that replace the pretrained config's (dropout rates)."""
    overrides = {}
    if self.hidden_dropout is not None:
      overrides["hidden_dropout_prob"] = self.hidden_dropout
    if self.attention_dropout is not None:
      overrides["attention_probs_dropout_prob"] = self.attention_dropout
    return overrides


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """What the model predicts.

  Each task's own settings extend this class (`tasks.settings`); a run's
  `task` is an instance of its task's settings class.
  """

  task: str = setting(
      "classification",
      "What the model predicts: one label per text or pair "
      "(classification), a number (regression), any number of labels "
      "(multi_label), a tag per word (token_classification), the span of a "
      "context that answers a question (question_answering), or a "
      "translation by an encoder-decoder (translation).",
      choices=tasks.names,
  )

  def __post_init__(self):
    check_choices(self)
    expected = tasks.settings_class(self.task)
    require(
        isinstance(self, expected),
        f"--task={self.task} takes its settings as {expected.__name__}, "
        f"not {type(self).__name__}.",
    )

  def check_run(self, run: RunConfig) -> None:
    """Checks what depends on the rest of the run; raises ValueError."""
    require(
        bool(run.model.model),
        "--model is required: a Hugging Face hub name or a local "
        "directory with config.json, weights and tokenizer files.",
    )


def task_config(task: str = "classification", **settings) -> TaskConfig:
  """The settings of `--task=task` (its registered class), validated."""
  return tasks.settings_class(task)(task=task, **settings)
