"""A pretrained encoder with its masked-language-model head, for continued
pretraining, and the backbone it leaves for fine-tuning.

The model is the `transformers` TF masked-LM class of the checkpoint's family
(`TFBertForMaskedLM`, `TFRobertaForMaskedLM`, ...), loaded with the checks of
`models.backbone`. A checkpoint saved without the head (an encoder exported
as `BertModel`) gets a freshly initialized head. After training,
`save_backbone` writes the encoder alone (the family's `TFAutoModel` class,
the input checkpoint's pooler kept) where `train --model=` loads it.

Only the targets (15% of the tokens) need the head: its projection onto the
vocabulary costs about as much per token as a small encoder's layers, so the
training and validation steps run the encoder alone, gather the hidden
states of the targets and run the head on those (`HEAD_LAYERS`; a family not
listed there, or an XLA-compiled step, computes the logits at every position
and weighs the targets' losses).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
import transformers
from absl import logging

from tf_finetune.data.masking import IGNORED
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models import updates
from tf_finetune.models.classifier import (
    LastValue,
    PaddingFraction,
    backbone_inputs,
)


def load_masked_lm(
    model: str,
    *,
    allow_pickle_weights: bool = False,
    config_overrides: dict | None = None,
) -> tuple[transformers.TFPreTrainedModel, list[str]]:
  """Loads the checkpoint's encoder with its family's masked-LM head.

  Args:
    model: A hub name or a local directory (see `backbone.load_backbone`).
    allow_pickle_weights: Permit PyTorch `.bin` (pickle) weights.
    config_overrides: Values that replace the pretrained config's (dropout).

  Returns:
    (the model, e.g. a `TFBertForMaskedLM`; the names of the weights the
    checkpoint did not have, which start from fresh values: the head's,
    for a checkpoint saved without it).

  Raises:
    ValueError: for a model that cannot be loaded, or a family without a
      masked-LM class in `transformers`.
  """
  from_pt = backbone_lib.check_model_source(model, allow_pickle_weights)
  config = backbone_lib.load_model_config(model, **(config_overrides or {}))
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    mlm, loading = transformers.TFAutoModelForMaskedLM.from_pretrained(
        model,
        config=config,
        from_pt=from_pt,
        trust_remote_code=False,
        output_loading_info=True,
    )
  except (OSError, ValueError) as e:
    raise ValueError(
        f"--model={model!r} could not be loaded as a masked language model: "
        f"{str(e).splitlines()[0]}"
    ) from e
  finally:
    transformers.logging.set_verbosity(verbosity)
  missing = list(loading.get("missing_keys", []))
  if missing:
    logging.info(
        "%s has no masked-LM head in its checkpoint; %s starts with fresh "
        "weights for: %s.",
        model,
        type(mlm).__name__,
        ", ".join(missing),
    )
  logging.info(
      "Loaded %s (%s, %d layers, hidden size %d) from %s.",
      type(mlm).__name__,
      config.model_type,
      getattr(config, "num_hidden_layers", -1),
      getattr(config, "hidden_size", -1),
      model,
  )
  return mlm, missing


# The layers of each family's `transformers` masked-LM class that turn the
# encoder's hidden states into vocabulary logits, in the order its `call`
# applies them.
HEAD_LAYERS = {
    "bert": ("mlm",),
    "mobilebert": ("predictions",),
    "albert": ("predictions",),
    "deberta": ("mlm",),
    "deberta-v2": ("mlm",),
    "roberta": ("lm_head",),
    "roberta-prelayernorm": ("lm_head",),
    "xlm-roberta": ("lm_head",),
    "camembert": ("lm_head",),
    "mpnet": ("lm_head",),
    "electra": ("generator_predictions", "generator_lm_head"),
    "convbert": ("generator_predictions", "generator_lm_head"),
    "distilbert": (
        "vocab_transform",
        "act",
        "vocab_layer_norm",
        "vocab_projector",
    ),
}


def target_logits(
    mlm, inputs: dict, labels: tf.Tensor, *, training: bool, gather: bool
) -> tuple[tf.Tensor, tf.Tensor]:
  """The logits the loss needs, and their labels.

  Args:
    mlm: A `transformers` TF masked-LM model.
    inputs: Its inputs, [batch, seq_len] each.
    labels: int32 [batch, seq_len], `IGNORED` off the targets.
    training: Dropout on.
    gather: Run the head on the targets' hidden states only (families in
      `HEAD_LAYERS`); otherwise on every position, as `mlm` does, with
      shapes that do not depend on the masks (XLA).

  Returns:
    (float32 logits, int32 labels): of the targets alone, [targets, vocab]
    and [targets] in row-major order; or, not gathered, of every position,
    [batch, seq_len, vocab] and `labels` as given.
  """
  layers = HEAD_LAYERS.get(mlm.config.model_type)
  if not (gather and layers):
    logits = mlm(**inputs, training=training).logits
    return tf.cast(logits, tf.float32), tf.cast(labels, tf.int32)
  positions = tf.where(labels != IGNORED)
  encoder = getattr(mlm, mlm.base_model_prefix)
  hidden = encoder(**inputs, training=training)[0]
  # [targets, 1, hidden]: each target a sequence of one, which every head's
  # reshapes accept, with no targets too.
  hidden = tf.gather_nd(hidden, positions)[:, tf.newaxis, :]
  for name in layers:
    layer = getattr(mlm, name)
    if isinstance(layer, tf_keras.layers.Layer):
      hidden = layer(hidden, training=training)
    else:  # An activation function.
      hidden = layer(hidden)
  return (
      tf.cast(hidden[:, 0, :], tf.float32),
      tf.cast(tf.gather_nd(labels, positions), tf.int32),
  )


def masked_token_accuracy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """float32 of `labels`' shape: 1 where the top logit is the label."""
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
  return tf.cast(predictions == tf.cast(labels, tf.int32), tf.float32)


def masked_token_losses(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """float32 of `labels`' shape: cross-entropy on targets, 0 elsewhere.

  Args:
    labels: int32, e.g. [batch, seq_len] or [targets], the original id on
      the targets and `IGNORED` elsewhere.
    logits: `labels`' shape + [vocab].
  """
  labels = tf.cast(labels, tf.int32)
  targets = labels != IGNORED
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
      tf.where(targets, labels, 0), tf.cast(logits, tf.float32)
  )
  return tf.where(targets, losses, 0.0)


class MaskedLanguageModel(tf_keras.Model):
  """Trains a `transformers` masked-LM model on masked batches.

  Inputs are a dict of int32 Tensors [batch, seq_len] (input_ids with the
  targets replaced, attention_mask and, where the family has them,
  token_type_ids); the targets are int32 [batch, seq_len], the original id
  on each target and `masking.IGNORED` elsewhere. The output of `call` is
  float32 logits [batch, seq_len, vocab]; the training and validation steps
  compute the targets' logits alone (`target_logits`).

  The loss is the mean cross-entropy over the targets of the global batch:
  each replica divides the sum over its targets by the number of targets on
  all replicas (the masks put different numbers on each), and the replicas'
  gradients are summed, so the update is that of one batch of all of them.
  As in `classifier.TextClassifier`, the summed gradients' global norm is
  logged (grad_norm) and float16 losses are scaled. "loss" and
  "masked_accuracy" are means over the targets of the epoch.
  """

  def __init__(self, mlm, *, gather_targets: bool = True, **kwargs):
    """`gather_targets`: run the head on the targets only (see
    `target_logits`); off for an XLA-compiled step, whose shapes then do
    not depend on the masks."""
    super().__init__(**kwargs)
    self.mlm = mlm
    self.gather_targets = gather_targets
    self.model_inputs = backbone_inputs(mlm)
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.accuracy_tracker = tf_keras.metrics.Mean(name="masked_accuracy")
    self.pad_fraction = PaddingFraction()
    self.grad_norm = LastValue(name="grad_norm")
    # Metric results are already aggregated over replicas: report them once.
    self.distribute_reduction_method = "first"

  def call(self, inputs, training=False):
    outputs = self.mlm(
        **{name: inputs[name] for name in self.model_inputs if name in inputs},
        training=training,
    )
    return tf.cast(outputs.logits, tf.float32)

  def _logs(self, with_training_metrics: bool):
    return {
        metric.name: metric.result()
        for metric in self.metrics
        if with_training_metrics or metric.name != "grad_norm"
    }

  def _targets(self, inputs, labels, training):
    """(logits, labels) of the targets, or of every position (see
    `target_logits`)."""
    return target_logits(
        self.mlm,
        {name: inputs[name] for name in self.model_inputs if name in inputs},
        labels,
        training=training,
        gather=self.gather_targets,
    )

  def _update_metrics(self, labels, logits, losses):
    """Means over the targets (`labels` not `IGNORED`)."""
    weights = tf.cast(labels != IGNORED, tf.float32)
    self.loss_tracker.update_state(losses, sample_weight=weights)
    self.accuracy_tracker.update_state(
        masked_token_accuracy(labels, logits), sample_weight=weights
    )

  def train_step(self, data):
    inputs, labels = data
    self.pad_fraction.update_state(inputs["attention_mask"])
    variables = self.trainable_variables
    optimizer = self.optimizer
    scaling = isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # Targets of the global batch: 9 on this replica + 11 on the other = 20.
    targets = tf.reduce_sum(tf.cast(labels != IGNORED, tf.float32))
    if replicas > 1:
      targets = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, targets
      )
    targets = tf.maximum(targets, 1.0)
    with tf.GradientTape() as tape:
      logits, target_labels = self._targets(inputs, labels, training=True)
      losses = masked_token_losses(target_labels, logits)
      loss = tf.reduce_sum(losses) / targets
      if scaling:
        loss = optimizer.get_scaled_loss(loss)
    gradients = tape.gradient(loss, variables)
    if scaling:
      gradients = optimizer.get_unscaled_gradients(gradients)
    updates.apply_update(optimizer, gradients, variables, self.grad_norm)
    self._update_metrics(target_labels, logits, losses)
    return self._logs(with_training_metrics=True)

  def test_step(self, data):
    inputs, labels = data
    self.pad_fraction.update_state(inputs["attention_mask"])
    logits, target_labels = self._targets(inputs, labels, training=False)
    self._update_metrics(
        target_labels, logits, masked_token_losses(target_labels, logits)
    )
    return self._logs(with_training_metrics=False)

  def dummy_inputs(self) -> dict[str, tf.Tensor]:
    ids = tf.constant([[0, 0]], tf.int32)
    return {name: ids for name in self.model_inputs}


def _main_layer_weights(model) -> dict[str, tf.Variable]:
  """The weights of the encoder inside `model`, by name below its main
  layer ("embeddings/word_embeddings/weight:0")."""
  prefix = model.base_model_prefix
  main = getattr(model, prefix)
  found = {}
  for variable in main.weights:
    _, _, below = variable.name.partition(f"/{prefix}/")
    found[below or variable.name] = variable
  return found


def copy_encoder_weights(mlm, backbone) -> int:
  """Sets the encoder of `backbone` (a `TFAutoModel`) to that of `mlm`.

  Weights that only `backbone` has (BERT's pooler, which the masked-LM
  class leaves out) keep their values.

  Returns:
    The number of weights copied.

  Raises:
    RuntimeError: when a weight of the masked-LM encoder has no counterpart
      of the same name and shape in `backbone`.
  """
  source = _main_layer_weights(mlm)
  target = _main_layer_weights(backbone)
  unmatched = [
      name
      for name, variable in source.items()
      if name not in target or target[name].shape != variable.shape
  ]
  if unmatched:
    raise RuntimeError(
        f"{type(backbone).__name__} has no weight for {', '.join(unmatched)} "
        f"of {type(mlm).__name__}'s encoder."
    )
  for name, variable in source.items():
    target[name].assign(variable.read_value())
  return len(source)


def save_backbone(
    mlm,
    model: str,
    directory: str,
    *,
    allow_pickle_weights: bool = False,
) -> None:
  """Writes the encoder of `mlm` as --model's `TFAutoModel` to `directory`.

  The architecture and the weights outside the masked-LM encoder (pooler)
  are --model's, its config as it was (no dropout overrides of the run).
  """
  backbone = backbone_lib.load_backbone(
      model, allow_pickle_weights=allow_pickle_weights
  )
  copied = copy_encoder_weights(mlm, backbone)
  logging.info(
      "Backbone: %d encoder weights from pretraining, %d kept from %s.",
      copied,
      len(backbone.weights) - copied,
      model,
  )
  backbone.save_pretrained(directory)
