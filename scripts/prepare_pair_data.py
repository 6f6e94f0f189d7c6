r"""Builds an offline sentence-pair task from the real Rotten Tomatoes data.

  python scripts/prepare_demo_data.py --output_dir=assets   # first
  python scripts/prepare_pair_data.py --output_dir=assets

"Do these two review snippets share a sentiment?" Within each split of
<output_dir>/rotten_tomatoes/ (so no snippet crosses splits), the snippets
are shuffled with a fixed seed and paired off, first with second, third with
fourth, ...: every snippet appears in exactly one pair of the validation and
test splits, and in --train_pairings pairs (one per shuffle, 1 by default)
of the training split, which gives the model more pairs to learn from
without new snippets. A pair is labelled
"same" when both snippets are fresh or both rotten, else "different" (about
half each, since 58% of the snippets are fresh: 0.58^2 + 0.42^2 = 0.51),
and its `fresh_count` is how many of the two are fresh (0, 1 or 2), a
score for regression on pairs. Written as
<output_dir>/sentiment_pairs/{train,validation,test}.csv with columns
text_a, text_b, label, fresh_count.

Running it again rewrites the same files.
"""

import argparse
import csv
import os
import random

SPLITS = ("train", "validation", "test")
SEED = 4321


def build_pairs(rows: list[dict], seed: int) -> list[dict]:
  """Pairs off the snippets of one split; labels say if sentiments match."""
  rows = list(rows)
  random.Random(seed).shuffle(rows)
  return [
      {
          "text_a": first["text"],
          "text_b": second["text"],
          "label": "same" if first["label"] == second["label"] else "different",
          "fresh_count": (first["label"] == "fresh")
          + (second["label"] == "fresh"),
      }
      for first, second in zip(rows[0::2], rows[1::2])
  ]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", default="assets")
  parser.add_argument(
      "--train_pairings",
      type=int,
      default=1,
      help="Pairs each training snippet appears in.",
  )
  args = parser.parse_args()
  source = os.path.join(args.output_dir, "rotten_tomatoes")
  target = os.path.join(args.output_dir, "sentiment_pairs")
  os.makedirs(target, exist_ok=True)
  for offset, split in enumerate(SPLITS):
    with open(os.path.join(source, f"{split}.csv"), encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    pairings = args.train_pairings if split == "train" else 1
    pairs = [
        pair
        for pairing in range(pairings)
        for pair in build_pairs(rows, SEED + offset + 10 * pairing)
    ]
    path = os.path.join(target, f"{split}.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(
          f, fieldnames=["text_a", "text_b", "label", "fresh_count"]
      )
      writer.writeheader()
      writer.writerows(pairs)
    same = sum(pair["label"] == "same" for pair in pairs)
    print(
        f"{path}: {len(pairs)} pairs ({same} same, {len(pairs) - same} "
        "different)"
    )


if __name__ == "__main__":
  main()
