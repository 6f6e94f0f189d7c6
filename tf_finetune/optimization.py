"""AdamW for fine-tuning, and the learning-rate schedule of a run."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from tf_finetune import schedules
from tf_finetune.config import TrainConfig

# Variables that decoupled weight decay leaves alone (BERT's convention):
# LayerNorm scales and offsets and every bias. Matched as name substrings.
NO_DECAY_NAME_PARTS = ("LayerNorm", "layer_norm", "bias")


# The schedule names (TrainConfig.schedule), one Keras decay each.
DECAYS = schedules.DECAYS


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
                    steps_per_epoch: int = 1) -> schedules.WarmUp:
  """The config's warmup and decay (see schedules.warmup_decay).

  Args:
    config: The training config.
    total_steps: Optimizer updates in the whole run.
    steps_per_epoch: Updates per epoch (the step schedule's default interval).
  """
  return schedules.warmup_decay(
      config.schedule, config.learning_rate, total_steps,
      warmup_steps_for(config, total_steps), power=config.polynomial_power,
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
