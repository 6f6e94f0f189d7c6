"""Typed, frozen run configuration.

Configuration flows one way: flag defaults, then `--flagfile`, then explicit
flags are turned into these dataclasses by the binaries; the library only ever
sees the dataclasses. Every field is validated in `__post_init__`, with errors
that name the flag a user would change. A run writes its resolved config to
`<model_dir>/config.json` so that evaluation, prediction and export rebuild
exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

SCHEDULES = ("linear", "cosine", "polynomial", "constant", "inverse_sqrt",
             "cosine_restarts", "step")
POOLINGS = ("pooler", "cls", "mean")
DISTRIBUTIONS = ("auto", "mirrored", "one_device", "multi_worker", "tpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
UNFREEZE_SCHEDULES = ("none", "gradual")
# The validation metrics each task's model reports, its default first.
# Each task module (tf_finetune/tasks/) computes the metrics named here.
TASK_MONITORS = {
    "classification": ("val_accuracy", "val_loss", "val_macro_f1"),
    "regression": ("val_pearson", "val_loss"),
    "multi_label": ("val_micro_f1", "val_loss", "val_macro_f1"),
    "token_classification": ("val_loss", "val_accuracy"),
    "question_answering": ("val_loss", "val_position_accuracy"),
    "translation": ("val_loss", "val_token_accuracy"),
}
TASKS = tuple(TASK_MONITORS)
# "auto" picks the task's default.
EARLY_STOPPING_METRICS = ("auto",) + tuple(dict.fromkeys(
    metric for metrics in TASK_MONITORS.values() for metric in metrics))
REGRESSION_LOSSES = ("mse", "huber")
TAGGING_SCHEMES = ("IOB1", "IOB2", "IOBES")
# --model_config value naming the built-in small from-scratch translator.
DEFAULT_MODEL_CONFIG = "default"

CONFIG_FILENAME = "config.json"


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the examples come from and how they become batches.

  Attributes:
    train_file: CSV, TSV or JSONL file of training examples.
    validation_file: Same format; used for early stopping and checkpoints.
    test_file: Same format; evaluated once at the end of training.
    tfds_name: A TensorFlow Datasets name (e.g. "glue/sst2") used instead of
      the files.
    tfds_data_dir: Where TFDS keeps its prepared data.
    tfds_train_split, tfds_validation_split, tfds_test_split: TFDS split names.
    text_column: Column (or TFDS feature) holding the text.
    text_pair_column: Column holding the second text of a sentence pair.
    label_column: Column holding the label (string or integer).
    max_seq_length: Tokens per example including [CLS] and [SEP].
    batch_size: Examples per replica per step.
    bucketing: Batch examples of similar length together (less padding).
    shuffle_buffer: Examples held by the shuffle buffer.
    train_target_file, validation_target_file, test_target_file: translation
      from plain line-aligned files: the target-language lines, the
      matching `*_file` holding the source-language lines.
  """

  train_file: Optional[str] = None
  validation_file: Optional[str] = None
  test_file: Optional[str] = None
  tfds_name: Optional[str] = None
  tfds_data_dir: Optional[str] = None
  tfds_train_split: str = "train"
  tfds_validation_split: Optional[str] = "validation"
  tfds_test_split: Optional[str] = None
  text_column: str = "text"
  text_pair_column: Optional[str] = None
  label_column: str = "label"
  max_seq_length: int = 128
  batch_size: int = 32
  bucketing: bool = True
  shuffle_buffer: int = 100_000
  train_target_file: Optional[str] = None
  validation_target_file: Optional[str] = None
  test_target_file: Optional[str] = None

  def __post_init__(self):
    for split in ("train", "validation", "test"):
      _require(not getattr(self, f"{split}_target_file") or
               bool(getattr(self, f"{split}_file")),
               f"--{split}_target_file needs --{split}_file: the source-"
               "language lines that its lines translate.")
    _require(not (self.train_file and self.tfds_name),
             "--train_file and --tfds_name are both set; give one source of "
             "training data.")
    _require(3 <= self.max_seq_length <= 8192,
             f"--max_seq_length={self.max_seq_length} must be between 3 and "
             "8192 (room for [CLS], a token and [SEP]).")
    _require(self.batch_size >= 1,
             f"--batch_size={self.batch_size} must be at least 1.")
    _require(bool(self.text_column), "--text_column must not be empty.")
    _require(bool(self.label_column), "--label_column must not be empty.")
    _require(self.text_pair_column != self.text_column,
             f"--text_pair_column={self.text_pair_column!r} is the same column "
             "as --text_column; a pair needs two different columns.")
    _require(self.shuffle_buffer >= 1,
             f"--shuffle_buffer={self.shuffle_buffer} must be at least 1.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The pretrained backbone and the classification head.

  Attributes:
    model: A Hugging Face hub name ("bert-base-uncased") or a local directory
      holding config.json, weights and tokenizer files.
    pooling: How the sequence becomes one vector: the backbone's "pooler",
      the "cls" token's hidden state, or the "mean" of unpadded tokens.
    dropout: Dropout rate before the classification layer.
    l2: L2 penalty on the classification layer's kernel.
    l1: L1 penalty on the classification layer's kernel.
    allow_pickle_weights: Permit loading PyTorch `.bin` (pickle) weights.
    hidden_dropout: Replaces the pretrained config's hidden dropout rate.
    attention_dropout: Replaces the pretrained config's attention dropout.
    backbone_l2: L2 penalty on the encoder's kernels (not LayerNorm, biases
      or embeddings unless `regularize_embeddings`).
    backbone_l1: L1 penalty on the same variables.
    l2_sp: L2-SP penalty: squared distance of the same variables from their
      pretrained values (Li et al., 2018), instead of from zero.
    regularize_embeddings: Include the embedding tables in the penalties.
    model_config: Translation from scratch: a Hugging Face config.json of an
      encoder-decoder (e.g. a small T5) with random weights, or "default"
      for the built-in small T5, instead of a pretrained --model.
  """

  model: str = ""
  pooling: str = "pooler"
  dropout: float = 0.1
  l2: float = 0.0
  l1: float = 0.0
  allow_pickle_weights: bool = False
  hidden_dropout: Optional[float] = None
  attention_dropout: Optional[float] = None
  backbone_l2: float = 0.0
  backbone_l1: float = 0.0
  l2_sp: float = 0.0
  regularize_embeddings: bool = False
  model_config: Optional[str] = None

  def __post_init__(self):
    _require(bool(self.model or self.model_config),
             "--model is required: a hub name such as bert-base-uncased or a "
             "local model directory.")
    _require(not (self.model and self.model_config),
             f"--model={self.model!r} and --model_config="
             f"{self.model_config!r} are both set; fine-tune a pretrained "
             "--model or train --model_config from scratch, not both.")
    _require(self.model_config is None or
             self.model_config == DEFAULT_MODEL_CONFIG or
             os.path.isfile(self.model_config),
             f"--model_config={self.model_config!r} is not a file; expected "
             "a Hugging Face config.json of an encoder-decoder or "
             f"{DEFAULT_MODEL_CONFIG!r}.")
    _require(self.pooling in POOLINGS,
             f"--pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}.")
    _require(0.0 <= self.dropout < 1.0,
             f"--dropout={self.dropout} must be in [0, 1).")
    _require(self.l2 >= 0.0, f"--l2={self.l2} must be non-negative.")
    _require(self.l1 >= 0.0, f"--l1={self.l1} must be non-negative.")
    for name in ("hidden_dropout", "attention_dropout"):
      rate = getattr(self, name)
      _require(rate is None or 0.0 <= rate < 1.0,
               f"--{name}={rate} must be in [0, 1).")
    for name in ("backbone_l2", "backbone_l1", "l2_sp"):
      _require(getattr(self, name) >= 0.0,
               f"--{name}={getattr(self, name)} must be non-negative.")
    _require(not (self.l2_sp and self.backbone_l2),
             "--l2_sp and --backbone_l2 both pull the encoder's weights, one "
             "towards the pretrained values and one towards zero; use one.")

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
  """Optimization, callbacks and hardware.

  Attributes:
    epochs: Passes over the training data.
    learning_rate: Peak learning rate, reached at the end of warmup.
    schedule: Decay after warmup: linear, cosine, polynomial, constant,
      inverse_sqrt, cosine_restarts or step (see optimization.py).
    warmup_ratio: Warmup as a fraction of all training steps.
    warmup_steps: Warmup in steps; overrides warmup_ratio when set.
    polynomial_power: Exponent of the polynomial schedule.
    min_lr_ratio: Floor of the decayed rate as a fraction of the peak.
    restart_cycles: Cosine cycles of the cosine_restarts schedule.
    step_decay_factor: What the step schedule multiplies the rate by at
      each interval.
    step_decay_every_steps: The step schedule's interval (0: one epoch).
    layerwise_lr_decay: The top encoder layer learns at the base rate, each
      lower layer (and the embeddings) at this factor times the one above;
      1.0 turns it off.
    freeze_embeddings: Keep the embedding tables at their pretrained values.
    freeze_layers: Keep the bottom N encoder layers at pretrained values.
    unfreeze_schedule: "gradual" trains only the head (and pooler) in the
      first epoch and unfreezes one more encoder layer per epoch from the top
      (embeddings last); "none" trains everything not frozen from the start.
    label_smoothing: Mass moved from the true label to all labels uniformly.
    grad_accum_steps: Split each batch into this many micro-batches whose
      gradients are summed before one update (same update, less memory).
    jit_compile: XLA-compile the training step.
    ema_decay: Keep an exponential moving average of the weights with this
      decay, validate with it and export it; 0 turns it off.
    weight_decay: Decoupled AdamW weight decay (not on LayerNorm or biases).
    clip_norm: Global-norm gradient clipping; 0 disables it.
    adam_epsilon: AdamW epsilon.
    early_stopping_metric: Validation metric that early stopping and the best
      checkpoint watch; "auto" is the task's default (see TASK_MONITORS).
    early_stopping_patience: Epochs without improvement before stopping;
      0 disables early stopping.
    early_stopping_min_delta: Smallest change that counts as improvement.
    restore_best_weights: Keep the weights of the best validation epoch
      (else those of the last epoch).
    seed: Seeds weights of the head, dropout and the shuffle order.
    distribution: auto, mirrored, one_device, multi_worker
      (MultiWorkerMirroredStrategy over the cluster in the TF_CONFIG
      environment variable) or tpu (TPUStrategy on `tpu`).
    tpu: The TPU of --distribution=tpu: a name, a grpc:// address, or
      "local" for a TPU VM.
    save_every_steps: Back up the run every N steps (0: every epoch) so a
      killed run resumes when started again.
    log_every_steps: Write loss and learning rate to TensorBoard every N steps.
    steps_per_execution: Training steps run per call into the TF runtime.
    precision: fp32, bf16 (mixed bfloat16 compute, float32 weights), fp16
      (mixed float16 with dynamic loss scaling), or auto: bf16 where the
      hardware computes in bfloat16 natively (CPUs with AMX or AVX512-BF16,
      GPUs of compute capability 8.0 or newer), else fp32.
    export: Export a SavedModel at the end of training.
  """

  epochs: int = 3
  learning_rate: float = 5e-5
  schedule: str = "linear"
  warmup_ratio: float = 0.1
  warmup_steps: Optional[int] = None
  polynomial_power: float = 2.0
  min_lr_ratio: float = 0.0
  restart_cycles: int = 2
  step_decay_factor: float = 0.5
  step_decay_every_steps: int = 0
  layerwise_lr_decay: float = 1.0
  freeze_embeddings: bool = False
  freeze_layers: int = 0
  unfreeze_schedule: str = "none"
  label_smoothing: float = 0.0
  grad_accum_steps: int = 1
  jit_compile: bool = False
  ema_decay: float = 0.0
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  adam_epsilon: float = 1e-6
  early_stopping_metric: str = "auto"
  early_stopping_patience: int = 2
  early_stopping_min_delta: float = 0.0
  restore_best_weights: bool = True
  seed: int = 42
  distribution: str = "auto"
  tpu: Optional[str] = None
  save_every_steps: int = 0
  log_every_steps: int = 50
  steps_per_execution: int = 1
  precision: str = "auto"
  export: bool = True

  def __post_init__(self):
    _require(self.epochs >= 1, f"--epochs={self.epochs} must be at least 1.")
    _require(0.0 < self.learning_rate < 1.0,
             f"--learning_rate={self.learning_rate} must be in (0, 1); "
             "fine-tuning typically uses 1e-5 to 1e-4.")
    _require(self.schedule in SCHEDULES,
             f"--schedule={self.schedule!r} is not one of "
             f"{', '.join(SCHEDULES)}.")
    _require(0.0 <= self.warmup_ratio < 1.0,
             f"--warmup_ratio={self.warmup_ratio} must be in [0, 1).")
    _require(self.warmup_steps is None or self.warmup_steps >= 0,
             f"--warmup_steps={self.warmup_steps} must be non-negative.")
    _require(0.0 <= self.min_lr_ratio < 1.0,
             f"--min_lr_ratio={self.min_lr_ratio} must be in [0, 1).")
    _require(self.restart_cycles >= 1,
             f"--restart_cycles={self.restart_cycles} must be at least 1.")
    _require(0.0 < self.step_decay_factor <= 1.0,
             f"--step_decay_factor={self.step_decay_factor} must be in (0, 1].")
    _require(self.step_decay_every_steps >= 0,
             f"--step_decay_every_steps={self.step_decay_every_steps} must be "
             "non-negative (0 = every epoch).")
    _require(0.0 < self.layerwise_lr_decay <= 1.0,
             f"--layerwise_lr_decay={self.layerwise_lr_decay} must be in "
             "(0, 1]; 0.8-0.95 is usual, 1.0 turns it off.")
    _require(self.freeze_layers >= 0,
             f"--freeze_layers={self.freeze_layers} must be non-negative.")
    _require(self.unfreeze_schedule in UNFREEZE_SCHEDULES,
             f"--unfreeze_schedule={self.unfreeze_schedule!r} is not one of "
             f"{', '.join(UNFREEZE_SCHEDULES)}.")
    _require(0.0 <= self.label_smoothing < 1.0,
             f"--label_smoothing={self.label_smoothing} must be in [0, 1).")
    _require(self.grad_accum_steps >= 1,
             f"--grad_accum_steps={self.grad_accum_steps} must be at least 1.")
    _require(0.0 <= self.ema_decay < 1.0,
             f"--ema_decay={self.ema_decay} must be in [0, 1); 0.999 is usual, "
             "0 turns it off.")
    _require(self.weight_decay >= 0.0,
             f"--weight_decay={self.weight_decay} must be non-negative.")
    _require(self.clip_norm >= 0.0,
             f"--clip_norm={self.clip_norm} must be non-negative (0 = off).")
    _require(self.early_stopping_metric in EARLY_STOPPING_METRICS,
             f"--early_stopping_metric={self.early_stopping_metric!r} is not "
             f"one of {', '.join(EARLY_STOPPING_METRICS)}.")
    _require(self.early_stopping_patience >= 0,
             f"--early_stopping_patience={self.early_stopping_patience} must "
             "be non-negative (0 = off).")
    _require(self.distribution in DISTRIBUTIONS,
             f"--distribution={self.distribution!r} is not one of "
             f"{', '.join(DISTRIBUTIONS)}.")
    _require(self.distribution != "tpu" or bool(self.tpu),
             "--distribution=tpu needs --tpu: the TPU's name, its grpc:// "
             "address, or 'local' on a TPU VM.")
    _require(not self.tpu or self.distribution == "tpu",
             f"--tpu={self.tpu!r} conflicts with "
             f"--distribution={self.distribution!r}; pass "
             "--distribution=tpu to train on the TPU, or drop --tpu.")
    _require(self.save_every_steps >= 0,
             f"--save_every_steps={self.save_every_steps} must be "
             "non-negative (0 = every epoch).")
    _require(self.log_every_steps >= 1,
             f"--log_every_steps={self.log_every_steps} must be at least 1.")
    _require(self.steps_per_execution >= 1,
             f"--steps_per_execution={self.steps_per_execution} must be at "
             "least 1.")
    _require(self.precision in PRECISIONS,
             f"--precision={self.precision!r} is not one of "
             f"{', '.join(PRECISIONS)}.")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """What the model predicts, and the task's own options.

  Attributes:
    task: classification (one label per text or pair), regression (a
      number), multi_label (any number of labels), token_classification (a
      tag per word), question_answering (a span of a context), translation
      (a text per text, by an encoder-decoder).
    regression_loss: mse or huber.
    huber_delta: Where the Huber loss turns from quadratic to linear.
    label_delimiter: multi_label: separates the labels within the label
      column ("sports|politics").
    label_columns: multi_label: instead of one label column, one 0/1 column
      per label (comma-separated names).
    threshold: multi_label: a label is predicted when its probability is at
      least this.
    tune_threshold: multi_label: choose the threshold that maximizes micro-F1
      on the validation data (saved with the model and the export).
    tokens_column: token_classification, JSONL: the list of words.
    tags_column: token_classification, JSONL: the list of tags.
    tag_column_index: token_classification, CoNLL: the column of the tag
      (-1: the last; the word is always the first).
    tagging_scheme: token_classification: IOB1, IOB2 or IOBES, for
      entity-level metrics.
    question_column: question_answering, JSONL/CSV: the question.
    context_column: question_answering, JSONL/CSV: the passage holding the
      answer.
    doc_stride: question_answering: a context longer than one window is
      read in windows, each starting this many tokens after the previous.
    max_question_length: question_answering: tokens of the question kept
      (at most half the sequence).
    max_answer_length: question_answering: longest answer in tokens.
    n_best_size: question_answering: start and end candidates per window.
    allow_no_answer: question_answering: the model may answer nothing
      (SQuAD v2.0: unanswerable questions).
    null_score_threshold: question_answering with allow_no_answer: answer
      nothing when the no-answer score exceeds the best span's by more than
      this; None: chosen on the validation data for the best F1.
    source_column, target_column: translation: columns (JSONL fields) of
      the source text and its translation.
    source_language, target_language: translation from TFDS: the language
      codes of the data set's translation feature ("en", "de").
    source_prefix: translation: text put before every source (T5's
      "translate English to German: ").
    max_source_length, max_target_length: translation: tokens per source
      and per target (end-of-sequence included); longer ones are cut.
      max_target_length also bounds generated translations.
    num_beams: translation: beam width of evaluation and prediction; 1 is
      greedy decoding.
    vocab_size: translation from scratch: pieces of the SentencePiece
      vocabulary trained on the training sources and targets.
    no_repeat_ngram_size: translation: evaluation and prediction never
      repeat an n-gram of this size within a translation; 0 turns it off.
      The export decodes without it.
    jit_generate: translation: XLA-compile generation in evaluation and
      prediction (faster per batch once compiled; each new batch shape
      compiles again, so it pays off on large sets only).
  """

  task: str = "classification"
  regression_loss: str = "mse"
  huber_delta: float = 1.0
  label_delimiter: Optional[str] = None
  label_columns: Optional[str] = None
  threshold: float = 0.5
  tune_threshold: bool = True
  tokens_column: str = "tokens"
  tags_column: str = "tags"
  tag_column_index: int = -1
  tagging_scheme: str = "IOB2"
  question_column: str = "question"
  context_column: str = "context"
  doc_stride: int = 128
  max_question_length: int = 64
  max_answer_length: int = 30
  n_best_size: int = 20
  allow_no_answer: bool = False
  null_score_threshold: Optional[float] = None
  source_column: str = "source"
  target_column: str = "target"
  source_language: Optional[str] = None
  target_language: Optional[str] = None
  source_prefix: str = ""
  max_source_length: int = 128
  max_target_length: int = 128
  num_beams: int = 1
  vocab_size: int = 8000
  jit_generate: bool = False
  no_repeat_ngram_size: int = 0

  def __post_init__(self):
    _require(self.task in TASKS,
             f"--task={self.task!r} is not one of {', '.join(TASKS)}.")
    _require(self.regression_loss in REGRESSION_LOSSES,
             f"--regression_loss={self.regression_loss!r} is not one of "
             f"{', '.join(REGRESSION_LOSSES)}.")
    _require(self.huber_delta > 0.0,
             f"--huber_delta={self.huber_delta} must be positive.")
    _require(0.0 < self.threshold < 1.0,
             f"--threshold={self.threshold} must be in (0, 1).")
    _require(self.tagging_scheme in TAGGING_SCHEMES,
             f"--tagging_scheme={self.tagging_scheme!r} is not a tagging "
             f"scheme this toolkit knows; use one of "
             f"{', '.join(TAGGING_SCHEMES)}.")
    for name in ("doc_stride", "max_question_length", "max_answer_length",
                 "n_best_size"):
      _require(getattr(self, name) >= 1,
               f"--{name}={getattr(self, name)} must be at least 1.")
    _require(self.question_column != self.context_column,
             f"--question_column and --context_column are both "
             f"{self.question_column!r}; they must be different columns.")
    _require(self.null_score_threshold is None or self.allow_no_answer,
             "--null_score_threshold is for models that may answer nothing; "
             "set --allow_no_answer too.")
    _require(self.label_delimiter != "",
             "--label_delimiter must not be empty.")
    _require(not (self.label_delimiter and self.label_columns),
             "--label_delimiter and --label_columns are both set; multi-label "
             "data has either one column of delimited labels or one 0/1 "
             "column per label.")
    for name in ("max_source_length", "max_target_length"):
      _require(2 <= getattr(self, name) <= 8192,
               f"--{name}={getattr(self, name)} must be between 2 and 8192.")
    _require(self.num_beams >= 1,
             f"--num_beams={self.num_beams} must be at least 1 (1: greedy).")
    _require(self.no_repeat_ngram_size >= 0,
             f"--no_repeat_ngram_size={self.no_repeat_ngram_size} must be "
             "non-negative (0 = off).")
    _require(self.vocab_size >= 16,
             f"--vocab_size={self.vocab_size} must be at least 16.")
    _require(self.source_column != self.target_column,
             f"--source_column and --target_column are both "
             f"{self.source_column!r}; they must be two columns.")

  @property
  def label_column_names(self) -> list[str]:
    return [name.strip() for name in (self.label_columns or "").split(",")
            if name.strip()]


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs."""

  model_dir: str
  data: DataConfig
  model: ModelConfig
  train: TrainConfig = TrainConfig()
  export_dir: Optional[str] = None
  task: TaskConfig = TaskConfig()

  def __post_init__(self):
    _require(bool(self.model_dir), "--model_dir is required.")
    _require(bool(self.data.train_file or self.data.tfds_name),
             "No training data: set --train_file (CSV, TSV or JSONL) or "
             "--tfds_name.")
    if self.task.task == "translation":
      _check_translation_run(self)
    elif self.model.model_config:
      raise ValueError(f"--model_config={self.model.model_config!r} trains "
                       "a translator from scratch; it needs "
                       "--task=translation.")
    monitors = TASK_MONITORS[self.task.task]
    metric = self.train.early_stopping_metric
    if metric == "auto":
      # Frozen: the resolved metric is written in place once, here, so the
      # saved config.json names the metric that was actually watched.
      object.__setattr__(self, "train", dataclasses.replace(
          self.train, early_stopping_metric=monitors[0]))
    else:
      _require(metric in monitors,
               f"--early_stopping_metric={metric!r} is not reported by "
               f"--task={self.task.task}; use one of {', '.join(monitors)}.")

  @property
  def resolved_export_dir(self) -> str:
    return self.export_dir or os.path.join(self.model_dir, "export")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
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
    ("train", "grad_accum_steps", 1), ("train", "layerwise_lr_decay", 1.0),
    ("train", "freeze_layers", 0), ("train", "freeze_embeddings", False),
    ("train", "unfreeze_schedule", "none"), ("model", "backbone_l1", 0.0),
    ("model", "backbone_l2", 0.0), ("model", "l2_sp", 0.0),
    ("data", "text_pair_column", None))


def _check_translation_run(config: "RunConfig") -> None:
  """Refuses options of classifier fine-tuning that translation ignores."""
  for part, name, default in _NOT_FOR_TRANSLATION:
    value = getattr(getattr(config, part), name)
    _require(value == default,
             f"--{name}={value!r} is not supported with --task=translation "
             f"(leave it at {default!r}).")
  data, task = config.data, config.task
  _require(not data.tfds_name or bool(task.source_language and
                                      task.target_language),
           f"--tfds_name={data.tfds_name!r} with --task=translation needs "
           "--source_language and --target_language (e.g. en and de).")


def _from_dict(cls, values: dict[str, Any]):
  known = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"Unknown {cls.__name__} fields in {CONFIG_FILENAME}: "
                     f"{', '.join(unknown)}.")
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
    raise ValueError(f"--model_dir={model_dir!r} has no {CONFIG_FILENAME}; "
                     "is it the directory of a finished training run?")
  with open(path, encoding="utf-8") as f:
    return RunConfig.from_dict(json.load(f))
