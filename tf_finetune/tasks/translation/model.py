"""The encoder-decoder trained with teacher forcing, and building it."""

from __future__ import annotations

import json

import tensorflow as tf
import tf_keras
import transformers

from tf_finetune.tasks.settings import DEFAULT_MODEL_CONFIG

# Pads target ids in a batch; never a real token id, so the loss mask is
# simply `labels != LABEL_PADDING` whatever the tokenizer's pad id is.
LABEL_PADDING = -1


# The built-in from-scratch model (--model_config=default): a small T5, 3+3
# layers of width 256; with an 8,000-piece vocabulary it has about 9.4M
# parameters, small enough to train on two CPU cores in minutes.
DEFAULT_T5_CONFIG = {
    "model_type": "t5",
    "d_model": 256,
    "d_kv": 32,
    "d_ff": 1024,
    "num_layers": 3,
    "num_decoder_layers": 3,
    "num_heads": 8,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "feed_forward_proj": "relu",
    "tie_word_embeddings": True,
}


# Training.
def shift_targets(
    labels: tf.Tensor, *, decoder_start_id: int, pad_id: int
) -> tf.Tensor:
  """Teacher forcing: the decoder's inputs are the targets moved right.

  Args:
    labels: int32 [batch, target_len] target ids padded with LABEL_PADDING.
    decoder_start_id: The first decoder input.
    pad_id: The tokenizer's pad id, replacing LABEL_PADDING.

  Returns:
    int32 [batch, target_len]: decoder_start_id, labels[:, :-1], with
    padding as pad_id. [[5, 6, 1, -1]] -> [[0, 5, 6, 1]] for T5.
  """
  labels = tf.cast(labels, tf.int32)
  start = tf.fill([tf.shape(labels)[0], 1], decoder_start_id)
  shifted = tf.concat([start, labels[:, :-1]], axis=1)
  return tf.where(shifted == LABEL_PADDING, pad_id, shifted)


def masked_token_losses(
    labels: tf.Tensor, logits: tf.Tensor, *, label_smoothing: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-token cross-entropy, zero at padding.

  Args:
    labels: int [batch, target_len], padded with LABEL_PADDING.
    logits: float [batch, target_len, vocab].
    label_smoothing: Mass moved from the true token to all tokens uniformly.

  Returns:
    (losses, mask): float32 [batch, target_len] each; mask is 1 on real
    target tokens.
  """
  logits = tf.cast(logits, tf.float32)
  mask = tf.cast(labels != LABEL_PADDING, tf.float32)
  safe_labels = tf.where(labels == LABEL_PADDING, 0, tf.cast(labels, tf.int32))
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  true_log_prob = tf.gather(log_probs, safe_labels, batch_dims=2)
  losses = -true_log_prob
  if label_smoothing:
    # (1 - e) * NLL + e * mean over the vocabulary of -log p: the
    # cross-entropy against targets (1 - e) one-hot + e / vocab.
    losses = (
        1.0 - label_smoothing
    ) * losses - label_smoothing * tf.reduce_mean(log_probs, axis=-1)
  return losses * mask, mask


class Seq2SeqModel(tf_keras.Model):
  """Wraps a `transformers` TF encoder-decoder for teacher-forced `fit`.

  Batches are (features, labels) from `pipeline`: features hold the source
  `input_ids` and `attention_mask` (int32 [batch, source_len]); labels the
  target ids (int32 [batch, target_len], LABEL_PADDING after the end). The
  logged `loss` and `token_accuracy` are means over real target tokens.

  Attributes:
    seq2seq: The `transformers` model (saved with this model's weights).
    vocab: The tokenizer wrapper, for evaluation's decoding (not saved).
  """

  def __init__(self, seq2seq, *, vocab=None, label_smoothing: float = 0.0):
    super().__init__(name="seq2seq_model")
    self.seq2seq = seq2seq
    self.vocab = vocab
    self.label_smoothing = label_smoothing
    config = seq2seq.config
    self.pad_id = int(config.pad_token_id)
    self.decoder_start_id = int(
        config.decoder_start_token_id
        if config.decoder_start_token_id is not None
        else config.pad_token_id
    )
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.accuracy_tracker = tf_keras.metrics.Mean(name="token_accuracy")

  @property
  def metrics(self):
    return [self.loss_tracker, self.accuracy_tracker]

  def call(self, inputs, training=False):
    """float [batch, target_len, vocab] logits of each next target token."""
    return self.seq2seq(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        decoder_input_ids=inputs["decoder_input_ids"],
        training=training,
    ).logits

  def _loss(self, inputs, labels, training):
    """(the summed token loss, the number of real target tokens) of the
    batch, float32 scalars; the logged metrics take the batch in."""
    decoder_input_ids = shift_targets(
        labels, decoder_start_id=self.decoder_start_id, pad_id=self.pad_id
    )
    logits = self(
        {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            "decoder_input_ids": decoder_input_ids,
        },
        training=training,
    )
    losses, mask = masked_token_losses(
        labels, logits, label_smoothing=self.label_smoothing
    )
    tokens = tf.reduce_sum(mask)
    loss_sum = tf.reduce_sum(losses)
    correct = tf.cast(
        tf.equal(
            tf.argmax(logits, axis=-1, output_type=tf.int32),
            tf.cast(labels, tf.int32),
        ),
        tf.float32,
    )
    self.loss_tracker.update_state(
        loss_sum / tf.maximum(tokens, 1.0), sample_weight=tokens
    )
    self.accuracy_tracker.update_state(correct, sample_weight=mask)
    return loss_sum, tokens

  def train_step(self, data):
    inputs, labels = data
    replica = tf.distribute.get_replica_context()
    replicas = replica.num_replicas_in_sync
    with tf.GradientTape() as tape:
      loss_sum, tokens = self._loss(inputs, labels, training=True)
      # The mean over the real target tokens of the whole global batch:
      # replicas' gradients are summed, so each divides its own sum by the
      # global count. 2 replicas with 30 and 2 tokens: each sum / 32; a
      # replica with a short (or empty) final shard weighs by its tokens.
      global_tokens = replica.all_reduce(
          tf.distribute.ReduceOp.SUM, tf.stop_gradient(tokens)
      )
      loss = loss_sum / tf.maximum(global_tokens, 1.0)
      if self.losses:
        # Each replica holds the whole penalty: its share is 1 / replicas.
        loss += tf.add_n(self.losses) / replicas
    self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
    return {metric.name: metric.result() for metric in self.metrics}

  def test_step(self, data):
    inputs, labels = data
    self._loss(inputs, labels, training=False)
    return {metric.name: metric.result() for metric in self.metrics}

  def dummy_inputs(self) -> dict[str, tf.Tensor]:
    ids = tf.constant([[self.pad_id, self.pad_id]], tf.int32)
    return {
        "input_ids": ids,
        "attention_mask": tf.ones_like(ids),
        "decoder_input_ids": ids,
    }


def model_config_from(path: str, vocab_size: int, *, pad_id: int, eos_id: int):
  """The `transformers` config of a from-scratch model, sized to the vocab."""
  if path == DEFAULT_MODEL_CONFIG:
    values = dict(DEFAULT_T5_CONFIG)
  else:
    try:
      with open(path, encoding="utf-8") as f:
        values = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(
          f"--model_config={path!r} is not valid JSON "
          f"({e.msg} at line {e.lineno})."
      ) from e
  model_type = values.pop("model_type", None)
  if model_type is None:
    raise ValueError(
        f'--model_config={path!r} has no "model_type" (t5, '
        "bart, marian, ...)."
    )
  values.update(
      vocab_size=vocab_size,
      pad_token_id=pad_id,
      eos_token_id=eos_id,
      decoder_start_token_id=pad_id,
  )
  try:
    return transformers.AutoConfig.for_model(model_type, **values)
  except ValueError as e:
    raise ValueError(f"--model_config={path!r}: {e}") from e


def seq2seq_class():
  return transformers.TFAutoModelForSeq2SeqLM


def build_seq2seq(model_config):
  """A randomly initialized encoder-decoder with its variables created."""
  try:
    seq2seq = seq2seq_class().from_config(model_config)
  except ValueError as e:
    raise ValueError(
        f"{type(model_config).__name__} is not a TF "
        f"encoder-decoder: {str(e).splitlines()[0]}"
    ) from e
  return seq2seq
