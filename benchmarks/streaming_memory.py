r"""Peak memory of one streamed training epoch against the number of rows.

  python benchmarks/streaming_memory.py --rows=20000,200000

For each row count, a fresh process writes that many generated rows to 8
gzip-compressed CSV shards, builds the streaming training dataset
(`data.streaming.training_dataset`, WordPiece tokenization in the graph,
bucketing, --shuffle_buffer 10,000) and reads one epoch; it prints the rows,
the batches, the seconds and the process's peak resident memory. Memory that
does not grow with the rows is what streaming promises.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = (
    "the movie film plot actor story was is a and this with very quite good "
    "great wonderful fun moving superb bad dull boring awful tedious weak"
).split()


def _write_shards(directory: str, rows: int, shards: int) -> None:
  rng = random.Random(0)
  files = [
      gzip.open(os.path.join(directory, f"train-{i}.csv.gz"), "wt", newline="")
      for i in range(shards)
  ]
  writers = [csv.writer(f) for f in files]
  for writer in writers:
    writer.writerow(["text", "label"])
  for i in range(rows):
    text = " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))
    writers[i % shards].writerow([text, rng.choice(["neg", "pos"])])
  for f in files:
    f.close()


def measure(rows: int, batch_size: int = 32) -> dict:
  """One epoch over `rows` generated rows; runs in this process."""
  from tf_finetune.data import shards, streaming
  from tf_finetune.text.tokenization import TextEncoder

  with tempfile.TemporaryDirectory() as directory:
    _write_shards(directory, rows, 8)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS
    encoder = TextEncoder.wordpiece(
        vocab=vocab, lower_case=True, max_seq_length=64
    )
    split = streaming.StreamedSplit(
        shards=tuple(shards.expand(f"{directory}/train-*", "--train_file")),
        flag="--train_file",
        columns=shards.Columns("text", None, "label"),
        encoder=encoder,
        label_vocab=("neg", "pos"),
        num_examples=rows,
    )
    steps = math.ceil(rows / batch_size)
    dataset = streaming.training_dataset(
        split,
        batch_size=batch_size,
        steps_per_epoch=steps,
        bucketing=True,
        seed=0,
        shuffle_buffer=10_000,
    )
    start = time.time()
    batches = sum(1 for _ in dataset)
    seconds = time.time() - start
  return {
      "rows": rows,
      "batches": batches,
      "seconds": round(seconds, 1),
      "peak_rss_mb": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
      ),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="20000,200000")
  parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child is not None:
    print(json.dumps(measure(args.child)))
    return
  for rows in (int(r) for r in args.rows.split(",")):
    result = subprocess.run(
        [sys.executable, __file__, f"--child={rows}"],
        capture_output=True,
        text=True,
        check=True,
    )
    print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
  main()
