"""A text classifier: pretrained encoder, pooling, dropout, dense head."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class PaddingFraction(tf_keras.metrics.Metric):
  """Fraction of the tokens in the batches seen so far that are padding."""

  def __init__(self, name="pad_fraction", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.real = self.add_weight("real", initializer="zeros", dtype=tf.float32)
    self.total = self.add_weight("total", initializer="zeros",
                                 dtype=tf.float32)

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
    self.confusion = self.add_weight("confusion", shape=(num_labels,
                                                         num_labels),
                                     initializer="zeros", dtype=tf.float32)

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    self.confusion.assign_add(tf.math.confusion_matrix(
        labels, predictions, num_classes=self.num_labels, dtype=tf.float32))

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


class TextClassifier(tf_keras.Model):
  """Logits over `num_labels` classes from packed token ids.

  Inputs are a dict of int32 Tensors [batch, seq_len] named `input_ids`,
  `attention_mask` and `token_type_ids`; the output is float32 logits
  [batch, num_labels] (float32 also under mixed precision, so the softmax and
  the loss are computed at full precision).
  """

  def __init__(self, backbone, num_labels: int, *, pooling: str = "pooler",
               dropout: float = 0.1, l1: float = 0.0, l2: float = 0.0,
               seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.num_labels = num_labels
    self.pooling = pooling
    initializer_range = getattr(backbone.config, "initializer_range", 0.02)
    self.head_dropout = tf_keras.layers.Dropout(dropout, seed=seed,
                                                name="head_dropout")
    regularizer = (tf_keras.regularizers.L1L2(l1=l1, l2=l2)
                   if l1 or l2 else None)
    self.head = tf_keras.layers.Dense(
        num_labels, name="classifier", dtype="float32",
        kernel_initializer=tf_keras.initializers.TruncatedNormal(
            stddev=initializer_range, seed=seed),
        kernel_regularizer=regularizer)
    self.pad_fraction = PaddingFraction()

  def call(self, inputs, training=False):
    outputs = self.backbone(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        token_type_ids=inputs["token_type_ids"], training=training)
    if self.pooling == "pooler":
      pooled = getattr(outputs, "pooler_output", None)
      if pooled is None:
        raise ValueError(f"{type(self.backbone).__name__} has no pooler; use "
                         "--pooling=cls or --pooling=mean.")
    elif self.pooling == "cls":
      pooled = outputs.last_hidden_state[:, 0]
    else:
      hidden = outputs.last_hidden_state
      mask = tf.cast(inputs["attention_mask"], hidden.dtype)[..., tf.newaxis]
      pooled = (tf.reduce_sum(hidden * mask, axis=1) /
                tf.maximum(tf.reduce_sum(mask, axis=1), 1.0))
    return self.head(self.head_dropout(pooled, training=training))

  def train_step(self, data):
    self.pad_fraction.update_state(data[0]["attention_mask"])
    return super().train_step(data)

  def test_step(self, data):
    self.pad_fraction.update_state(data[0]["attention_mask"])
    return super().test_step(data)

  def dummy_inputs(self) -> dict[str, tf.Tensor]:
    ids = tf.constant([[0, 0]], tf.int32)
    return {name: ids for name in INPUT_NAMES}
