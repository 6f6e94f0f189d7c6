"""tf.data pipelines: tokenize once, bucket by length, shuffle, prefetch.

Examples are tokenized once per run by the in-graph `TextEncoder` (the same one
the export uses) and kept in memory as ragged ids. Training batches group
examples of similar length (length-sorted windows of shuffled data), which on
the Rotten Tomatoes snippets cuts padding from 1.93 padded tokens per real
token (per-batch padding) to about 1.03; evaluation sorts by length and
restores the original order afterwards.

Texts longer than `max_seq_length` are truncated by the encoder's rule, or,
read in windows (`--long_document=chunks`), each example holds its windows:
a batch is then [batch, windows, seq_len] with a CHUNK_MASK [batch,
windows], padded to the longest document of the batch. The log says how
many texts lost tokens, and how many (`long_documents.TruncationStats`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune.data.readers import Examples
from tf_finetune.text import long_documents
from tf_finetune.text.long_documents import CHUNK_MASK
from tf_finetune.text.tokenization import MODEL_INPUTS, TextEncoder

# Rows tokenized per call; bounds the size of the intermediate ragged tensors.
_ENCODE_CHUNK = 8192
# Batches per length-sorted window. Measured on the Rotten Tomatoes snippets
# (batch 32, max length 128): padded tokens per real token are 1.93 with
# per-batch padding, 1.08 with tf.data's bucket_by_sequence_length and 1.03
# with windows of 50 batches sorted by length.
WINDOW_BATCHES = 50


@dataclasses.dataclass(frozen=True)
class EncodedExamples:
  """Token ids of a set of examples.

  Attributes:
    input_ids: int32 RaggedTensor [num_examples, (length)], or [num_examples,
      (windows), (length)] with `chunked`.
    token_type_ids: int32 RaggedTensor shaped as input_ids.
    lengths: int64 array [num_examples] of packed lengths (of all windows
      of an example, with `chunked`).
    label_ids: The task's targets, one row per example: int32 [num_examples]
      class ids, float32 [num_examples] scores or [num_examples, labels]
      0/1 targets, or an int32 RaggedTensor [num_examples, (length)] of
      per-token tags; None without labels.
    num_truncated: Examples cut at max_seq_length.
    label_padding: What pads per-token targets in a batch (default 0).
    word_positions: Token classification: per example, the position of
      each word's first sub-word (-1: none).
    pad_id: The token id that pads input_ids in a batch.
    model_inputs: The inputs batches hold, as the model's family takes
      them (no token_type_ids for DistilBERT or RoBERTa).
    chunked: Each example is a document of windows; batches add CHUNK_MASK.
    truncation_stats: What the examples lost to max_seq_length.
  """

  input_ids: tf.RaggedTensor
  token_type_ids: tf.RaggedTensor
  lengths: np.ndarray
  label_ids: Optional[Any]
  num_truncated: int
  label_padding: Any = 0
  word_positions: Optional[list] = None
  pad_id: int = 0
  model_inputs: tuple[str, ...] = MODEL_INPUTS
  chunked: bool = False
  truncation_stats: Optional[long_documents.TruncationStats] = None

  def __len__(self) -> int:
    return len(self.lengths)


def encode_examples(
    examples: Examples,
    encoder: TextEncoder,
    label_vocab: Optional[Sequence[str]] = None,
) -> EncodedExamples:
  """Tokenizes and packs every example; maps labels to ids.

  Logs how many examples lost tokens to max_seq_length and what share of
  all tokens they lost (with windows: windows per document too).
  """
  id_chunks, type_chunks, content_lengths = [], [], []
  pair = examples.text_pairs is not None
  chunked = encoder.chunks and not pair
  for start in range(0, len(examples), _ENCODE_CHUNK):
    stop = start + _ENCODE_CHUNK
    first = encoder.tokenize(tf.constant(examples.texts[start:stop]))
    second = None
    content = first.row_lengths()
    if pair:
      second = encoder.tokenize(tf.constant(examples.text_pairs[start:stop]))
      content += second.row_lengths()
    content_lengths.append(content.numpy())
    if chunked:
      input_ids, type_ids = encoder.pack_windows(first)
    else:
      input_ids, type_ids = encoder.pack(first, second)
    id_chunks.append(input_ids)
    type_chunks.append(type_ids)
  input_ids = tf.concat(id_chunks, axis=0)
  type_ids = tf.concat(type_chunks, axis=0)
  # A pair's budget is what the pair template's special tokens leave; its
  # longest-first truncation keeps min(a + b, budget) tokens.
  budget = max(encoder.max_seq_length - encoder.num_special_tokens(pair), 0)
  stats = long_documents.truncation_stats(
      np.concatenate(content_lengths) if content_lengths else np.zeros(0),
      budget,
      encoder.long_documents if not pair else long_documents.LongDocuments(),
  )
  if stats.num_truncated or chunked:
    logging.info(
        "%s",
        stats.describe(
            examples.source, encoder.long_documents, encoder.max_seq_length
        ),
    )
  lengths = input_ids.row_lengths()
  if chunked:
    lengths = tf.reduce_sum(input_ids.row_lengths(axis=2), axis=1)
  label_ids = None
  if label_vocab is not None and examples.labels is not None:
    index = {label: i for i, label in enumerate(label_vocab)}
    label_ids = np.array(
        [index[label] for label in examples.labels], dtype=np.int32
    )
  return EncodedExamples(
      input_ids,
      type_ids,
      lengths.numpy(),
      label_ids,
      stats.num_truncated,
      pad_id=encoder.pad_id,
      model_inputs=encoder.model_inputs,
      chunked=chunked,
      truncation_stats=stats,
  )


def num_batches(num_examples: int, batch_size: int) -> int:
  """Batches in one epoch, with or without bucketing."""
  return math.ceil(num_examples / batch_size)


def _to_model_inputs(model_inputs, input_ids, type_ids, length, *labels):
  """The model's inputs of a padded batch, with the attention mask."""
  features = {
      "input_ids": input_ids,
      "attention_mask": tf.sequence_mask(
          length, tf.shape(input_ids)[1], dtype=tf.int32
      ),
      "token_type_ids": type_ids,
  }
  features = {name: features[name] for name in model_inputs}
  return (features, labels[0]) if labels else features


def _to_chunked_model_inputs(
    model_inputs, input_ids, type_ids, attention_mask, chunk_mask, *labels
):
  """The model's inputs of a padded batch of documents' windows."""
  features = {
      "input_ids": input_ids,
      "attention_mask": attention_mask,
      "token_type_ids": type_ids,
  }
  features = {name: features[name] for name in model_inputs}
  features[CHUNK_MASK] = chunk_mask
  return (features, labels[0]) if labels else features


def _dense_windows(input_ids, type_ids, length, *labels):
  """One document's ragged windows [(windows), (length)] as dense tensors
  [windows, length], with their attention mask and a chunk mask [windows]
  of ones (a batch pads both with zeros)."""
  del length  # Sorted by; the batch needs the masks instead.
  return (
      input_ids.to_tensor(),
      type_ids.to_tensor(),
      tf.ones_like(input_ids, tf.int32).to_tensor(),
      tf.ones_like(input_ids.row_lengths(), tf.int32),
  ) + labels


def _batching(encoded: EncodedExamples, pad_id: int, with_labels: bool):
  """(map before padded_batch or None, padding values, map after it)."""
  label_padding = (_label_padding(encoded),) if with_labels else ()
  if encoded.chunked:
    return (
        _dense_windows,
        (pad_id, 0, 0, 0) + label_padding,
        functools.partial(_to_chunked_model_inputs, encoded.model_inputs),
    )
  return (
      None,
      (pad_id, 0, 0) + label_padding,
      functools.partial(_to_model_inputs, encoded.model_inputs),
  )


def _components(encoded: EncodedExamples, order=None):
  input_ids, type_ids = encoded.input_ids, encoded.token_type_ids
  lengths, labels = encoded.lengths, encoded.label_ids
  if order is not None:
    input_ids = tf.gather(input_ids, order)
    type_ids = tf.gather(type_ids, order)
    lengths = lengths[order]
    if isinstance(labels, tf.RaggedTensor):
      labels = tf.gather(labels, order)
    elif labels is not None:
      labels = labels[order]
  components = (input_ids, type_ids, lengths.astype(np.int32))
  return components + ((labels,) if labels is not None else ())


def _label_padding(encoded: EncodedExamples) -> tf.Tensor:
  """The padding of per-token targets, in the targets' dtype."""
  dtype = (
      encoded.label_ids.dtype
      if isinstance(encoded.label_ids, tf.RaggedTensor)
      else tf.as_dtype(np.asarray(encoded.label_ids).dtype)
  )
  return tf.constant(encoded.label_padding, dtype)


def _dataset_of(components) -> tf.data.Dataset:
  """One element per example; ragged rows become dense 1-D tensors (a
  document's windows stay ragged)."""
  return tf.data.Dataset.from_tensor_slices(components).map(
      lambda *example: example
  )


def _shard_by_example(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Lets a multi-worker strategy give each worker its share of each batch.

  Every worker holds all examples in memory and builds the same batches (the
  shuffles are seeded); tf.distribute splits each global batch into one
  piece per replica and each worker keeps its replicas' pieces (sharding by
  data). Sharding by file, TensorFlow's first choice, does not apply to
  in-memory examples. Other strategies ignore this option.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA
  )
  return dataset.with_options(options)


def _sort_window(input_ids, type_ids, lengths, labels):
  """Sorts one window of examples by length (stable: ties keep the shuffle).

  `input_ids` and `type_ids` are ragged [examples, (length)] or, for
  documents in windows, [examples, (windows), (length)]."""
  order = tf.argsort(lengths, stable=True)
  return (
      tf.gather(input_ids, order),
      tf.gather(type_ids, order),
      tf.gather(lengths, order),
      tf.gather(labels, order),
  )


def _epoch_seed(seed: int, epoch: int) -> int:
  """The shuffle seed of 0-based `epoch`."""
  # A prime stride keeps the epochs' seeds apart from each other's +1.
  return seed + 7919 * epoch


def training_dataset(
    encoded: EncodedExamples,
    *,
    batch_size: int,
    bucketing: bool,
    seed: int,
    pad_id: int,
    shuffle_buffer: int,
    epochs: int = 1,
    start_epoch: int = 0,
    start_batch: int = 0,
) -> tf.data.Dataset:
  """The shuffled batches of a run's epochs, back to back.

  Each epoch is shuffled with a seed of its own, made from `seed` and the
  epoch's number, so epoch e holds the same batches in the same order
  whichever process makes it: a run resumed in epoch e, batch b starts
  from `start_epoch=e, start_batch=b` and sees exactly the batches an
  uninterrupted run would have seen from there on.

  With bucketing, each epoch is shuffled, cut into windows of
  `WINDOW_BATCHES` batches, each window sorted by length and cut into
  batches, and the batches shuffled again: batches hold examples of similar
  length from anywhere in the data, and every batch still holds
  `batch_size` examples (one partial batch per epoch, as without bucketing).

  Args:
    encoded: Examples with labels.
    batch_size: Global batch size (per-replica size x replicas).
    bucketing: Group examples of similar length into batches.
    seed: Seeds the shuffles; each epoch still gets a new order.
    pad_id: The tokenizer's [PAD] id.
    shuffle_buffer: Largest shuffle buffer; the whole set when it fits.
    epochs: Epochs of the run.
    start_epoch: The 0-based epoch the batches start in.
    start_batch: Batches of `start_epoch` already trained on, skipped.

  Returns:
    Dataset of (features, label_ids): features a dict of int32
    [batch, seq_len] tensors (`encoded.model_inputs`; [batch, windows,
    seq_len] and CHUNK_MASK [batch, windows] for documents in windows),
    label_ids int32 [batch]; `num_batches(len(encoded), batch_size)`
    batches per epoch.
  """
  if encoded.label_ids is None:
    raise ValueError("Training examples need labels.")
  steps_per_epoch = num_batches(len(encoded), batch_size)
  if not (0 <= start_epoch < epochs and 0 <= start_batch < steps_per_epoch):
    raise ValueError(
        f"Cannot start in epoch {start_epoch + 1}, batch {start_batch + 1} "
        f"of a run of {epochs} epoch(s) of {steps_per_epoch} batches."
    )
  densify, padding_values, to_model_inputs = _batching(
      encoded, pad_id, with_labels=True
  )
  examples = _dataset_of(_components(encoded))
  buffer = min(len(encoded), shuffle_buffer)

  def one_epoch(epoch):
    epoch_seed = _epoch_seed(seed, epoch)
    dataset = examples.shuffle(
        buffer, seed=epoch_seed, reshuffle_each_iteration=False
    )
    if bucketing:
      dataset = dataset.ragged_batch(batch_size * WINDOW_BATCHES)
      dataset = dataset.map(_sort_window).unbatch().map(lambda *x: x)
    if densify is not None:
      dataset = dataset.map(densify)
    dataset = dataset.padded_batch(batch_size, padding_values=padding_values)
    if bucketing:
      # Without this, each window's batches would come shortest to longest.
      dataset = dataset.shuffle(
          WINDOW_BATCHES, seed=epoch_seed + 1, reshuffle_each_iteration=False
      )
    return dataset

  # One dataset per epoch, built here: each epoch's seeds are Python ints
  # (tf.data's shuffle takes a tensor seed only with a global seed set).
  dataset = functools.reduce(
      tf.data.Dataset.concatenate,
      [one_epoch(epoch) for epoch in range(start_epoch, epochs)],
  ).skip(start_batch)
  # Windowing hides the batch count from tf.data; state it, so Keras knows
  # how many batches there are.
  dataset = dataset.apply(
      tf.data.experimental.assert_cardinality(
          (epochs - start_epoch) * steps_per_epoch - start_batch
      )
  )
  return _shard_by_example(
      dataset.map(
          to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE
      ).prefetch(tf.data.AUTOTUNE)
  )


def inference_dataset(
    encoded: EncodedExamples,
    *,
    batch_size: int,
    with_labels: bool,
    pad_id: Optional[int] = None,
) -> tuple[tf.data.Dataset, np.ndarray]:
  """Batches sorted by length, with the order to undo the sort.

  `pad_id` pads the input ids (default: the encoder's, `encoded.pad_id`).

  Returns:
    (dataset, order): predictions come out in `order`; `out[order] = preds`
    restores the original order.
  """
  order = np.argsort(encoded.lengths, kind="stable")
  components = _components(encoded, order)
  if not with_labels:
    components = components[:3]
  elif len(components) < 4:
    raise ValueError("Evaluation examples need labels.")
  if pad_id is None:
    pad_id = encoded.pad_id
  densify, padding_values, to_model_inputs = _batching(
      encoded, pad_id, with_labels
  )
  dataset = _dataset_of(components)
  if densify is not None:
    dataset = dataset.map(densify)
  dataset = dataset.padded_batch(batch_size, padding_values=padding_values)
  return (
      _shard_by_example(
          dataset.map(to_model_inputs).prefetch(tf.data.AUTOTUNE)
      ),
      order,
  )
