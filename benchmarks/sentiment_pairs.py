r"""Sentence pairs on real data, offline: MiniLM on Rotten Tomatoes pairs.

  make assets
  .venv/bin/python benchmarks/sentiment_pairs.py --recipe=regression
  .venv/bin/python benchmarks/sentiment_pairs.py --recipe=same_sentiment

Builds the pairs of scripts/prepare_pair_data.py (within each split,
snippets shuffled and paired off, every snippet in one pair), fine-tunes
assets/minilm on them with the train binary in a fresh process, and reports
the test metric against a baseline that ignores the texts:

  regression      flags/sentiment_pairs_regression_demo.flags: how many of
                  the two snippets are fresh (0, 1 or 2); Pearson and
                  Spearman correlation, MSE against predicting the training
                  mean.
  same_sentiment  flags/sentiment_pairs_demo.flags: are both fresh or both
                  rotten; accuracy and macro-F1 against the majority class.

Writes <output_dir>/<recipe>/results.json and prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import subprocess
import sys
import time

RECIPES = {
    "regression": "sentiment_pairs_regression_demo.flags",
    "same_sentiment": "sentiment_pairs_demo.flags",
}


def _column(path: str, name: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [row[name] for row in csv.DictReader(f)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", choices=sorted(RECIPES), default="regression")
  parser.add_argument("--assets", default="assets")
  parser.add_argument("--output_dir", default="runs/bench_sentiment_pairs")
  parser.add_argument(
      "--extra_flag",
      action="append",
      default=[],
      help="A train flag that overrides the recipe's, e.g. "
      "--extra_flag=--epochs=3; repeat for several.",
  )
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(
      [
          sys.executable,
          os.path.join(root, "scripts", "prepare_pair_data.py"),
          f"--output_dir={args.assets}",
      ],
      check=True,
  )
  output_dir = os.path.join(args.output_dir, args.recipe)
  model_dir = os.path.join(output_dir, "model")
  flagfile = os.path.join(root, "flags", RECIPES[args.recipe])
  command = [
      sys.executable,
      "-m",
      "tf_finetune.train",
      f"--flagfile={flagfile}",
      f"--model_dir={model_dir}",
      *args.extra_flag,
  ]
  start = time.time()
  subprocess.run(command, check=True)
  seconds = time.time() - start
  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    results = json.load(f)
  pairs = os.path.join(args.assets, "sentiment_pairs")
  test, validation = results["test"], results["validation"]
  report = {
      "recipe": args.recipe,
      "command": " ".join(command[1:]),
      "test_examples": test["num_examples"],
      "seconds": round(seconds, 1),
  }
  if args.recipe == "regression":
    train_mean = sum(
        map(float, _column(os.path.join(pairs, "train.csv"), "fresh_count"))
    ) / len(_column(os.path.join(pairs, "train.csv"), "fresh_count"))
    targets = list(
        map(float, _column(os.path.join(pairs, "test.csv"), "fresh_count"))
    )
    baseline = sum((t - train_mean) ** 2 for t in targets) / len(targets)
    report.update(
        test_pearson=test["pearson"],
        test_spearman=test["spearman"],
        test_mse=test["mse"],
        validation_pearson=validation["pearson"],
        mean_prediction_mse=baseline,
    )
    header = "| task | test Pearson | Spearman | MSE | MSE of the mean | time |"
    row = (
        f"| fresh snippets in a pair, 0-2 ({test['num_examples']} test "
        f"pairs) | {test['pearson']:.4f} | {test['spearman']:.4f} | "
        f"{test['mse']:.4f} | {baseline:.4f} | {seconds / 60:.1f} min |"
    )
  else:
    counts = collections.Counter(
        _column(os.path.join(pairs, "test.csv"), "label")
    )
    majority = max(counts.values()) / sum(counts.values())
    report.update(
        test_accuracy=test["accuracy"],
        test_macro_f1=test["macro_f1"],
        validation_accuracy=validation["accuracy"],
        majority_class_accuracy=majority,
    )
    header = "| task | test accuracy | macro-F1 | majority class | time |"
    row = (
        f"| same sentiment? ({test['num_examples']} test pairs) | "
        f"{test['accuracy']:.4f} | {test['macro_f1']:.4f} | "
        f"{majority:.4f} | {seconds / 60:.1f} min |"
    )
  os.makedirs(output_dir, exist_ok=True)
  with open(
      os.path.join(output_dir, "results.json"), "w", encoding="utf-8"
  ) as f:
    json.dump(report, f, indent=2)
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  print(row)


if __name__ == "__main__":
  main()
