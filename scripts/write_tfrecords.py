r"""Converts CSV/TSV/JSONL files (optionally .gz) to sharded TFRecord files.

  python scripts/write_tfrecords.py --input='data/train-*.csv.gz' \
      --output_prefix=data/tfrecord/train --num_shards=16 --gzip

Writes <output_prefix>-00000-of-00016.tfrecord[.gz], ... holding one
tf.train.Example per row: the --text_column, --text_pair_column and
--label_column values as bytes features of one UTF-8 value each, under the
same names, which `--train_file=<output_prefix>-*` then reads with the same
--text_column/--label_column flags. Rows go round-robin to the shards, so
shards are of even size and in input order within each shard. The input is
read a record at a time (any size) with the training readers' checks; the
first bad record stops the conversion, naming its file and line.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from tf_finetune.data import shards  # noqa: E402


def _bytes_feature(value: str) -> tf.train.Feature:
  return tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[value.encode("utf-8")])
  )


def write_tfrecords(
    spec: str,
    output_prefix: str,
    *,
    num_shards: int,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    compress: bool,
) -> tuple[list[str], int]:
  """Writes the shards; returns (their paths, rows written).

  Raises:
    ValueError: naming the file and line of the first bad record.
  """
  if num_shards < 1:
    raise ValueError(f"--num_shards={num_shards} must be at least 1.")
  columns = shards.Columns(text_column, text_pair_column, label_column)
  suffix = ".tfrecord.gz" if compress else ".tfrecord"
  paths = [
      f"{output_prefix}-{i:05d}-of-{num_shards:05d}{suffix}"
      for i in range(num_shards)
  ]
  os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
  options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
  writers = [tf.io.TFRecordWriter(path, options) for path in paths]
  count = 0
  try:
    for path in shards.expand(spec, "--input"):
      for _, example in shards.iter_examples(path, "--input", columns):
        if isinstance(example, shards.BadRecord):
          raise example
        features = {}
        for name, value in zip(
            (text_column, text_pair_column, label_column), example
        ):
          if name:
            features[name] = _bytes_feature(value)
        record = tf.train.Example(features=tf.train.Features(feature=features))
        writers[count % num_shards].write(record.SerializeToString())
        count += 1
  finally:
    for writer in writers:
      writer.close()
  return paths, count


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="File, glob or list.")
  parser.add_argument("--output_prefix", required=True)
  parser.add_argument("--num_shards", type=int, default=8)
  parser.add_argument("--text_column", default="text")
  parser.add_argument("--text_pair_column", default=None)
  parser.add_argument(
      "--label_column", default="label", help="'' for unlabelled rows."
  )
  parser.add_argument("--gzip", action="store_true", help="Write .gz shards.")
  args = parser.parse_args(argv)
  try:
    paths, count = write_tfrecords(
        args.input,
        args.output_prefix,
        num_shards=args.num_shards,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column or None,
        compress=args.gzip,
    )
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(f"Wrote {count} rows to {len(paths)} shards: {paths[0]} ...")


if __name__ == "__main__":
  main()
