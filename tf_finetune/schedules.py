"""Learning-rate schedules: Keras' own decays behind one linear warmup.

Each schedule name maps to a small factory (`DECAY_FACTORIES`) that returns
one of Keras' decays (`tf_keras.optimizers.schedules`) for the steps after
warmup; `WarmUp` puts the linear warmup in front of it and `warmup_decay`
builds the whole schedule from a name. Keras has no inverse square-root
decay, so that one is `InverseSqrtDecay` here.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import tensorflow as tf
import tf_keras

LearningRateSchedule = tf_keras.optimizers.schedules.LearningRateSchedule
_keras_decays = tf_keras.optimizers.schedules


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class WarmUp(LearningRateSchedule):
  """Linear warmup from 0 to `peak_learning_rate`, then `decay`.

  At step s, with w = warmup_steps, t = s - w and floor = min_learning_rate:
    s < w:                          peak * s / w
    t >= decay_steps (when set):    floor
    otherwise:                      max(floor, decay(t))
  The decay sees t, so it starts at its own step 0 when warmup ends.
  Example: peak 5e-5, w = 100, decay PolynomialDecay(5e-5, 900, 0.0, 1.0):
  step 50 -> 2.5e-5, step 100 -> 5e-5, step 550 -> 2.5e-5, step 1000 -> 0.

  Args:
    decay: The schedule after warmup, called with t as a float32 scalar.
    peak_learning_rate: The rate warmup reaches, decay(0) of the decays here.
    warmup_steps: w; 0 starts with the decay.
    min_learning_rate: The floor of the decayed rate.
    decay_steps: When set, the rate stays at the floor from t = decay_steps
      on (the decay ends there); else the decay goes on.
  """

  def __init__(
      self,
      decay: LearningRateSchedule,
      peak_learning_rate: float,
      warmup_steps: int = 0,
      min_learning_rate: float = 0.0,
      decay_steps: int | None = None,
  ):
    super().__init__()
    self.decay = decay
    self.peak_learning_rate = float(peak_learning_rate)
    self.warmup_steps = int(warmup_steps)
    self.min_learning_rate = float(min_learning_rate)
    self.decay_steps = None if decay_steps is None else int(decay_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(self.warmup_steps)
    decay_step = tf.maximum(step - warmup, 0.0)
    rate = tf.maximum(
        tf.cast(self.decay(decay_step), tf.float32), self.min_learning_rate
    )
    if self.decay_steps is not None:
      rate = tf.where(
          decay_step >= self.decay_steps, self.min_learning_rate, rate
      )
    if self.warmup_steps <= 0:
      return rate
    peak = tf.constant(self.peak_learning_rate, tf.float32)
    return tf.where(step < warmup, peak * step / warmup, rate)

  def get_config(self):
    return {
        "decay": _keras_decays.serialize(self.decay),
        "peak_learning_rate": self.peak_learning_rate,
        "warmup_steps": self.warmup_steps,
        "min_learning_rate": self.min_learning_rate,
        "decay_steps": self.decay_steps,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    # Keras' deserializers may edit the dict they are given.
    config["decay"] = _keras_decays.deserialize(copy.deepcopy(config["decay"]))
    return cls(**config)


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class InverseSqrtDecay(LearningRateSchedule):
  """Falls with the square root of the global step, after `warmup_steps`.

  Keras has no such decay (its InverseTimeDecay falls as 1 / t), hence this
  small one. For the decay's step t, global step s = t + w and k = max(w, 1):
    rate = initial_learning_rate * sqrt(k / max(s, k))
  so with warmup it starts at initial_learning_rate and halves by s = 4w;
  without warmup it is initial_learning_rate / sqrt(max(t, 1)).
  Example: initial 1.0, w = 100: t = 0 -> 1.0, t = 300 -> 0.5.
  """

  def __init__(self, initial_learning_rate: float, warmup_steps: int = 0):
    super().__init__()
    self.initial_learning_rate = float(initial_learning_rate)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    global_step = tf.cast(step, tf.float32) + float(self.warmup_steps)
    scale = float(max(self.warmup_steps, 1))
    return self.initial_learning_rate * tf.sqrt(
        scale / tf.maximum(global_step, scale)
    )

  def get_config(self):
    return {
        "initial_learning_rate": self.initial_learning_rate,
        "warmup_steps": self.warmup_steps,
    }


@dataclasses.dataclass(frozen=True)
class DecaySpec:
  """What the decay factories are built from.

  Attributes:
    peak: The rate at the end of warmup, where every decay starts.
    steps: Decay steps d = max(total steps - warmup, 1).
    warmup_steps: Warmup w (inverse_sqrt counts the global step).
    min_lr_ratio: The floor as a fraction of the peak.
    power: The polynomial decay's exponent.
    cycles: The cosine cycles of cosine_restarts.
    factor: What the step decay multiplies the rate by each interval.
    every_steps: The step decay's interval.
  """

  peak: float
  steps: int
  warmup_steps: int = 0
  min_lr_ratio: float = 0.0
  power: float = 2.0
  cycles: int = 1
  factor: float = 0.5
  every_steps: int = 1


# Every factory returns rate(t) for t steps after warmup; f is the floor
# min_lr_ratio * peak, which WarmUp also enforces, and d the decay steps.


def _linear(spec: DecaySpec) -> LearningRateSchedule:
  # f + (peak - f) * (1 - min(t, d) / d).
  return _keras_decays.PolynomialDecay(
      spec.peak, spec.steps, spec.min_lr_ratio * spec.peak, power=1.0
  )


def _cosine(spec: DecaySpec) -> LearningRateSchedule:
  # peak * ((1 - ratio) * 0.5 * (1 + cos(pi * min(t, d) / d)) + ratio).
  return _keras_decays.CosineDecay(
      spec.peak, spec.steps, alpha=spec.min_lr_ratio
  )


def _polynomial(spec: DecaySpec) -> LearningRateSchedule:
  # f + (peak - f) * (1 - min(t, d) / d) ** power.
  return _keras_decays.PolynomialDecay(
      spec.peak, spec.steps, spec.min_lr_ratio * spec.peak, power=spec.power
  )


def _constant(spec: DecaySpec) -> LearningRateSchedule:
  # peak * 1 ** t: Keras has no constant schedule; a decay rate of 1 never
  # decays.
  return _keras_decays.ExponentialDecay(spec.peak, 1, 1.0)


def _inverse_sqrt(spec: DecaySpec) -> LearningRateSchedule:
  # No Keras decay falls as 1 / sqrt(step); see InverseSqrtDecay.
  return InverseSqrtDecay(spec.peak, spec.warmup_steps)


def _cosine_restarts(spec: DecaySpec) -> LearningRateSchedule:
  # `cycles` cosines from peak to f of d / cycles steps each. Keras restarts
  # forever; WarmUp's decay_steps keeps the floor after the last cycle.
  return _keras_decays.CosineDecayRestarts(
      spec.peak,
      spec.steps / spec.cycles,
      t_mul=1.0,
      m_mul=1.0,
      alpha=spec.min_lr_ratio,
  )


def _step(spec: DecaySpec) -> LearningRateSchedule:
  # peak * factor ** floor(t / every_steps), never below f (WarmUp).
  return _keras_decays.ExponentialDecay(
      spec.peak, spec.every_steps, spec.factor, staircase=True
  )


DECAY_FACTORIES: dict[str, Callable[[DecaySpec], LearningRateSchedule]] = {
    "linear": _linear,
    "cosine": _cosine,
    "polynomial": _polynomial,
    "constant": _constant,
    "inverse_sqrt": _inverse_sqrt,
    "cosine_restarts": _cosine_restarts,
    "step": _step,
}
DECAYS = tuple(DECAY_FACTORIES)

# The decays that end at the floor after d steps and stay there. The Keras
# decays of the first three stay by themselves; cosine_restarts needs
# WarmUp's decay_steps. The others go on past the last training step.
_ENDING_DECAYS = ("linear", "cosine", "polynomial", "cosine_restarts")


def warmup_decay(
    decay: str,
    peak_learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    *,
    power: float = 2.0,
    min_lr_ratio: float = 0.0,
    cycles: int = 1,
    factor: float = 0.5,
    every_steps: int = 1,
) -> WarmUp:
  """Linear warmup to `peak_learning_rate`, then the decay named `decay`.

  The decay runs over d = max(total_steps - warmup_steps, 1) steps, never
  below min_lr_ratio * peak_learning_rate.

  Args:
    decay: One of DECAYS.
    peak_learning_rate: The rate at the end of warmup.
    total_steps: Optimizer updates in the whole run.
    warmup_steps: Steps of linear warmup from 0.
    power: The polynomial decay's exponent.
    min_lr_ratio: The floor as a fraction of the peak.
    cycles: The cosine cycles of cosine_restarts over the d steps.
    factor: What the step decay multiplies the rate by every `every_steps`.
    every_steps: The step decay's interval.

  Raises:
    ValueError: For an unknown decay name.
  """
  if decay not in DECAY_FACTORIES:
    raise ValueError(
        f"Unknown decay {decay!r}; expected one of " f"{', '.join(DECAYS)}."
    )
  spec = DecaySpec(
      peak=float(peak_learning_rate),
      steps=max(int(total_steps) - int(warmup_steps), 1),
      warmup_steps=int(warmup_steps),
      min_lr_ratio=float(min_lr_ratio),
      power=float(power),
      cycles=int(cycles),
      factor=float(factor),
      every_steps=max(int(every_steps), 1),
  )
  return WarmUp(
      DECAY_FACTORIES[decay](spec),
      spec.peak,
      spec.warmup_steps,
      min_learning_rate=spec.min_lr_ratio * spec.peak,
      decay_steps=spec.steps if decay in _ENDING_DECAYS else None,
  )
