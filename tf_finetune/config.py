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
POOLINGS = ("pooler", "cls", "mean")
DISTRIBUTIONS = ("auto", "mirrored", "one_device", "multi_worker", "tpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
UNFREEZE_SCHEDULES = ("none", "gradual")


def early_stopping_metrics() -> tuple[str, ...]:
  """--early_stopping_metric values: "auto" (the task's default) and every
  registered task's metrics."""
  return ("auto",) + tasks.all_monitors()


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


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def check_choices(config: Any) -> None:
  """Checks every field of `config` that has choices against them."""
  for field in dataclasses.fields(config):
    choices = choices_of(field)
    if choices is not None:
      value = getattr(config, field.name)
      require(
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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The pretrained backbone, the head on top of it and their penalties."""

  model: Optional[str] = setting(
      None,
      "Pretrained model: a Hugging Face hub name (bert-base-uncased) or "
      "a local directory holding config.json, weights and tokenizer files.",
  )
  pooling: str = setting(
      "pooler",
      "How the sequence becomes one vector: the backbone's pooler "
      "output, the hidden state of the [CLS] token (cls), or the mean of the "
      "tokens that are not padding.",
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
    check_choices(self)
    require(self.epochs >= 1, f"--epochs={self.epochs} must be at least 1.")
    require(
        0.0 < self.learning_rate < 1.0,
        f"--learning_rate={self.learning_rate} must be in (0, 1); "
        "fine-tuning typically uses 1e-5 to 1e-4.",
    )
    require(
        0.0 <= self.warmup_ratio < 1.0,
        f"--warmup_ratio={self.warmup_ratio} must be in [0, 1).",
    )
    require(
        self.warmup_steps is None or self.warmup_steps >= 0,
        f"--warmup_steps={self.warmup_steps} must be non-negative.",
    )
    require(
        0.0 <= self.min_lr_ratio < 1.0,
        f"--min_lr_ratio={self.min_lr_ratio} must be in [0, 1).",
    )
    require(
        self.restart_cycles >= 1,
        f"--restart_cycles={self.restart_cycles} must be at least 1.",
    )
    require(
        0.0 < self.step_decay_factor <= 1.0,
        f"--step_decay_factor={self.step_decay_factor} must be in (0, 1].",
    )
    require(
        self.step_decay_every_steps >= 0,
        f"--step_decay_every_steps={self.step_decay_every_steps} must be "
        "non-negative (0 = every epoch).",
    )
    require(
        0.0 < self.layerwise_lr_decay <= 1.0,
        f"--layerwise_lr_decay={self.layerwise_lr_decay} must be in "
        "(0, 1]; 0.8-0.95 is usual, 1.0 turns it off.",
    )
    require(
        self.freeze_layers >= 0,
        f"--freeze_layers={self.freeze_layers} must be non-negative.",
    )
    require(
        0.0 <= self.label_smoothing < 1.0,
        f"--label_smoothing={self.label_smoothing} must be in [0, 1).",
    )
    require(
        self.grad_accum_steps >= 1,
        f"--grad_accum_steps={self.grad_accum_steps} must be at least 1.",
    )
    require(
        0.0 <= self.ema_decay < 1.0,
        f"--ema_decay={self.ema_decay} must be in [0, 1); 0.999 is usual, "
        "0 turns it off.",
    )
    require(
        self.weight_decay >= 0.0,
        f"--weight_decay={self.weight_decay} must be non-negative.",
    )
    require(
        self.clip_norm >= 0.0,
        f"--clip_norm={self.clip_norm} must be non-negative (0 = off).",
    )
    require(
        self.early_stopping_patience >= 0,
        f"--early_stopping_patience={self.early_stopping_patience} must "
        "be non-negative (0 = off).",
    )
    require(
        self.distribution != "tpu" or bool(self.tpu),
        "--distribution=tpu needs --tpu: the TPU's name, its grpc:// "
        "address, or 'local' on a TPU VM.",
    )
    require(
        not self.tpu or self.distribution == "tpu",
        f"--tpu={self.tpu!r} conflicts with "
        f"--distribution={self.distribution!r}; pass "
        "--distribution=tpu to train on the TPU, or drop --tpu.",
    )
    require(
        self.save_every_steps >= 0,
        f"--save_every_steps={self.save_every_steps} must be "
        "non-negative (0 = every epoch).",
    )
    require(
        self.log_every_steps >= 1,
        f"--log_every_steps={self.log_every_steps} must be at least 1.",
    )
    require(
        self.steps_per_execution >= 1,
        f"--steps_per_execution={self.steps_per_execution} must be at "
        "least 1.",
    )


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
  task: TaskConfig = dataclasses.field(default_factory=lambda: task_config())

  def __post_init__(self):
    require(bool(self.model_dir), "--model_dir is required.")
    require(
        bool(self.data.train_file or self.data.tfds_name),
        "No training data: set --train_file (CSV, TSV or JSONL) or "
        "--tfds_name.",
    )
    self.task.check_run(self)
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
      require(
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
        task=_task_from_dict(values.get("task", {})),
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


def _task_from_dict(values: dict[str, Any]) -> TaskConfig:
  """The task settings saved in config.json.

  Runs saved before each task had its own settings class kept every task's
  settings in one group; the other tasks' settings are dropped.
  """
  name = values.get("task", TaskConfig.task)
  settings_class = tasks.settings_class(name)
  own = {field.name for field in dataclasses.fields(settings_class)}
  others = {
      field.name
      for other in tasks.names()
      for field in dataclasses.fields(tasks.settings_class(other))
  }
  return _from_dict(
      settings_class,
      {
          key: value
          for key, value in values.items()
          if key in own or key not in others
      },
  )


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
