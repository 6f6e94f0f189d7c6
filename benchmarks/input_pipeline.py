r"""Input pipeline speed on its own: does it keep the model fed?

  python benchmarks/input_pipeline.py

Reads the demo's training file, tokenizes it with the in-graph tokenizer and
runs the training `tf.data` pipeline (length-sorted batches, shuffle, padding)
for --epochs epochs without a model, the way `training.train()` builds it.
Prints examples/s for tokenization and for batching, and one JSON line.
Compare with training examples/s from finetune_throughput.py: the pipeline
should be at least 20x faster than the training steps that consume it.
"""

import argparse
import json
import time

import tf_finetune  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow.

from tf_finetune.data import pipeline, readers
from tf_finetune.models import backbone
from tf_finetune.text.tokenization import TextEncoder


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="assets/minilm")
  parser.add_argument(
      "--train_file", default="assets/rotten_tomatoes/train.csv"
  )
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args()

  examples = readers.read_file(
      args.train_file,
      text_column="text",
      text_pair_column=None,
      label_column="label",
  )
  encoder = TextEncoder.from_hf_tokenizer(
      backbone.load_tokenizer(args.model), args.max_seq_length
  )
  label_vocab = sorted(set(examples.labels))
  pipeline.encode_examples(examples, encoder, label_vocab)  # Warm-up.
  start = time.perf_counter()
  encoded = pipeline.encode_examples(examples, encoder, label_vocab)
  tokenize_seconds = time.perf_counter() - start

  dataset = pipeline.training_dataset(
      encoded,
      batch_size=args.batch_size,
      bucketing=True,
      seed=0,
      pad_id=encoder.pad_id,
      shuffle_buffer=len(encoded),
      epochs=args.epochs,
  )
  for _ in dataset.take(1):  # Graph construction and first fill.
    pass
  start = time.perf_counter()
  batches = 0
  for _ in dataset:
    batches += 1
  batch_seconds = time.perf_counter() - start
  report = {
      "benchmark": "input_pipeline",
      "date": time.strftime("%Y-%m-%d"),
      "examples": len(encoded),
      "tokenize_examples_per_second": round(len(encoded) / tokenize_seconds),
      "batched_examples_per_second": round(
          args.epochs * len(encoded) / batch_seconds
      ),
      "batches_per_second": round(batches / batch_seconds, 1),
  }
  print(
      f"tokenize: {report['tokenize_examples_per_second']:,} examples/s; "
      f"shuffle + sort + pad: {report['batched_examples_per_second']:,} "
      f"examples/s ({report['batches_per_second']} batches/s)"
  )
  print(json.dumps(report))


if __name__ == "__main__":
  main()
