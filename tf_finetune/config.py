"""Typed, frozen run configuration.

Configuration flows one way: flag defaults, then `--flagfile`, then explicit
flags are turned into these dataclasses by the binaries; the library only ever
sees the dataclasses. Each setting is written once, as a field made by
`setting`: the field's default, help text and allowed values are also those of
the flag of the same name, which flag_definitions.py generates from it. Every
field is validated in `__post_init__`, with errors that name the flag a user
would change. A run writes its resolved config to `<model_dir>/config.json` so
that evaluation, prediction and export rebuild exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Optional, Sequence

from tf_finetune import tasks

SCHEDULES = (
    "linear",
    "cosine",
    "polynomial",
    "constant",
    "inverse_sqrt",
    "cosine_restarts",
    "step",
)
POOLINGS = ("auto", "pooler", "cls", "mean")
DISTRIBUTIONS = ("auto", "mirrored", "one_device", "multi_worker", "tpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
UNFREEZE_SCHEDULES = ("none", "gradual")


def early_stopping_metrics() -> tuple[str, ...]:
  """--early_stopping_metric values: "auto" (the task's default) and every
  registered task's metrics."""
  return ("auto",) + tasks.all_monitors()


REGRESSION_LOSSES = ("mse", "huber")
TAGGING_SCHEMES = ("IOB1", "IOB2", "IOBES")
# --model_config value naming the built-in small from-scratch translator.
DEFAULT_MODEL_CONFIG = "default"

CONFIG_FILENAME = "config.json"

# Keys of a setting's field metadata.
HELP = "help"
CHOICES = "choices"


Choices = Sequence[str] | Callable[[], Sequence[str]]


def setting(default: Any, help: str, *, choices: Choices | None = None) -> Any:
  """A config field that is also a command-line flag of the same name.

  The flag's type follows the field's annotation (str, int, float, bool, or
  Optional of one of them); a field without a default gets a flag that
  defaults to None.

  Args:
    default: The field's (and the flag's) default; `dataclasses.MISSING` for
      a field that must be given.
    help: The flag's help text, addressed to the user of the binaries.
    choices: The only values allowed (or a function returning them when
      asked); the flag becomes an enum and `__post_init__` checks the field
      against them.

  Returns:
    A `dataclasses.field` carrying `help` and `choices` in its metadata.
  """
  metadata = {HELP: help}
  if choices is not None:
    metadata[CHOICES] = choices if callable(choices) else tuple(choices)
  return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> Optional[tuple[str, ...]]:
  """The values a field allows, or None; choices given as a function (the
  registered tasks) are asked now."""
  choices = field.metadata.get(CHOICES)
  return tuple(choices()) if callable(choices) else choices


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _check_choices(config: Any) -> None:
  """Checks every field of `config` that has choices against them."""
  for field in dataclasses.fields(config):
    choices = choices_of(field)
    if choices is not None:
      value = getattr(config, field.name)
      _require(
          value in choices,
          f"--{field.name}={value!r} is not one of " f"{', '.join(choices)}.",
      )


def _default_monitors() -> str:
  """Each task's default metric, as words: "val_loss for a and b, ..."."""
  names_by_metric = {}
  for name in tasks.names():
    names_by_metric.setdefault(tasks.monitors(name)[0], []).append(name)
  phrases = []
  for metric, names in names_by_metric.items():
    listed = (
        ", ".join(names[:-1]) + " and " + names[-1]
        if len(names) > 1
        else names[0]
    )
    phrases.append(f"{metric} for {listed}")
  return ", ".join(phrases)


def _target_file(split: str) -> Any:
  return setting(
      None,
      f"--task=translation from plain line-aligned files: the "
      f"target-language lines of --{split}_file (which then holds the "
      "source-language lines, one per line).",
  )


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the examples come from and how they become batches."""

  train_file: Optional[str] = setting(
      None, "Training examples: .csv, .tsv or .jsonl."
  )
  validation_file: Optional[str] = setting(
      None,
      "Validation examples, in the format of --train_file; early "
      "stopping and the best checkpoint watch them.",
  )
  test_file: Optional[str] = setting(
      None,
      "Test examples, in the format of --train_file, evaluated once "
      "when training ends.",
  )
  tfds_name: Optional[str] = setting(
      None,
      "TensorFlow Datasets name used instead of the files, e.g. " "glue/sst2.",
  )
  tfds_data_dir: Optional[str] = setting(
      None, "Where TensorFlow Datasets keeps its prepared data."
  )
  tfds_train_split: str = setting("train", "Split of --tfds_name for training.")
  tfds_validation_split: Optional[str] = setting(
      "validation", "Split of --tfds_name for validation ('' for none)."
  )
  tfds_test_split: Optional[str] = setting(
      None, "Split of --tfds_name evaluated once when training ends."
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
  train_target_file: Optional[str] = _target_file("train")
  validation_target_file: Optional[str] = _target_file("validation")
  test_target_file: Optional[str] = _target_file("test")

  def __post_init__(self):
    for split in ("train", "validation", "test"):
      _require(
          not getattr(self, f"{split}_target_file")
          or bool(getattr(self, f"{split}_file")),
          f"--{split}_target_file needs --{split}_file: the source-"
          "language lines that its lines translate.",
      )
    _require(
        not (self.train_file and self.tfds_name),
        "--train_file and --tfds_name are both set; give one source of "
        "training data.",
    )
    _require(
        3 <= self.max_seq_length <= 8192,
        f"--max_seq_length={self.max_seq_length} must be between 3 and "
        "8192 (room for [CLS], a token and [SEP]).",
    )
    _require(
        self.batch_size >= 1,
        f"--batch_size={self.batch_size} must be at least 1.",
    )
    _require(bool(self.text_column), "--text_column must not be empty.")
    _require(bool(self.label_column), "--label_column must not be empty.")
    _require(
        self.text_pair_column != self.text_column,
        f"--text_pair_column={self.text_pair_column!r} is the same column "
        "as --text_column; a pair needs two different columns.",
    )
    _require(
        self.shuffle_buffer >= 1,
        f"--shuffle_buffer={self.shuffle_buffer} must be at least 1.",
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The pretrained backbone, the head on top of it and their penalties."""

  model: Optional[str] = setting(
      None,
      "Pretrained model: a Hugging Face hub name (bert-base-uncased) or "
      "a local directory holding config.json, weights and tokenizer files.",
  )
  pooling: str = setting(
      "auto",
      "How the sequence becomes one vector: the backbone's pooler "
      "output, the hidden state of the [CLS] token (cls), or the mean of the "
      "tokens that are not padding; auto: the pooler where the encoder has "
      "one (BERT, RoBERTa, ALBERT), else cls (DistilBERT, ELECTRA, DeBERTa).",
      choices=POOLINGS,
  )
  dropout: float = setting(0.1, "Dropout rate before the head.")
  l2: float = setting(0.0, "L2 penalty on the head's kernel.")
  l1: float = setting(0.0, "L1 penalty on the head's kernel.")
  allow_pickle_weights: bool = setting(
      False,
      "Allow loading pickled PyTorch .bin weights (can run code; only "
      "for files you trust).",
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
  model_config: Optional[str] = setting(
      None,
      "--task=translation from scratch, instead of --model: a Hugging "
      "Face config.json of an encoder-decoder (e.g. a small T5) with random "
      f"weights, or '{DEFAULT_MODEL_CONFIG}' for the built-in small T5; a "
      "SentencePiece vocabulary of --vocab_size is trained on the training "
      "data.",
  )

  def __post_init__(self):
    _require(
        bool(self.model or self.model_config),
        "--model is required: a hub name such as bert-base-uncased or a "
        "local model directory.",
    )
    _require(
        not (self.model and self.model_config),
        f"--model={self.model!r} and --model_config="
        f"{self.model_config!r} are both set; fine-tune a pretrained "
        "--model or train --model_config from scratch, not both.",
    )
    _require(
        self.model_config is None
        or self.model_config == DEFAULT_MODEL_CONFIG
        or os.path.isfile(self.model_config),
        f"--model_config={self.model_config!r} is not a file; expected "
        "a Hugging Face config.json of an encoder-decoder or "
        f"{DEFAULT_MODEL_CONFIG!r}.",
    )
    _check_choices(self)
    _require(
        0.0 <= self.dropout < 1.0,
        f"--dropout={self.dropout} must be in [0, 1).",
    )
    _require(self.l2 >= 0.0, f"--l2={self.l2} must be non-negative.")
    _require(self.l1 >= 0.0, f"--l1={self.l1} must be non-negative.")
    for name in ("hidden_dropout", "attention_dropout"):
      rate = getattr(self, name)
      _require(
          rate is None or 0.0 <= rate < 1.0,
          f"--{name}={rate} must be in [0, 1).",
      )
    for name in ("backbone_l2", "backbone_l1", "l2_sp"):
      _require(
          getattr(self, name) >= 0.0,
          f"--{name}={getattr(self, name)} must be non-negative.",
      )
    _require(
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
class TrainConfig:
  """Optimization, learning-rate schedule, callbacks and hardware."""

  epochs: int = setting(3, "Passes over the training data.")
  learning_rate: float = setting(
      5e-5, "Peak learning rate, reached at the end of warmup."
  )
  schedule: str = setting(
      "linear", "Learning-rate decay after warmup.", choices=SCHEDULES
  )
  warmup_ratio: float = setting(
      0.1, "Warmup as a fraction of all training steps."
  )
  warmup_steps: Optional[int] = setting(
      None, "Warmup in steps; overrides --warmup_ratio."
  )
  polynomial_power: float = setting(2.0, "Exponent of --schedule=polynomial.")
  min_lr_ratio: float = setting(
      0.0, "Floor of the decayed learning rate, as a fraction of the peak."
  )
  restart_cycles: int = setting(
      2, "Cosine cycles of --schedule=cosine_restarts."
  )
  step_decay_factor: float = setting(
      0.5,
      "--schedule=step: what the learning rate is multiplied by every "
      "--step_decay_every_steps steps.",
  )
  step_decay_every_steps: int = setting(
      0,
      "--schedule=step: steps between two decays of the learning rate "
      "(0: one epoch).",
  )
  layerwise_lr_decay: float = setting(
      1.0,
      "The top encoder layer learns at --learning_rate, each lower layer "
      "(and the embeddings) at this factor times the rate of the layer above "
      "(e.g. 0.9); 1 turns it off.",
  )
  freeze_embeddings: bool = setting(
      False, "Keep the embeddings at their pretrained values."
  )
  freeze_layers: int = setting(
      0, "Keep the bottom N encoder layers at their pretrained values."
  )
  unfreeze_schedule: str = setting(
      "none",
      "gradual: train only the head (and pooler) in the first epoch, "
      "then unfreeze one more encoder layer per epoch from the top "
      "(embeddings last); none: train everything not frozen from the start.",
      choices=UNFREEZE_SCHEDULES,
  )
  label_smoothing: float = setting(
      0.0,
      "Label smoothing of the cross-entropy: the mass moved from the "
      "true label to all labels uniformly (e.g. 0.1).",
  )
  grad_accum_steps: int = setting(
      1,
      "Split each batch into N micro-batches whose gradients are summed "
      "before one update: the same update with less memory.",
  )
  jit_compile: bool = setting(False, "XLA-compile the training step.")
  ema_decay: float = setting(
      0.0,
      "Keep an exponential moving average of the weights with this decay "
      "(e.g. 0.999), validate and export it; 0 turns it off.",
  )
  weight_decay: float = setting(
      0.01, "AdamW decoupled weight decay (LayerNorm and biases excluded)."
  )
  clip_norm: float = setting(
      1.0, "Global gradient-norm clipping; 0 turns it off."
  )
  adam_epsilon: float = setting(1e-6, "AdamW epsilon.")
  early_stopping_metric: str = setting(
      "auto",
      "Validation metric that early stopping and the best checkpoint "
      f"watch; auto: the task's own ({_default_monitors()}).",
      choices=early_stopping_metrics,
  )
  early_stopping_patience: int = setting(
      2,
      "Epochs without improvement before stopping; 0 turns early stopping "
      "off.",
  )
  early_stopping_min_delta: float = setting(
      0.0, "Smallest change of the metric that counts as improvement."
  )
  restore_best_weights: bool = setting(
      True,
      "Keep the weights of the best validation epoch, not those of the "
      "last epoch.",
  )
  seed: int = setting(
      42,
      "Random seed of the head's initial weights, dropout and the "
      "shuffle order.",
  )
  distribution: str = setting(
      "auto",
      "tf.distribute strategy: auto mirrors over several GPUs; "
      "multi_worker trains on the cluster described by the TF_CONFIG "
      "environment variable; tpu on --tpu.",
      choices=DISTRIBUTIONS,
  )
  tpu: Optional[str] = setting(
      None,
      "The TPU of --distribution=tpu: its name, a grpc:// address, or "
      "'local' on a TPU VM.",
  )
  save_every_steps: int = setting(
      0,
      "Back up the run every N steps so that a killed run resumes when "
      "started again (0: every epoch).",
  )
  log_every_steps: int = setting(
      50, "Write the loss and learning rate to TensorBoard every N steps."
  )
  steps_per_execution: int = setting(
      1, "Training steps run per call into the TensorFlow runtime."
  )
  precision: str = setting(
      "auto",
      "fp32; bf16 (mixed bfloat16 compute, float32 weights); fp16 "
      "(mixed float16 with loss scaling); auto: bf16 where the hardware "
      "computes in bfloat16 natively (CPUs with AMX or AVX512-BF16, GPUs of "
      "compute capability 8.0 or newer), else fp32.",
      choices=PRECISIONS,
  )
  export: bool = setting(True, "Export a SavedModel when training ends.")

  def __post_init__(self):
    _check_choices(self)
    _require(self.epochs >= 1, f"--epochs={self.epochs} must be at least 1.")
    _require(
        0.0 < self.learning_rate < 1.0,
        f"--learning_rate={self.learning_rate} must be in (0, 1); "
        "fine-tuning typically uses 1e-5 to 1e-4.",
    )
    _require(
        0.0 <= self.warmup_ratio < 1.0,
        f"--warmup_ratio={self.warmup_ratio} must be in [0, 1).",
    )
    _require(
        self.warmup_steps is None or self.warmup_steps >= 0,
        f"--warmup_steps={self.warmup_steps} must be non-negative.",
    )
    _require(
        0.0 <= self.min_lr_ratio < 1.0,
        f"--min_lr_ratio={self.min_lr_ratio} must be in [0, 1).",
    )
    _require(
        self.restart_cycles >= 1,
        f"--restart_cycles={self.restart_cycles} must be at least 1.",
    )
    _require(
        0.0 < self.step_decay_factor <= 1.0,
        f"--step_decay_factor={self.step_decay_factor} must be in (0, 1].",
    )
    _require(
        self.step_decay_every_steps >= 0,
        f"--step_decay_every_steps={self.step_decay_every_steps} must be "
        "non-negative (0 = every epoch).",
    )
    _require(
        0.0 < self.layerwise_lr_decay <= 1.0,
        f"--layerwise_lr_decay={self.layerwise_lr_decay} must be in "
        "(0, 1]; 0.8-0.95 is usual, 1.0 turns it off.",
    )
    _require(
        self.freeze_layers >= 0,
        f"--freeze_layers={self.freeze_layers} must be non-negative.",
    )
    _require(
        0.0 <= self.label_smoothing < 1.0,
        f"--label_smoothing={self.label_smoothing} must be in [0, 1).",
    )
    _require(
        self.grad_accum_steps >= 1,
        f"--grad_accum_steps={self.grad_accum_steps} must be at least 1.",
    )
    _require(
        0.0 <= self.ema_decay < 1.0,
        f"--ema_decay={self.ema_decay} must be in [0, 1); 0.999 is usual, "
        "0 turns it off.",
    )
    _require(
        self.weight_decay >= 0.0,
        f"--weight_decay={self.weight_decay} must be non-negative.",
    )
    _require(
        self.clip_norm >= 0.0,
        f"--clip_norm={self.clip_norm} must be non-negative (0 = off).",
    )
    _require(
        self.early_stopping_patience >= 0,
        f"--early_stopping_patience={self.early_stopping_patience} must "
        "be non-negative (0 = off).",
    )
    _require(
        self.distribution != "tpu" or bool(self.tpu),
        "--distribution=tpu needs --tpu: the TPU's name, its grpc:// "
        "address, or 'local' on a TPU VM.",
    )
    _require(
        not self.tpu or self.distribution == "tpu",
        f"--tpu={self.tpu!r} conflicts with "
        f"--distribution={self.distribution!r}; pass "
        "--distribution=tpu to train on the TPU, or drop --tpu.",
    )
    _require(
        self.save_every_steps >= 0,
        f"--save_every_steps={self.save_every_steps} must be "
        "non-negative (0 = every epoch).",
    )
    _require(
        self.log_every_steps >= 1,
        f"--log_every_steps={self.log_every_steps} must be at least 1.",
    )
    _require(
        self.steps_per_execution >= 1,
        f"--steps_per_execution={self.steps_per_execution} must be at "
        "least 1.",
    )


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """What the model predicts, and the options of each task."""

  task: str = setting(
      "classification",
      "What the model predicts: one label per text or pair "
      "(classification), a number (regression), any number of labels "
      "(multi_label), a tag per word (token_classification), the span of a "
      "context that answers a question (question_answering), or a "
      "translation by an encoder-decoder (translation).",
      choices=tasks.names,
  )
  regression_loss: str = setting(
      "mse", "Loss of --task=regression.", choices=REGRESSION_LOSSES
  )
  huber_delta: float = setting(
      1.0, "Where --regression_loss=huber turns from quadratic to linear."
  )
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
  )
  tune_threshold: bool = setting(
      True,
      "--task=multi_label: pick the threshold with the best validation "
      "micro-F1 and save it with the model and its export.",
  )
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
      30, "--task=question_answering: longest answer, in tokens."
  )
  n_best_size: int = setting(
      20, "--task=question_answering: start and end candidates per window."
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
  )
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
      "--task=translation: beam width of evaluation and prediction (1: "
      "greedy decoding).",
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
  )
  no_repeat_ngram_size: int = setting(
      0,
      "--task=translation: evaluation and prediction never repeat an "
      "n-gram of this size within a translation (e.g. 3); 0 turns it off. "
      "The SavedModel decodes without it.",
  )

  def __post_init__(self):
    _check_choices(self)
    _require(
        self.huber_delta > 0.0,
        f"--huber_delta={self.huber_delta} must be positive.",
    )
    _require(
        0.0 < self.threshold < 1.0,
        f"--threshold={self.threshold} must be in (0, 1).",
    )
    _require(
        self.tagging_scheme in TAGGING_SCHEMES,
        f"--tagging_scheme={self.tagging_scheme!r} is not a tagging "
        f"scheme this toolkit knows; use one of "
        f"{', '.join(TAGGING_SCHEMES)}.",
    )
    for name in (
        "doc_stride",
        "max_question_length",
        "max_answer_length",
        "n_best_size",
    ):
      _require(
          getattr(self, name) >= 1,
          f"--{name}={getattr(self, name)} must be at least 1.",
      )
    _require(
        self.question_column != self.context_column,
        f"--question_column and --context_column are both "
        f"{self.question_column!r}; they must be different columns.",
    )
    _require(
        self.null_score_threshold is None or self.allow_no_answer,
        "--null_score_threshold is for models that may answer nothing; "
        "set --allow_no_answer too.",
    )
    _require(self.label_delimiter != "", "--label_delimiter must not be empty.")
    _require(
        not (self.label_delimiter and self.label_columns),
        "--label_delimiter and --label_columns are both set; multi-label "
        "data has either one column of delimited labels or one 0/1 "
        "column per label.",
    )
    for name in ("max_source_length", "max_target_length"):
      _require(
          2 <= getattr(self, name) <= 8192,
          f"--{name}={getattr(self, name)} must be between 2 and 8192.",
      )
    _require(
        self.num_beams >= 1,
        f"--num_beams={self.num_beams} must be at least 1 (1: greedy).",
    )
    _require(
        self.no_repeat_ngram_size >= 0,
        f"--no_repeat_ngram_size={self.no_repeat_ngram_size} must be "
        "non-negative (0 = off).",
    )
    _require(
        self.vocab_size >= 16,
        f"--vocab_size={self.vocab_size} must be at least 16.",
    )
    _require(
        self.source_column != self.target_column,
        f"--source_column and --target_column are both "
        f"{self.source_column!r}; they must be two columns.",
    )

  @property
  def label_column_names(self) -> list[str]:
    return [
        name.strip()
        for name in (self.label_columns or "").split(",")
        if name.strip()
    ]


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs: where it writes, and the groups."""

  model_dir: str = setting(
      dataclasses.MISSING,
      "Where the run writes its checkpoints, TensorBoard "
      "logs, results, config and SavedModels.",
  )
  data: DataConfig
  model: ModelConfig
  train: TrainConfig = TrainConfig()
  export_dir: Optional[str] = setting(
      None,
      "Base directory of exported SavedModels (default: "
      "<model_dir>/export).",
  )
  task: TaskConfig = TaskConfig()

  def __post_init__(self):
    _require(bool(self.model_dir), "--model_dir is required.")
    _require(
        bool(self.data.train_file or self.data.tfds_name),
        "No training data: set --train_file (CSV, TSV or JSONL) or "
        "--tfds_name.",
    )
    if self.task.task == "translation":
      _check_translation_run(self)
    elif self.model.model_config:
      raise ValueError(
          f"--model_config={self.model.model_config!r} trains "
          "a translator from scratch; it needs "
          "--task=translation."
      )
    monitors = tasks.monitors(self.task.task)
    metric = self.train.early_stopping_metric
    if metric == "auto":
      # Frozen: the resolved metric is written in place once, here, so the
      # saved config.json names the metric that was actually watched.
      object.__setattr__(
          self,
          "train",
          dataclasses.replace(self.train, early_stopping_metric=monitors[0]),
      )
    else:
      _require(
          metric in monitors,
          f"--early_stopping_metric={metric!r} is not reported by "
          f"--task={self.task.task}; use one of {', '.join(monitors)}.",
      )

  @property
  def resolved_export_dir(self) -> str:
    return self.export_dir or os.path.join(self.model_dir, "export")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> RunConfig:
    return cls(
        model_dir=values["model_dir"],
        export_dir=values.get("export_dir"),
        data=_from_dict(DataConfig, values.get("data", {})),
        model=_from_dict(ModelConfig, values.get("model", {})),
        train=_from_dict(TrainConfig, values.get("train", {})),
        task=_from_dict(TaskConfig, values.get("task", {})),
    )


# Encoder-classifier levers that have no meaning for an encoder-decoder.
_NOT_FOR_TRANSLATION = (
    ("train", "grad_accum_steps", 1),
    ("train", "layerwise_lr_decay", 1.0),
    ("train", "freeze_layers", 0),
    ("train", "freeze_embeddings", False),
    ("train", "unfreeze_schedule", "none"),
    ("model", "backbone_l1", 0.0),
    ("model", "backbone_l2", 0.0),
    ("model", "l2_sp", 0.0),
    ("data", "text_pair_column", None),
)


def _check_translation_run(config: RunConfig) -> None:
  """Refuses options of classifier fine-tuning that translation ignores."""
  for part, name, default in _NOT_FOR_TRANSLATION:
    value = getattr(getattr(config, part), name)
    _require(
        value == default,
        f"--{name}={value!r} is not supported with --task=translation "
        f"(leave it at {default!r}).",
    )
  data, task = config.data, config.task
  _require(
      not data.tfds_name or bool(task.source_language and task.target_language),
      f"--tfds_name={data.tfds_name!r} with --task=translation needs "
      "--source_language and --target_language (e.g. en and de).",
  )


def _from_dict(cls, values: dict[str, Any]):
  known = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(
        f"Unknown {cls.__name__} fields in {CONFIG_FILENAME}: "
        f"{', '.join(unknown)}."
    )
  return cls(**values)


def write_config(config: RunConfig, directory: str) -> str:
  """Writes `config` as JSON into `directory` atomically; returns the path."""
  from tf_finetune import io_utils  # Local: keeps config importable alone.

  path = os.path.join(directory, CONFIG_FILENAME)
  io_utils.write_text_atomically(path, config.to_json() + "\n")
  return path


def read_config(model_dir: str) -> RunConfig:
  """Reads the config a training run wrote into `model_dir`."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not os.path.isfile(path):
    raise ValueError(
        f"--model_dir={model_dir!r} has no {CONFIG_FILENAME}; "
        "is it the directory of a finished training run?"
    )
  with open(path, encoding="utf-8") as f:
    return RunConfig.from_dict(json.load(f))
