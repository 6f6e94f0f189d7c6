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
  if isinstance(seq2seq, transformers.TFEncoderDecoderModel):
    # A warm-started run, rebuilt: the same changes, before weights load.
    make_generation_traceable(seq2seq)
    leave_the_encoder_pooler_out(seq2seq)
    if model_config.tie_encoder_decoder:
      share_encoder_decoder(seq2seq)
  return seq2seq


# Warm starting from an encoder checkpoint (Rothe, Narayan and Severyn, 2020).
def special_token_ids(tokenizer) -> dict[str, int]:
  """The decoder's start, pad and end ids from an encoder's tokenizer:
  [CLS], [PAD], [SEP] for BERT (<s>, <pad>, </s> for RoBERTa)."""
  start = tokenizer.bos_token_id
  end = tokenizer.eos_token_id
  if tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
    start, end = tokenizer.cls_token_id, tokenizer.sep_token_id
  ids = {
      "decoder_start_token_id": start,
      "pad_token_id": tokenizer.pad_token_id,
      "eos_token_id": end,
  }
  missing = [name for name, value in ids.items() if value is None]
  if missing:
    raise ValueError(
        f"{type(tokenizer).__name__} has no {', '.join(missing)}: "
        "--warm_start needs a tokenizer with [CLS]/[PAD]/[SEP] (or "
        "<s>/<pad>/</s>) tokens."
    )
  return ids


def set_special_token_ids(seq2seq, ids: dict[str, int]) -> None:
  """Puts the start, pad and end ids where training and `generate` read
  them: the encoder-decoder's config and its generation config."""
  for name, value in ids.items():
    setattr(seq2seq.config, name, value)
    setattr(seq2seq.config.decoder, name, value)
    if getattr(seq2seq, "generation_config", None) is not None:
      setattr(seq2seq.generation_config, name, value)
  if getattr(seq2seq, "generation_config", None) is not None:
    seq2seq.generation_config.bos_token_id = ids["decoder_start_token_id"]


def leave_the_encoder_pooler_out(seq2seq) -> None:
  """Keeps the encoder checkpoint's pooler (a dense layer on the first
  token, loaded with the checkpoint) out of training: nothing in an
  encoder-decoder reads it, so it would get no gradient (and TensorFlow
  would warn of that at every trace)."""
  from tf_finetune.models import backbone as backbone_lib

  pooler = getattr(backbone_lib._main_layer(seq2seq.encoder), "pooler", None)
  if isinstance(pooler, tf_keras.layers.Layer):
    pooler.trainable = False


def share_encoder_decoder(seq2seq) -> None:
  """BERT2BERT-share: the encoder runs the decoder's layers.

  The encoder's embeddings and, in each layer, every sub-layer the decoder
  also has (self-attention, feed-forward, their norms) become the
  decoder's; the decoder keeps its own cross-attention and output layer.
  Both were loaded from the same checkpoint, so they start equal. The
  decoder's self-attention returns its keys and values for `generate`'s
  cache; the encoder's layers ignore that extra output.
  """
  from tf_finetune.models import backbone as backbone_lib

  encoder, decoder = seq2seq.encoder, seq2seq.decoder
  encoder_layers = backbone_lib.encoder_layers(encoder)
  decoder_layers = backbone_lib.encoder_layers(decoder)
  if len(encoder_layers) != len(decoder_layers):
    raise ValueError(
        "--share_encoder_decoder: the encoder has "
        f"{len(encoder_layers)} layers and the decoder "
        f"{len(decoder_layers)}; they must match."
    )
  backbone_lib._main_layer(encoder).embeddings = backbone_lib.embedding_layer(
      decoder
  )
  for encoder_layer, decoder_layer in zip(encoder_layers, decoder_layers):
    for name, sublayer in list(vars(decoder_layer).items()):
      if (
          isinstance(sublayer, tf_keras.layers.Layer)
          and not name.startswith("_")
          and isinstance(
              getattr(encoder_layer, name, None), tf_keras.layers.Layer
          )
      ):
        setattr(encoder_layer, name, sublayer)


def make_generation_traceable(seq2seq) -> None:
  """Lets `--jit_generate` trace `generate` of a warm-started
  encoder-decoder (the export has its own search, `search_in_graph`).

  Traced (not eager), `transformers`' TF `generate` keeps the decoder's
  past keys and values in buffers padded to the most tokens, which a
  BERT-family decoder cannot use: it counts the padding as past tokens for
  its position ids, and `TFEncoderDecoderModel` drops the mask of the
  filled places. Traced, this model therefore decodes without the cache,
  reading all tokens so far at each step (the same translations, with
  quadratic cost in their length); eager generation keeps the cache. The
  decoder's input preparation is also replaced by one that reads the
  dynamic batch size of a serving signature (the original calls
  `tf.ones(input_ids.shape)`).
  """
  decoder = seq2seq.decoder
  prepare_encoder_decoder = seq2seq.prepare_inputs_for_generation
  update_traced = seq2seq._update_model_kwargs_for_xla_generation

  def prepare_decoder(
      input_ids, past_key_values=None, attention_mask=None, **kwargs
  ):
    del kwargs  # As the original: the decoder reads these three only.
    if attention_mask is None:
      attention_mask = tf.ones(tf.shape(input_ids))
    if past_key_values is not None:
      input_ids = input_ids[:, -1:]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "past_key_values": past_key_values,
    }

  def prepare(
      input_ids,
      past_key_values=None,
      attention_mask=None,
      use_cache=None,
      encoder_outputs=None,
      **kwargs,
  ):
    if not tf.executing_eagerly():
      past_key_values, use_cache = None, False
    return prepare_encoder_decoder(
        input_ids,
        past_key_values=past_key_values,
        attention_mask=attention_mask,
        use_cache=use_cache,
        encoder_outputs=encoder_outputs,
        **kwargs,
    )

  def update_without_cache(model_outputs, model_kwargs, *args, **kwargs):
    if tf.executing_eagerly():
      return update_traced(model_outputs, model_kwargs, *args, **kwargs)
    # Nothing carried between steps: the next one reads all tokens again.
    return model_kwargs

  decoder.prepare_inputs_for_generation = prepare_decoder
  seq2seq.prepare_inputs_for_generation = prepare
  seq2seq._update_model_kwargs_for_xla_generation = update_without_cache


def decoder_config_of(encoder_config):
  """The encoder checkpoint's config as a causal decoder that attends to
  the encoder (`is_decoder`, `add_cross_attention`)."""
  decoder_config = encoder_config.__class__.from_dict(encoder_config.to_dict())
  decoder_config.is_decoder = True
  decoder_config.add_cross_attention = True
  return decoder_config


def warm_started_seq2seq(model: str, tokenizer, *, share: bool, from_pt: bool):
  """A `TFEncoderDecoderModel` whose encoder and decoder start from the
  encoder checkpoint `model` (BERT2BERT, or BERT2BERT-share with `share`).

  The decoder's cross-attention and the output layer's transform are new
  (randomly initialized); its output projection is tied to its word
  embeddings, as in the checkpoint's masked-LM head.
  """
  from tf_finetune.models import backbone as backbone_lib

  encoder_config = backbone_lib.load_model_config(model)
  encoder_config.is_decoder = False
  encoder_config.add_cross_attention = False
  if not hasattr(transformers, "TFEncoderDecoderModel"):
    raise ValueError("This transformers has no TFEncoderDecoderModel.")
  # Silences the report of the checkpoint's unused pooler and its missing
  # cross-attention: both expected when warm-starting a decoder.
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    seq2seq = (
        transformers.TFEncoderDecoderModel.from_encoder_decoder_pretrained(
            model,
            model,
            encoder_config=encoder_config,
            decoder_config=decoder_config_of(encoder_config),
            encoder_from_pt=from_pt,
            decoder_from_pt=from_pt,
            tie_encoder_decoder=share,
        )
    )
  except ImportError as e:
    if from_pt:
      raise backbone_lib.pytorch_needed(model) from e
    raise
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(
        f"--warm_start=bert2bert: --model={model!r} "
        f"({encoder_config.model_type}) cannot start a decoder: "
        f"{str(e).splitlines()[0]} Warm starts need a BERT-family encoder "
        "with a TF causal decoder (BERT, RoBERTa, ELECTRA, XLM-RoBERTa)."
    ) from e
  finally:
    transformers.logging.set_verbosity(verbosity)
  set_special_token_ids(seq2seq, special_token_ids(tokenizer))
  make_generation_traceable(seq2seq)
  leave_the_encoder_pooler_out(seq2seq)
  if share:
    share_encoder_decoder(seq2seq)
  return seq2seq


def warm_start_lr_multipliers(seq2seq, decay: float) -> dict[str, float]:
  """Layer-wise learning-rate decay over a warm-started encoder-decoder.

  Each stack decays from its top layer down to its embeddings, as one
  encoder does (`backbone.layerwise_lr_multipliers`); the decoder's new
  cross-attention and output layer keep the base rate. With L = 6 and
  decay 0.9: encoder and decoder layer 5 -> 1.0, layer 0 -> 0.59,
  embeddings -> 0.53.
  """
  from tf_finetune.models import backbone as backbone_lib

  if decay == 1.0:
    return {}
  multipliers = backbone_lib.layerwise_lr_multipliers(seq2seq.encoder, decay)
  new = {
      variable.name
      for layer in backbone_lib.encoder_layers(seq2seq.decoder)
      for name, sublayer in vars(layer).items()
      if "crossattention" in name
      and isinstance(sublayer, tf_keras.layers.Layer)
      for variable in sublayer.weights
  }
  for name, factor in backbone_lib.layerwise_lr_multipliers(
      seq2seq.decoder, decay
  ).items():
    if name not in new:
      multipliers[name] = factor
  return multipliers


def freeze_warm_started(
    seq2seq, *, frozen_layers: int, freeze_embeddings: bool
) -> None:
  """--freeze_layers: the encoder's bottom layers (with
  --share_encoder_decoder, the decoder's self-attention and feed-forward
  there too); --freeze_embeddings: the word embeddings of both sides (the
  decoder's output projection is tied to them). The decoder's new
  cross-attention always learns."""
  from tf_finetune.models import backbone as backbone_lib

  backbone_lib.set_trainable_layers(
      seq2seq.encoder,
      frozen_layers=frozen_layers,
      freeze_embeddings=freeze_embeddings,
  )
  backbone_lib.embedding_layer(seq2seq.decoder).trainable = (
      not freeze_embeddings
  )
