import numpy as np
import pytest
import tensorflow as tf

from conftest import make_sentiment_rows
from tf_finetune.data import pipeline, readers
from tf_finetune.models import backbone
from tf_finetune.text.tokenization import TextEncoder


@pytest.fixture(scope="module")
def encoded(tiny_bert_dir):
  tokenizer = backbone.load_tokenizer(tiny_bert_dir)
  encoder = TextEncoder.from_hf_tokenizer(tokenizer, 64)
  rows = make_sentiment_rows(2000, seed=5)
  # Lengths from 2 to about 60 tokens, like real reviews, not all alike.
  rows += [
      {"text": " ".join(["the movie"] * n), "label": "negative"}
      for n in range(1, 30)
      for _ in range(10)
  ]
  examples = readers.Examples(
      "memory",
      [r["text"] for r in rows],
      None,
      [r["label"] for r in rows],
      list(range(len(rows))),
      rows,
  )
  return pipeline.encode_examples(examples, encoder, ["negative", "positive"])


def _padding_ratio(dataset):
  padded = real = 0
  for features, _ in dataset:
    padded += int(tf.size(features["input_ids"]))
    real += int(tf.reduce_sum(features["attention_mask"]))
  return padded / real


def _orders(dataset):
  return [
      tuple(int(x) for x in tf.reduce_sum(f["input_ids"], axis=1))
      for f, _ in dataset
  ]


def test_bucketing_pads_less_than_per_batch_padding(encoded):
  options = dict(batch_size=16, seed=1, pad_id=0, shuffle_buffer=10_000)
  bucketed = _padding_ratio(
      pipeline.training_dataset(encoded, bucketing=True, **options)
  )
  padded = _padding_ratio(
      pipeline.training_dataset(encoded, bucketing=False, **options)
  )
  assert bucketed < 1.15
  assert bucketed < padded


@pytest.mark.parametrize("bucketing", [True, False])
def test_num_batches_is_exact(encoded, bucketing):
  dataset = pipeline.training_dataset(
      encoded,
      batch_size=16,
      bucketing=bucketing,
      seed=3,
      pad_id=0,
      shuffle_buffer=10_000,
  )
  counted = sum(1 for _ in dataset)
  assert counted == pipeline.num_batches(len(encoded), 16)


def _epochs_dataset(encoded, seed, **start):
  return pipeline.training_dataset(
      encoded,
      batch_size=16,
      bucketing=True,
      seed=seed,
      pad_id=0,
      shuffle_buffer=10_000,
      epochs=3,
      **start,
  )


def test_seeded_shuffle_is_reproducible_and_fresh_each_epoch(encoded):
  steps = pipeline.num_batches(len(encoded), 16)

  def epochs(seed):
    batches = _orders(_epochs_dataset(encoded, seed))
    assert len(batches) == 3 * steps
    return [batches[i * steps : (i + 1) * steps] for i in range(3)]

  first_run, second_run = epochs(7), epochs(7)
  assert first_run == second_run  # Same seed, same sequence of epochs.
  assert first_run[0] != first_run[1]  # Yet every epoch is reshuffled.
  assert epochs(8)[0] != first_run[0]


def test_a_resumed_run_gets_the_batches_from_where_it_stopped(encoded):
  """Epoch 2, batch 3 onwards: the same batches, in the same order, as the
  rest of an uninterrupted run's, whatever was iterated before."""
  steps = pipeline.num_batches(len(encoded), 16)
  whole = _orders(_epochs_dataset(encoded, 7))
  _orders(_epochs_dataset(encoded, 7))  # This process drew more shuffles.
  resumed = _epochs_dataset(encoded, 7, start_epoch=1, start_batch=3)
  assert resumed.cardinality() == 2 * steps - 3
  assert _orders(resumed) == whole[steps + 3 :]


def test_every_example_is_seen_once_per_epoch(encoded):
  dataset = pipeline.training_dataset(
      encoded,
      batch_size=16,
      bucketing=True,
      seed=0,
      pad_id=0,
      shuffle_buffer=10_000,
  )
  labels = np.concatenate([y.numpy() for _, y in dataset])
  assert len(labels) == len(encoded)
  assert labels.sum() == encoded.label_ids.sum()


def test_inference_order_is_restored(encoded):
  dataset, order = pipeline.inference_dataset(
      encoded, batch_size=32, pad_id=0, with_labels=False
  )
  lengths = np.concatenate(
      [f["attention_mask"].numpy().sum(axis=1) for f in dataset]
  )
  restored = np.empty_like(lengths)
  restored[order] = lengths
  np.testing.assert_array_equal(restored, encoded.lengths)
  assert (np.diff(lengths) >= 0).all()  # Sorted: little padding.


def test_truncation_is_counted(tiny_bert_dir):
  tokenizer = backbone.load_tokenizer(tiny_bert_dir)
  encoder = TextEncoder.from_hf_tokenizer(tokenizer, 8)
  texts = ["good", "the movie was very very very good indeed and fun"]
  examples = readers.Examples("memory", texts, None, None, [1, 2], [{}, {}])
  encoded = pipeline.encode_examples(examples, encoder)
  assert encoded.num_truncated == 1
  assert encoded.lengths.tolist() == [3, 8]
