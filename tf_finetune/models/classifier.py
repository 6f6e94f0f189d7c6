"""A text model: pretrained encoder, pooling, dropout, dense head.

The same model serves every task (tf_finetune/tasks/): a task chooses the
head's size, whether it reads the pooled text vector or every token's hidden
state, and the per-example loss.
"""

from __future__ import annotations

import inspect

import tensorflow as tf
import tf_keras

from tf_finetune.models import updates

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def backbone_inputs(backbone) -> tuple[str, ...]:
  """The packed inputs (of INPUT_NAMES) the encoder's `call` accepts.

  DistilBERT's, for one, takes no token_type_ids.
  """
  parameters = inspect.signature(backbone.call).parameters
  return tuple(name for name in INPUT_NAMES if name in parameters)


class PaddingFraction(tf_keras.metrics.Metric):
  """Fraction of the tokens in the batches seen so far that are padding."""

  def __init__(self, name="pad_fraction", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.real = self.add_weight("real", initializer="zeros", dtype=tf.float32)
    self.total = self.add_weight("total", initializer="zeros", dtype=tf.float32)

  def update_state(self, attention_mask, sample_weight=None):
    mask = tf.cast(attention_mask, tf.float32)
    self.real.assign_add(tf.reduce_sum(mask))
    self.total.assign_add(tf.cast(tf.size(mask), tf.float32))

  def result(self):
    return tf.math.divide_no_nan(self.total - self.real, self.total)


class MacroF1(tf_keras.metrics.Metric):
  """Unweighted mean of per-class F1, from a streaming confusion matrix."""

  def __init__(self, num_labels: int, name="macro_f1", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.num_labels = num_labels
    self.confusion = self.add_weight(
        "confusion",
        shape=(num_labels, num_labels),
        initializer="zeros",
        dtype=tf.float32,
    )

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    self.confusion.assign_add(
        tf.math.confusion_matrix(
            labels, predictions, num_classes=self.num_labels, dtype=tf.float32
        )
    )

  def reset_state(self):
    self.confusion.assign(tf.zeros_like(self.confusion))

  def result(self):
    true_positives = tf.linalg.diag_part(self.confusion)
    predicted = tf.reduce_sum(self.confusion, axis=0)
    actual = tf.reduce_sum(self.confusion, axis=1)
    f1 = tf.math.divide_no_nan(2.0 * true_positives, predicted + actual)
    return tf.reduce_mean(f1)

  def get_config(self):
    return {**super().get_config(), "num_labels": self.num_labels}


class LastValue(tf_keras.metrics.Metric):
  """The value of the latest step (the same on every replica)."""

  def __init__(self, name, **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.value = self.add_weight(
        "value",
        initializer="zeros",
        dtype=tf.float32,
        aggregation=tf.VariableAggregation.MEAN,
    )

  def update_state(self, value):
    self.value.assign(tf.cast(value, tf.float32))

  def result(self):
    return tf.identity(self.value)


def sparse_cross_entropy(label_smoothing: float = 0.0):
  """Per-example cross-entropy of integer labels against logits.

  With label smoothing e over K classes the target is (1 - e) on the true
  class plus e / K on every class.

  Returns:
    A function (labels [batch], logits [batch, K]) -> float32 [batch].
  """

  def loss(labels, logits):
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    logits = tf.cast(logits, tf.float32)
    if not label_smoothing:
      return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    num_labels = tf.shape(logits)[-1]
    targets = tf.one_hot(labels, num_labels) * (1.0 - label_smoothing) + (
        label_smoothing / tf.cast(num_labels, tf.float32)
    )
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)

  return loss


class TextClassifier(tf_keras.Model):
  """Logits over `num_labels` outputs from packed token ids.

  Inputs are a dict of int32 Tensors [batch, seq_len] named `input_ids`,
  `attention_mask` and, where the encoder's family has segment ids,
  `token_type_ids` (an input the encoder does not accept, such as
  DistilBERT's token_type_ids, is not passed on); the output is float32 logits
  [batch, num_labels], or [batch, seq_len, num_labels] with `per_token`
  (float32 also under mixed precision, so the softmax and the loss are
  computed at full precision).

  Training (`train_step`) differs from Keras' default in four ways:
  - the loss is `loss_fn` (the task's per-example loss; by default
    cross-entropy with optional label smoothing) averaged over the global
    batch; penalties added with
    `add_loss` (head and backbone regularizers, L2-SP) are logged apart, as
    "penalty", so "loss" and "val_loss" compare like with like;
  - with `grad_accum_steps` = N each batch is split into N micro-batches
    whose gradients are summed before one update: a batch of N x B gives the
    update of one batch of N x B with the activations of B;
  - gradients are summed across replicas here (dense), and the rows of a
    sparse embedding gradient are merged, so their global norm (logged as
    "grad_norm", before clipping) is the one the update is clipped by;
  - under float16 mixed precision the loss is scaled and the gradients
    unscaled (Keras' LossScaleOptimizer skips steps that overflow).
  """

  def __init__(
      self,
      backbone,
      num_labels: int,
      *,
      pooling: str = "pooler",
      dropout: float = 0.1,
      l1: float = 0.0,
      l2: float = 0.0,
      seed: int = 0,
      label_smoothing: float = 0.0,
      grad_accum_steps: int = 1,
      per_token: bool = False,
      loss_fn=None,
      **kwargs,
  ):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.num_labels = num_labels
    self.pooling = pooling
    self.per_token = per_token
    self.backbone_inputs = backbone_inputs(backbone)
    self.loss_fn = loss_fn or sparse_cross_entropy(label_smoothing)
    self.grad_accum_steps = grad_accum_steps
    initializer_range = getattr(backbone.config, "initializer_range", 0.02)
    self.head_dropout = tf_keras.layers.Dropout(
        dropout, seed=seed, name="head_dropout"
    )
    regularizer = tf_keras.regularizers.L1L2(l1=l1, l2=l2) if l1 or l2 else None
    self.head = tf_keras.layers.Dense(
        num_labels,
        name="classifier",
        dtype="float32",
        kernel_initializer=tf_keras.initializers.TruncatedNormal(
            stddev=initializer_range, seed=seed
        ),
        kernel_regularizer=regularizer,
    )
    self.pad_fraction = PaddingFraction()
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.penalty_tracker = tf_keras.metrics.Mean(name="penalty")
    self.grad_norm = LastValue(name="grad_norm")
    # The logged values are metric results, which tf.distribute already
    # aggregates over replicas: report them once. (Keras' default sums them
    # over replicas under multi-device strategies: an accuracy of 1.16 on
    # two workers.)
    self.distribute_reduction_method = "first"

  def call(self, inputs, training=False):
    outputs = self.backbone(
        **{
            name: inputs[name]
            for name in self.backbone_inputs
            if name in inputs
        },
        training=training,
    )
    if self.per_token:
      hidden = outputs.last_hidden_state
      return self.head(self.head_dropout(hidden, training=training))
    if self.pooling == "pooler":
      pooled = getattr(outputs, "pooler_output", None)
      if pooled is None:
        raise ValueError(
            f"{type(self.backbone).__name__} has no pooler; use "
            "--pooling=cls, --pooling=mean or --pooling=auto."
        )
    elif self.pooling == "cls":
      pooled = outputs.last_hidden_state[:, 0]
    else:
      hidden = outputs.last_hidden_state
      mask = tf.cast(inputs["attention_mask"], hidden.dtype)[..., tf.newaxis]
      pooled = tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(
          tf.reduce_sum(mask, axis=1), 1.0
      )
    return self.head(self.head_dropout(pooled, training=training))

  def _logs(self, with_training_metrics: bool):
    skip = () if with_training_metrics else ("penalty", "grad_norm")
    if not self.losses:
      skip += ("penalty",)
    return {
        metric.name: metric.result()
        for metric in self.metrics
        if metric.name not in skip
    }

  def _update_metrics(self, labels, logits, per_example_loss):
    self.loss_tracker.update_state(per_example_loss)
    self.compiled_metrics.update_state(labels, logits)

  def _data_gradients(self, inputs, labels, variables, global_batch):
    """Gradients of this slice's share of the global-batch mean loss."""
    optimizer = self.optimizer
    scaling = isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      logits = self(inputs, training=True)
      per_example = self.loss_fn(labels, logits)
      loss = tf.reduce_sum(per_example) / global_batch
      if scaling:
        loss = optimizer.get_scaled_loss(loss)
    gradients = tape.gradient(loss, variables)
    if scaling:
      gradients = optimizer.get_unscaled_gradients(gradients)
    self._update_metrics(labels, logits, per_example)
    return gradients

  def _accumulated_gradients(self, inputs, labels, variables, global_batch):
    """Sums the gradients of `grad_accum_steps` micro-batches of one batch."""
    steps = self.grad_accum_steps
    batch = tf.shape(labels)[0]
    micro_batch = (batch + steps - 1) // steps
    connected = [False] * len(variables)

    def add_micro_batch(step, sums):
      start = step * micro_batch
      end = tf.minimum(start + micro_batch, batch)
      gradients = self._data_gradients(
          {name: value[start:end] for name, value in inputs.items()},
          labels[start:end],
          variables,
          global_batch,
      )
      for index, gradient in enumerate(gradients):
        connected[index] = connected[index] or gradient is not None
      return step + 1, [
          total if gradient is None else total + tf.convert_to_tensor(gradient)
          for total, gradient in zip(sums, gradients)
      ]

    _, sums = tf.while_loop(
        lambda step, sums: step < steps,
        add_micro_batch,
        (tf.constant(0), [tf.zeros_like(v) for v in variables]),
    )
    return [total if used else None for total, used in zip(sums, connected)]

  def train_step(self, data):
    inputs, labels, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
    self.pad_fraction.update_state(inputs["attention_mask"])
    variables = self.trainable_variables
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # Each replica's share of the mean: sum of its losses / examples on all
    # replicas (16 + 16 = 32; the last batch of an epoch may split unevenly,
    # 3 + 2, or leave a replica of another worker with none, 5 + 0).
    global_batch = tf.cast(tf.shape(labels)[0], tf.float32)
    if replicas > 1:
      global_batch = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, global_batch
      )
    global_batch = tf.maximum(global_batch, 1.0)
    if self.grad_accum_steps > 1:
      gradients = self._accumulated_gradients(
          inputs, labels, variables, global_batch
      )
    else:
      gradients = self._data_gradients(inputs, labels, variables, global_batch)
    if self.losses:
      # The division stays inside the tape: outside it the tape records
      # nothing and every penalty gradient would be None.
      with tf.GradientTape() as tape:
        penalty = tf.add_n(self.losses) / replicas
      penalty_gradients = tape.gradient(penalty, variables)
      gradients = [
          g if p is None else (p if g is None else tf.convert_to_tensor(g) + p)
          for g, p in zip(gradients, penalty_gradients)
      ]
      self.penalty_tracker.update_state(penalty * replicas)
    updates.apply_update(self.optimizer, gradients, variables, self.grad_norm)
    return self._logs(with_training_metrics=True)

  def test_step(self, data):
    inputs, labels, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
    self.pad_fraction.update_state(inputs["attention_mask"])
    logits = self(inputs, training=False)
    self._update_metrics(labels, logits, self.loss_fn(labels, logits))
    return self._logs(with_training_metrics=False)

  def dummy_inputs(self) -> dict[str, tf.Tensor]:
    ids = tf.constant([[0, 0]], tf.int32)
    return {name: ids for name in self.backbone_inputs}
