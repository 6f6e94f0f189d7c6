"""Learning-rate schedules with warmup, and AdamW for fine-tuning."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

from tf_finetune.config import TrainConfig

# Variables that decoupled weight decay leaves alone (BERT's convention):
# LayerNorm scales and offsets and every bias. Matched as name substrings.
NO_DECAY_NAME_PARTS = ("LayerNorm", "layer_norm", "bias")


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class WarmupDecaySchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak_learning_rate`, then a decay.

  For step s, warmup w and total steps T (decay over d = T - w steps, progress
  p = min((s - w) / d, 1)):
    warmup:     peak * s / w                           for s < w
    linear:     peak * (1 - p)
    cosine:     peak * 0.5 * (1 + cos(pi * p))
    polynomial: peak * (1 - p) ** power
    constant:   peak
  Example: peak 5e-5, w = 100, T = 1000, linear: step 50 -> 2.5e-5,
  step 100 -> 5e-5, step 550 -> 2.5e-5, step 1000 -> 0.
  """

  def __init__(self, peak_learning_rate: float, total_steps: int,
               warmup_steps: int = 0, decay: str = "linear",
               power: float = 2.0):
    super().__init__()
    if decay not in ("linear", "cosine", "polynomial", "constant"):
      raise ValueError(f"Unknown decay {decay!r}.")
    self.peak_learning_rate = float(peak_learning_rate)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.decay = decay
    self.power = float(power)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak_learning_rate, tf.float32)
    warmup = float(self.warmup_steps)
    decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
    progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
    if self.decay == "linear":
      decayed = peak * (1.0 - progress)
    elif self.decay == "cosine":
      decayed = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    elif self.decay == "polynomial":
      decayed = peak * tf.pow(1.0 - progress, self.power)
    else:
      decayed = peak
    if self.warmup_steps <= 0:
      return decayed
    return tf.where(step < warmup, peak * step / warmup, decayed)

  def get_config(self):
    return {"peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay, "power": self.power}


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
  if config.warmup_steps is not None:
    return min(config.warmup_steps, total_steps)
  return int(round(config.warmup_ratio * total_steps))


def create_schedule(config: TrainConfig, total_steps: int
                    ) -> WarmupDecaySchedule:
  return WarmupDecaySchedule(
      peak_learning_rate=config.learning_rate, total_steps=total_steps,
      warmup_steps=warmup_steps_for(config, total_steps),
      decay=config.schedule, power=config.polynomial_power)


def create_optimizer(config: TrainConfig, total_steps: int
                     ) -> tf_keras.optimizers.Optimizer:
  """AdamW with decoupled weight decay that skips LayerNorm and biases."""
  optimizer = tf_keras.optimizers.AdamW(
      learning_rate=create_schedule(config, total_steps),
      weight_decay=config.weight_decay,
      epsilon=config.adam_epsilon,
      global_clipnorm=config.clip_norm or None,
      # XLA-compiling the update on CPU costs seconds of compilation and was
      # not measured faster there; the step itself is not XLA-compiled either.
      jit_compile=False)
  optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAME_PARTS))
  return optimizer


def current_learning_rate(optimizer) -> float:
  rate = optimizer.learning_rate
  if isinstance(rate, tf_keras.optimizers.schedules.LearningRateSchedule):
    rate = rate(optimizer.iterations)
  return float(tf.convert_to_tensor(rate))
