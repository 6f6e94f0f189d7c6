"""AdamW for fine-tuning, and the learning-rate schedule of a run."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import tensorflow as tf
import tf_keras

from tf_finetune import schedules
from tf_finetune.config import TrainConfig

# Variables that decoupled weight decay leaves alone (BERT's convention):
# LayerNorm scales and offsets and every bias. Matched as name substrings
# when no model is given; `no_decay_variable_names` finds them in a model
# by what they are (BART's `layernorm_embedding` has neither part).
NO_DECAY_NAME_PARTS = ("LayerNorm", "layer_norm", "bias")

# Keras' normalization layers; `transformers` norms (TFT5LayerNorm,
# MobileBERT's TFNoNorm, TFMistralRMSNorm) are layers of their own whose
# class names end like these.
_NORM_LAYERS = (
    tf_keras.layers.LayerNormalization,
    tf_keras.layers.BatchNormalization,
    tf_keras.layers.GroupNormalization,
)
_NORM_CLASS_ENDINGS = ("Norm", "Normalization")


def _layers_in(module) -> list:
  return [m for m in module.submodules if isinstance(m, tf_keras.layers.Layer)]


def _is_norm_layer(layer) -> bool:
  if isinstance(layer, _NORM_LAYERS):
    return True
  # A leaf: Hubert's "TFHubertEncoderStableLayerNorm" is an encoder.
  return type(layer).__name__.endswith(_NORM_CLASS_ENDINGS) and not _layers_in(
      layer
  )


def _exact_name_pattern(variable) -> str:
  """A regex matching `variable`'s name and its replicas' copies' names
  ("dense/bias:0", "dense/bias/replica_1:0")."""
  base = variable.name.rsplit(":", 1)[0]
  return "^" + re.escape(base) + r"(/replica_\d+)?:\d+$"


def no_decay_variable_names(model: tf_keras.Model) -> list[str]:
  """Name patterns of `model`'s variables that weight decay skips.

  Every variable of a normalization layer (Keras' LayerNormalization, as
  BART's `layernorm_embedding` is, and `transformers`' own norm layers such
  as T5's) and every layer's `bias`, found by what the layer is rather than
  by its name, plus the name parts of NO_DECAY_NAME_PARTS (biases kept
  outside a `bias` attribute, like BART's `final_logits_bias`).

  Args:
    model: A built model (its variables exist).

  Returns:
    Regexes for `AdamW(no_weight_decay_names=...)`, which Keras matches
    with `re.search` against each variable's name.
  """
  excluded = {}
  for layer in [model] + _layers_in(model):
    if _is_norm_layer(layer):
      variables = layer.trainable_weights
    else:
      bias = getattr(layer, "bias", None)
      variables = [bias] if isinstance(bias, tf.Variable) else []
    for variable in variables:
      excluded[variable.name] = _exact_name_pattern(variable)
  return list(NO_DECAY_NAME_PARTS) + sorted(excluded.values())


# The schedule names (TrainConfig.schedule); see schedules.py.
DECAYS = schedules.DECAYS


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class ExponentialRangeSchedule(
    tf_keras.optimizers.schedules.LearningRateSchedule
):
  """From `start` to `end` geometrically over `num_steps` (range test)."""

  def __init__(self, start: float, end: float, num_steps: int):
    super().__init__()
    self.start, self.end = float(start), float(end)
    self.num_steps = max(int(num_steps), 2)

  def __call__(self, step):
    fraction = tf.cast(step, tf.float32) / float(self.num_steps - 1)
    return self.start * tf.pow(self.end / self.start, fraction)

  def get_config(self):
    return {"start": self.start, "end": self.end, "num_steps": self.num_steps}


class KerasState(NamedTuple):
  """What Keras' optimizer keeps about one variable (see AdamW._keras_state).

  Attributes:
    key: Keras' id of the variable, shared by its copies on every replica.
    momentum: Adam's first-moment slot m.
    velocity: Adam's second-moment slot v.
    average: The moving average of the weights (None without use_ema).
    decays: Whether weight decay applies (not excluded by
      exclude_from_weight_decay).
  """

  key: Any
  momentum: tf.Variable
  velocity: tf.Variable
  average: tf.Variable | None
  decays: bool


@tf_keras.utils.register_keras_serializable(package="tf_finetune")
class AdamW(tf_keras.optimizers.AdamW):
  """Keras' AdamW, with a learning-rate multiplier per variable.

  The multipliers carry layer-wise learning-rate decay: the update and the
  decoupled weight decay of variable v both use rate * multiplier[v.name].
  Variables without a multiplier use the base rate. Weight decay skips the
  variables whose names contain one of `no_weight_decay_names` (kept in the
  config, so an optimizer rebuilt from it skips them too) and those excluded
  with `exclude_from_weight_decay`, as in Keras.

  Keras' AdamW has one rate for all variables, read inside its update_step
  and its weight-decay hook, so update_step is redone here at each
  variable's rate and the hook (`_apply_weight_decay`) is left empty. What
  that needs of Keras' private state is read in `_keras_state` alone.

  The moving average of the weights (use_ema) is debiased: Keras' update
  hook (`_update_model_variables_moving_average`) is redone at the decay of
  `ema_decay_at`.
  """

  def __init__(
      self,
      *args,
      lr_multipliers: dict[str, float] | None = None,
      no_weight_decay_names: Sequence[str] = (),
      **kwargs,
  ):
    super().__init__(*args, **kwargs)
    self.lr_multipliers = dict(lr_multipliers or {})
    self.no_weight_decay_names = list(no_weight_decay_names)
    if self.no_weight_decay_names:
      self.exclude_from_weight_decay(var_names=self.no_weight_decay_names)
    self._multiplier_by_key = {}

  def build(self, var_list):
    super().build(var_list)
    for variable in var_list:
      multiplier = self.lr_multipliers.get(variable.name, 1.0)
      self._multiplier_by_key[self._keras_state(variable).key] = multiplier

  def _keras_state(self, variable) -> KerasState:
    """Keras' private state of `variable`; nothing else here reads any.

    Keras has no public accessor for these, and redoing update_step at a
    rate per variable needs them all:
      key: `_var_key(variable)`. update_step receives each replica's copy
        of a mirrored variable, with a name of its own; Keras maps every
        copy to the one key, which finds the multiplier.
      momentum, velocity: `_momentums` and `_velocities` at
        `_index_dict[key]`, the slots that Keras builds and checkpoints.
      average: `_model_variables_moving_average` at the same index.
      decays: `_use_weight_decay(variable)`, which reads the exclusions of
        exclude_from_weight_decay.
    tests/test_optimization.py checks each against what Keras does, so a
    renamed attribute fails there and not in a training run.
    """
    key = self._var_key(variable)
    index = self._index_dict[key]
    return KerasState(
        key=key,
        momentum=self._momentums[index],
        velocity=self._velocities[index],
        average=(
            self._model_variables_moving_average[index]
            if self.use_ema
            else None
        ),
        decays=self._use_weight_decay(variable),
    )

  def _apply_weight_decay(self, variables):
    """Empty: Keras would decay every variable at the base rate here.

    update_step decays each variable at its own rate instead. Should Keras
    rename this hook, weights would be decayed twice, which the weight-decay
    test of tests/test_optimization.py catches.
    """
    del variables

  def _rate(self, key, dtype) -> tf.Tensor:
    return tf.cast(self.learning_rate, dtype) * self._multiplier_by_key.get(
        key, 1.0
    )

  def learning_rate_for(self, variable) -> tf.Tensor:
    """The current learning rate of `variable` (a float Tensor)."""
    return self._rate(self._keras_state(variable).key, variable.dtype)

  def update_step(self, gradient, variable):
    """Keras' AdamW step (decay, then Adam) at the variable's own rate."""
    state = self._keras_state(variable)
    rate = self._rate(state.key, variable.dtype)
    if self.weight_decay and state.decays:
      variable.assign_sub(
          variable * tf.cast(self.weight_decay, variable.dtype) * rate
      )
    step = tf.cast(self.iterations + 1, variable.dtype)
    beta_1 = tf.cast(self.beta_1, variable.dtype)
    beta_2 = tf.cast(self.beta_2, variable.dtype)
    # alpha = rate * sqrt(1 - beta_2^step) / (1 - beta_1^step).
    alpha = (
        rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    )
    m, v = state.momentum, state.velocity
    if isinstance(gradient, tf.IndexedSlices):
      m.assign_add(-m * (1 - beta_1))
      m.scatter_add(
          tf.IndexedSlices(gradient.values * (1 - beta_1), gradient.indices)
      )
      v.assign_add(-v * (1 - beta_2))
      v.scatter_add(
          tf.IndexedSlices(
              tf.square(gradient.values) * (1 - beta_2), gradient.indices
          )
      )
    else:
      m.assign_add((gradient - m) * (1 - beta_1))
      v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
    variable.assign_sub((m * alpha) / (tf.sqrt(v) + self.epsilon))

  def ema_decay_at(self, step) -> tf.Tensor:
    """The decay of the moving average at update `step` (1-based).

    min(--ema_decay, (1 + step) / (10 + step)), the `num_updates` ramp of
    `tf.train.ExponentialMovingAverage`: 0.18 at the first update, 0.5 at
    the eighth, 0.9 at the 80th. Keras averages at a fixed decay from the
    starting weights, so after n updates they keep a share decay^n of the
    average (at 0.999, 57% after 558 updates): the pretrained encoder and
    the random head. With the ramp their share is the product of the
    ramp's decays, 10! (n + 1)! / (n + 10)!: 2e-7 after 24 updates.
    """
    step = tf.cast(step, tf.float32)
    return tf.minimum(
        tf.cast(self.ema_momentum, tf.float32), (1.0 + step) / (10.0 + step)
    )

  def _update_model_variables_moving_average(self, var_list):
    """Keras' moving-average update, at the ramped decay of this update.

    Keras calls this after the update, before it counts it in `iterations`.
    """
    if not self.use_ema:
      return
    decay = self.ema_decay_at(self.iterations + 1)

    def update(average, variable):
      rate = tf.cast(decay, average.dtype)
      average.assign(rate * average + (1 - rate) * variable)

    for variable in var_list:
      self._distribution_strategy.extended.update(
          self._keras_state(variable).average,
          update,
          args=(variable,),
          group=False,
      )

  def moving_average_of(self, variable) -> tf.Variable:
    """The EMA variable of `variable` (requires `use_ema=True`)."""
    average = self._keras_state(variable).average
    if average is None:
      raise ValueError(
          "The optimizer keeps no moving averages " "(use_ema=False)."
      )
    return average

  def get_config(self):
    return {
        **super().get_config(),
        "lr_multipliers": self.lr_multipliers,
        "no_weight_decay_names": self.no_weight_decay_names,
    }


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
  if config.warmup_steps is not None:
    return min(config.warmup_steps, total_steps)
  return int(round(config.warmup_ratio * total_steps))


def create_schedule(
    config: TrainConfig, total_steps: int, *, steps_per_epoch: int = 1
) -> schedules.WarmUp:
  """The config's warmup and decay (see schedules.warmup_decay).

  Args:
    config: The training config.
    total_steps: Optimizer updates in the whole run.
    steps_per_epoch: Updates per epoch (the step schedule's default interval).
  """
  return schedules.warmup_decay(
      config.schedule,
      config.learning_rate,
      total_steps,
      warmup_steps_for(config, total_steps),
      power=config.polynomial_power,
      min_lr_ratio=config.min_lr_ratio,
      cycles=config.restart_cycles,
      factor=config.step_decay_factor,
      every_steps=config.step_decay_every_steps or steps_per_epoch,
  )


def create_optimizer(
    config: TrainConfig,
    total_steps: int,
    *,
    steps_per_epoch: int = 1,
    learning_rate=None,
    lr_multipliers: dict[str, float] | None = None,
    model: tf_keras.Model | None = None,
) -> tf_keras.optimizers.Optimizer:
  """AdamW with decoupled weight decay that skips norms and biases.

  Args:
    config: The training config.
    total_steps: Optimizer updates in the whole run.
    steps_per_epoch: Updates per epoch (the step schedule's default interval).
    learning_rate: A schedule replacing the config's (the range test's).
    lr_multipliers: Per-variable learning-rate factors by variable name
      (layer-wise decay, see `models.backbone.layerwise_lr_multipliers`).
    model: The built model to be trained: weight decay skips its norm
      layers and biases (`no_decay_variable_names`). Without it, the
      variables named as in NO_DECAY_NAME_PARTS.
  """
  if not config.resolved:
    raise ValueError(
        f"--recipe={config.recipe} has not chosen its settings yet; "
        "training.prepare() resolves them from the training data."
    )
  return AdamW(
      learning_rate=learning_rate
      or create_schedule(config, total_steps, steps_per_epoch=steps_per_epoch),
      weight_decay=config.weight_decay,
      epsilon=config.adam_epsilon,
      global_clipnorm=config.clip_norm or None,
      use_ema=config.ema_decay > 0,  # Debiased: see AdamW.ema_decay_at.
      ema_momentum=config.ema_decay or 0.99,
      lr_multipliers=lr_multipliers,
      no_weight_decay_names=(
          no_decay_variable_names(model)
          if model is not None
          else NO_DECAY_NAME_PARTS
      ),
      # XLA-compiling the update on CPU costs seconds of compilation and was
      # not measured faster there; --jit_compile compiles the whole step.
      jit_compile=False,
  )


def current_learning_rate(optimizer) -> float:
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # fp16.
  rate = optimizer.learning_rate
  if isinstance(rate, tf_keras.optimizers.schedules.LearningRateSchedule):
    rate = rate(optimizer.iterations)
  return float(tf.convert_to_tensor(rate))
