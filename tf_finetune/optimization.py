"""Learning-rate schedules with warmup, and AdamW for fine-tuning."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

from tf_finetune.config import TrainConfig

# Variables that decoupled weight decay leaves alone (BERT's convention):
# LayerNorm scales and offsets and every bias. Matched as name substrings.
NO_DECAY_NAME_PARTS = ("LayerNorm", "layer_norm", "bias")


DECAYS = ("linear", "cosine", "polynomial", "constant", "inverse_sqrt",
          "cosine_restarts", "step")


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class WarmupDecaySchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak_learning_rate`, then a decay.

  For step s, warmup w, total steps T, decay over d = T - w steps, progress
  p = min((s - w) / d, 1) and floor f = min_lr_ratio * peak:
    warmup:          peak * s / w                                 for s < w
    linear:          f + (peak - f) * (1 - p)
    cosine:          f + (peak - f) * 0.5 * (1 + cos(pi * p))
    polynomial:      f + (peak - f) * (1 - p) ** power
    constant:        peak
    inverse_sqrt:    max(f, peak * sqrt(max(w, 1) / max(s, w, 1)))
    cosine_restarts: cosine over each of `cycles` equal cycles of the decay,
                     restarting at peak (q = p * cycles mod 1, and q = 1 at
                     the very end)
    step:            max(f, peak * factor ** floor((s - w) / every_steps))
  Example: peak 5e-5, w = 100, T = 1000, linear: step 50 -> 2.5e-5,
  step 100 -> 5e-5, step 550 -> 2.5e-5, step 1000 -> 0.
  """

  def __init__(self, peak_learning_rate: float, total_steps: int,
               warmup_steps: int = 0, decay: str = "linear",
               power: float = 2.0, min_lr_ratio: float = 0.0,
               cycles: int = 1, factor: float = 0.5, every_steps: int = 1):
    super().__init__()
    if decay not in DECAYS:
      raise ValueError(f"Unknown decay {decay!r}; expected one of "
                       f"{', '.join(DECAYS)}.")
    self.peak_learning_rate = float(peak_learning_rate)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.decay = decay
    self.power = float(power)
    self.min_lr_ratio = float(min_lr_ratio)
    self.cycles = int(cycles)
    self.factor = float(factor)
    self.every_steps = max(int(every_steps), 1)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak_learning_rate, tf.float32)
    floor = peak * self.min_lr_ratio
    warmup = float(self.warmup_steps)
    decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
    progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
    if self.decay == "linear":
      decayed = floor + (peak - floor) * (1.0 - progress)
    elif self.decay == "cosine":
      decayed = floor + (peak - floor) * 0.5 * (
          1.0 + tf.cos(math.pi * progress))
    elif self.decay == "polynomial":
      decayed = floor + (peak - floor) * tf.pow(1.0 - progress, self.power)
    elif self.decay == "inverse_sqrt":
      scale = max(warmup, 1.0)
      decayed = tf.maximum(floor, peak * tf.sqrt(
          scale / tf.maximum(step, scale)))
    elif self.decay == "cosine_restarts":
      cycle_progress = tf.where(progress >= 1.0, 1.0,
                                tf.math.floormod(progress * self.cycles, 1.0))
      decayed = floor + (peak - floor) * 0.5 * (
          1.0 + tf.cos(math.pi * cycle_progress))
    elif self.decay == "step":
      intervals = tf.floor(tf.maximum(step - warmup, 0.0) / self.every_steps)
      decayed = tf.maximum(floor, peak * tf.pow(self.factor, intervals))
    else:
      decayed = peak
    if self.warmup_steps <= 0:
      return decayed
    return tf.where(step < warmup, peak * step / warmup, decayed)

  def get_config(self):
    return {"peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay, "power": self.power,
            "min_lr_ratio": self.min_lr_ratio, "cycles": self.cycles,
            "factor": self.factor, "every_steps": self.every_steps}


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class ExponentialRangeSchedule(
    tf_keras.optimizers.schedules.LearningRateSchedule):
  """From `start` to `end` geometrically over `num_steps` (range test)."""

  def __init__(self, start: float, end: float, num_steps: int):
    super().__init__()
    self.start, self.end = float(start), float(end)
    self.num_steps = max(int(num_steps), 2)

  def __call__(self, step):
    fraction = tf.cast(step, tf.float32) / float(self.num_steps - 1)
    return self.start * tf.pow(self.end / self.start, fraction)

  def get_config(self):
    return {"start": self.start, "end": self.end,
            "num_steps": self.num_steps}


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class AdamW(tf_keras.optimizers.AdamW):
  """Keras' AdamW, with a learning-rate multiplier per variable.

  The multipliers carry layer-wise learning-rate decay: the update and the
  decoupled weight decay of variable v both use rate * multiplier[v.name].
  Variables without a multiplier use the base rate. Weight decay skips the
  variables excluded with `exclude_from_weight_decay`, as in Keras.
  """

  def __init__(self, *args, lr_multipliers: dict[str, float] | None = None,
               **kwargs):
    super().__init__(*args, **kwargs)
    self.lr_multipliers = dict(lr_multipliers or {})
    self._multiplier_by_key = {}

  def build(self, var_list):
    super().build(var_list)
    for variable in var_list:
      multiplier = self.lr_multipliers.get(variable.name, 1.0)
      self._multiplier_by_key[self._var_key(variable)] = multiplier

  def _apply_weight_decay(self, variables):
    del variables  # Applied per variable in update_step, at its own rate.

  def learning_rate_for(self, variable):
    """The current learning rate of `variable` (a float Tensor)."""
    multiplier = self._multiplier_by_key.get(self._var_key(variable), 1.0)
    return tf.cast(self.learning_rate, variable.dtype) * multiplier

  def update_step(self, gradient, variable):
    rate = self.learning_rate_for(variable)
    if self.weight_decay and self._use_weight_decay(variable):
      variable.assign_sub(variable * tf.cast(self.weight_decay,
                                             variable.dtype) * rate)
    step = tf.cast(self.iterations + 1, variable.dtype)
    beta_1 = tf.cast(self.beta_1, variable.dtype)
    beta_2 = tf.cast(self.beta_2, variable.dtype)
    alpha = rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (
        1 - tf.pow(beta_1, step))
    index = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[index], self._velocities[index]
    if isinstance(gradient, tf.IndexedSlices):
      m.assign_add(-m * (1 - beta_1))
      m.scatter_add(tf.IndexedSlices(gradient.values * (1 - beta_1),
                                     gradient.indices))
      v.assign_add(-v * (1 - beta_2))
      v.scatter_add(tf.IndexedSlices(tf.square(gradient.values) * (1 - beta_2),
                                     gradient.indices))
    else:
      m.assign_add((gradient - m) * (1 - beta_1))
      v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
    variable.assign_sub((m * alpha) / (tf.sqrt(v) + self.epsilon))

  def moving_average_of(self, variable):
    """The EMA variable of `variable` (requires `use_ema=True`)."""
    return self._model_variables_moving_average[
        self._index_dict[self._var_key(variable)]]

  def get_config(self):
    return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
  if config.warmup_steps is not None:
    return min(config.warmup_steps, total_steps)
  return int(round(config.warmup_ratio * total_steps))


def create_schedule(config: TrainConfig, total_steps: int, *,
                    steps_per_epoch: int = 1) -> WarmupDecaySchedule:
  return WarmupDecaySchedule(
      peak_learning_rate=config.learning_rate, total_steps=total_steps,
      warmup_steps=warmup_steps_for(config, total_steps),
      decay=config.schedule, power=config.polynomial_power,
      min_lr_ratio=config.min_lr_ratio, cycles=config.restart_cycles,
      factor=config.step_decay_factor,
      every_steps=config.step_decay_every_steps or steps_per_epoch)


def create_optimizer(config: TrainConfig, total_steps: int, *,
                     steps_per_epoch: int = 1,
                     learning_rate=None,
                     lr_multipliers: dict[str, float] | None = None
                     ) -> tf_keras.optimizers.Optimizer:
  """AdamW with decoupled weight decay that skips LayerNorm and biases.

  Args:
    config: The training config.
    total_steps: Optimizer updates in the whole run.
    steps_per_epoch: Updates per epoch (the step schedule's default interval).
    learning_rate: A schedule replacing the config's (the range test's).
    lr_multipliers: Per-variable learning-rate factors by variable name
      (layer-wise decay, see `models.backbone.layerwise_lr_multipliers`).
  """
  optimizer = AdamW(
      learning_rate=learning_rate or create_schedule(
          config, total_steps, steps_per_epoch=steps_per_epoch),
      weight_decay=config.weight_decay,
      epsilon=config.adam_epsilon,
      global_clipnorm=config.clip_norm or None,
      use_ema=config.ema_decay > 0,
      ema_momentum=config.ema_decay or 0.99,
      lr_multipliers=lr_multipliers,
      # XLA-compiling the update on CPU costs seconds of compilation and was
      # not measured faster there; --jit_compile compiles the whole step.
      jit_compile=False)
  optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAME_PARTS))
  return optimizer


def current_learning_rate(optimizer) -> float:
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # fp16.
  rate = optimizer.learning_rate
  if isinstance(rate, tf_keras.optimizers.schedules.LearningRateSchedule):
    rate = rate(optimizer.iterations)
  return float(tf.convert_to_tensor(rate))
