"""How a run trains: optimizer, schedule, regularization, early stopping,
precision, distribution, checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tf_finetune import tasks
from tf_finetune.config.fields import check_choices, require, setting

SCHEDULES = (
    "linear",
    "cosine",
    "polynomial",
    "constant",
    "inverse_sqrt",
    "cosine_restarts",
    "step",
)


DISTRIBUTIONS = ("auto", "mirrored", "one_device", "multi_worker", "tpu")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


UNFREEZE_SCHEDULES = ("none", "gradual")


RECIPES = ("none", "recommended")

# Settings that --recipe may choose when the user leaves them unset, and
# their plain defaults (what an unset setting means without a recipe).
RECIPE_SETTINGS = {"min_steps": 0}


def early_stopping_metrics() -> tuple[str, ...]:
  """--early_stopping_metric values: "auto" (the task's default) and every
  registered task's metrics."""
  return ("auto",) + tasks.all_monitors()


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
class TrainConfig:
  """Optimization, learning-rate schedule, callbacks and hardware."""

  epochs: int = setting(3, "Passes over the training data.")
  min_steps: Optional[int] = setting(
      None,
      "Train for at least N updates: when --epochs x steps per epoch is "
      "fewer, the run trains for more epochs (early stopping still ends it "
      "when validation stops improving; the schedule spans the longer run). "
      "Unset: 0 (off), or what --recipe chooses.",
  )
  recipe: str = setting(
      "none",
      "recommended: at least 1,000 updates (--min_steps=1000), the mean "
      "of the token states as the text's vector (--pooling=mean) and "
      "--truncation chosen from the training texts' lengths (see README); "
      "settings given on the command line are kept. none: unset settings "
      "take their plain defaults.",
      choices=RECIPES,
  )
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
  reinit_layers: int = setting(
      0,
      "Re-initialize the top N encoder layers (and the pooler when the head "
      "reads it) before training, as the model's config initializes a new "
      "model.",
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
      "(e.g. 0.999), validate and export it; 0 turns it off. Update n uses "
      "min(decay, (1 + n) / (10 + n)), so the starting weights fade out "
      "within the first updates.",
  )
  weight_decay: float = setting(
      0.01,
      "AdamW decoupled weight decay (not on normalization layers or "
      "biases).",
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
      changes_weights=False,
  )
  tpu: Optional[str] = setting(
      None,
      "The TPU of --distribution=tpu: its name, a grpc:// address, or "
      "'local' on a TPU VM.",
      changes_weights=False,
  )
  save_every_steps: int = setting(
      0,
      "Back up the run every N steps so that a killed run resumes when "
      "started again (0: every epoch).",
      changes_weights=False,
  )
  log_every_steps: int = setting(
      50,
      "Write the loss and learning rate to TensorBoard every N steps.",
      changes_weights=False,
  )
  steps_per_execution: int = setting(
      1,
      "Training steps run per call into the TensorFlow runtime.",
      changes_weights=False,
  )
  precision: str = setting(
      "auto",
      "fp32; bf16 (mixed bfloat16 compute, float32 weights); fp16 "
      "(mixed float16 with loss scaling); auto: bf16 where the hardware "
      "computes in bfloat16 natively (CPUs with AMX or AVX512-BF16, GPUs of "
      "compute capability 8.0 or newer), else fp32.",
      choices=PRECISIONS,
  )
  export: bool = setting(
      True, "Export a SavedModel when training ends.", changes_weights=False
  )

  @property
  def resolved(self) -> bool:
    """Whether every setting --recipe may choose holds a number."""
    return all(getattr(self, name) is not None for name in RECIPE_SETTINGS)

  def __post_init__(self):
    check_choices(self)
    if self.recipe == "none":
      # Frozen: unset settings take their plain defaults in place, so every
      # consumer (and config.json) sees numbers; a recipe fills them later,
      # once the data size is known (training.recipes).
      for name, default in RECIPE_SETTINGS.items():
        if getattr(self, name) is None:
          object.__setattr__(self, name, default)
    require(self.epochs >= 1, f"--epochs={self.epochs} must be at least 1.")
    require(
        self.min_steps is None or self.min_steps >= 0,
        f"--min_steps={self.min_steps} must be non-negative (0 = off).",
    )
    require(
        self.reinit_layers >= 0,
        f"--reinit_layers={self.reinit_layers} must be non-negative "
        "(0 = off).",
    )
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
