r"""English -> Spanish from scratch, offline, on two CPU cores: Bible verses.

  make bible                                            # writes the TSVs
  .venv/bin/python benchmarks/translation_bible.py

Trains flags/bible_en_es_from_scratch.flags (a small T5 and a SentencePiece
vocabulary learned from the training verses) with the train binary in a
fresh process, on the training verses whose source and target both have at
most --max_words words (shorter sequences, more updates in the time budget),
validating on the first --validation_examples validation verses (the
validation loss picks the kept epoch; their BLEU is computed too), then
reports corpus BLEU and chrF (sacreBLEU) of the whole test split, decoded as
the recipe says (greedy, no repeated trigram), with the wall-clock time.

Writes <output_dir>/results.json and prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time


def _read_tsv(path: str) -> tuple[list[str], list[dict]]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t")
    return list(reader.fieldnames), list(reader)


def _write_tsv(path: str, columns: list[str], rows: list[dict]) -> None:
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(
        f, fieldnames=columns, delimiter="\t", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="assets/bible/en-es")
  parser.add_argument("--output_dir", default="runs/bench_translation_bible")
  parser.add_argument(
      "--max_words",
      type=int,
      default=25,
      help="Keep training verses of at most this many words " "on both sides.",
  )
  parser.add_argument("--validation_examples", type=int, default=300)
  parser.add_argument(
      "--extra_flag",
      action="append",
      default=[],
      help="A train flag that overrides the recipe's, e.g. "
      "--extra_flag=--epochs=3; repeat for several.",
  )
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for split in ("train", "validation", "test"):
    path = os.path.join(args.data_dir, f"{split}.tsv")
    if not os.path.isfile(path):
      sys.exit(f"{path} is missing; run `make bible`.")
  os.makedirs(args.output_dir, exist_ok=True)

  columns, train_rows = _read_tsv(os.path.join(args.data_dir, "train.tsv"))
  kept = [
      row
      for row in train_rows
      if len(row["source"].split()) <= args.max_words
      and len(row["target"].split()) <= args.max_words
  ]
  train_file = os.path.join(args.output_dir, "train.tsv")
  _write_tsv(train_file, columns, kept)
  _, validation_rows = _read_tsv(os.path.join(args.data_dir, "validation.tsv"))
  validation_file = os.path.join(args.output_dir, "validation.tsv")
  _write_tsv(
      validation_file, columns, validation_rows[: args.validation_examples]
  )
  test_file = os.path.join(args.data_dir, "test.tsv")
  _, test_rows = _read_tsv(test_file)

  model_dir = os.path.join(args.output_dir, "model")
  flagfile = os.path.join(root, "flags", "bible_en_es_from_scratch.flags")
  command = [
      sys.executable,
      "-m",
      "tf_finetune.train",
      f"--flagfile={flagfile}",
      f"--train_file={train_file}",
      f"--validation_file={validation_file}",
      f"--test_file={test_file}",
      f"--model_dir={model_dir}",
      *args.extra_flag,
  ]
  print(" ".join(command), flush=True)
  start = time.time()
  subprocess.run(command, check=True, cwd=root)
  wall_seconds = time.time() - start

  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    eval_results = json.load(f)
  with open(os.path.join(model_dir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  test = eval_results["test"]
  results = {
      "train_examples": len(kept),
      "train_examples_total": len(train_rows),
      "max_words": args.max_words,
      "validation_examples": min(
          len(validation_rows), args.validation_examples
      ),
      "test_examples": len(test_rows),
      "epochs_run": summary["epochs_run"],
      "global_steps": summary["global_steps"],
      "precision": summary["precision"],
      "train_seconds": summary["train_seconds"],
      "wall_seconds": round(wall_seconds, 1),
      "test_bleu": test["bleu"],
      "test_chrf": test["chrf"],
      "validation_bleu": eval_results.get("validation", {}).get("bleu"),
      "bleu_signature": test["bleu_signature"],
      "chrf_signature": test["chrf_signature"],
      "history": summary["history"],
      "command": " ".join(command),
  }
  with open(
      os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8"
  ) as f:
    json.dump(results, f, indent=2)
  print(
      "| train verses | epochs | steps | train s | wall s | test BLEU | "
      "test chrF |"
  )
  print("|---|---|---|---|---|---|---|")
  print(
      f"| {len(kept)} of {len(train_rows)} (<= {args.max_words} words) | "
      f"{summary['epochs_run']} | {summary['global_steps']} | "
      f"{summary['train_seconds']} | {wall_seconds:.0f} | "
      f"{test['bleu']:.2f} | {test['chrf']:.2f} |"
  )


if __name__ == "__main__":
  main()
