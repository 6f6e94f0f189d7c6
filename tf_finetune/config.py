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

SCHEDULES = ("linear", "cosine", "polynomial", "constant")
POOLINGS = ("pooler", "cls", "mean")
DISTRIBUTIONS = ("auto", "mirrored", "one_device")
PRECISIONS = ("auto", "fp32", "bf16")
EARLY_STOPPING_METRICS = ("val_loss", "val_accuracy", "val_macro_f1")

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

  def __post_init__(self):
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
  """

  model: str = ""
  pooling: str = "pooler"
  dropout: float = 0.1
  l2: float = 0.0
  l1: float = 0.0
  allow_pickle_weights: bool = False

  def __post_init__(self):
    _require(bool(self.model),
             "--model is required: a hub name such as bert-base-uncased or a "
             "local model directory.")
    _require(self.pooling in POOLINGS,
             f"--pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}.")
    _require(0.0 <= self.dropout < 1.0,
             f"--dropout={self.dropout} must be in [0, 1).")
    _require(self.l2 >= 0.0, f"--l2={self.l2} must be non-negative.")
    _require(self.l1 >= 0.0, f"--l1={self.l1} must be non-negative.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimization, callbacks and hardware.

  Attributes:
    epochs: Passes over the training data.
    learning_rate: Peak learning rate, reached at the end of warmup.
    schedule: Decay after warmup: linear, cosine, polynomial or constant.
    warmup_ratio: Warmup as a fraction of all training steps.
    warmup_steps: Warmup in steps; overrides warmup_ratio when set.
    polynomial_power: Exponent of the polynomial schedule.
    weight_decay: Decoupled AdamW weight decay (not on LayerNorm or biases).
    clip_norm: Global-norm gradient clipping; 0 disables it.
    adam_epsilon: AdamW epsilon.
    early_stopping_metric: Validation metric that early stopping and the best
      checkpoint watch.
    early_stopping_patience: Epochs without improvement before stopping;
      0 disables early stopping.
    early_stopping_min_delta: Smallest change that counts as improvement.
    seed: Seeds weights of the head, dropout and the shuffle order.
    distribution: auto, mirrored or one_device.
    save_every_steps: Back up the run every N steps (0: every epoch) so a
      killed run resumes when started again.
    log_every_steps: Write loss and learning rate to TensorBoard every N steps.
    steps_per_execution: Training steps run per call into the TF runtime.
    precision: fp32, bf16 (mixed bfloat16 compute, float32 weights), or auto:
      bf16 where the hardware computes in bfloat16 natively (CPUs with AMX or
      AVX512-BF16, GPUs of compute capability 8.0 or newer), else fp32.
    export: Export a SavedModel at the end of training.
  """

  epochs: int = 3
  learning_rate: float = 5e-5
  schedule: str = "linear"
  warmup_ratio: float = 0.1
  warmup_steps: Optional[int] = None
  polynomial_power: float = 2.0
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  adam_epsilon: float = 1e-6
  early_stopping_metric: str = "val_accuracy"
  early_stopping_patience: int = 2
  early_stopping_min_delta: float = 0.0
  seed: int = 42
  distribution: str = "auto"
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
class RunConfig:
  """Everything one training run needs."""

  model_dir: str
  data: DataConfig
  model: ModelConfig
  train: TrainConfig = TrainConfig()
  export_dir: Optional[str] = None

  def __post_init__(self):
    _require(bool(self.model_dir), "--model_dir is required.")
    _require(bool(self.data.train_file or self.data.tfds_name),
             "No training data: set --train_file (CSV, TSV or JSONL) or "
             "--tfds_name.")

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
    )


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
