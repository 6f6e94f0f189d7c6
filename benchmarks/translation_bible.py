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

Then, for greedy search and beam search of --num_beams (both without
repeated trigrams, as the recipe): the test BLEU and chrF of each (`evaluate
--compare_num_beams`), and the sentences per second of each exported
SavedModel (`export --num_beams`), timed in a fresh process that imports
only TensorFlow and tensorflow-text, translating the test sources in their
order in batches of --serving_batch_size after one warm-up batch.

A quick check of the whole path (minutes; the scores mean nothing):

  .venv/bin/python benchmarks/translation_bible.py --train_examples=300 \
      --validation_examples=16 --test_examples=32 --extra_flag=--epochs=1

Another recipe, e.g. Spanish -> English warm-started from MiniLM, trained
and scored only (no greedy/beam comparison, no export timing):

  .venv/bin/python benchmarks/translation_bible.py \
      --flagfile=flags/bible_es_en_bert2bert.flags --output_dir=runs/b2b \
      --test_examples=500 --skip_decodings --extra_flag=--epochs=2

Writes <output_dir>/results.json and prints Markdown table rows.
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
      "--train_examples",
      type=int,
      default=None,
      help="Keep only the first this many of the kept training verses.",
  )
  parser.add_argument(
      "--test_examples",
      type=int,
      default=None,
      help="Evaluate on the first this many test verses (default: all).",
  )
  parser.add_argument(
      "--num_beams",
      type=int,
      default=4,
      help="The beam search compared with greedy search.",
  )
  parser.add_argument(
      "--flagfile",
      default="flags/bible_en_es_from_scratch.flags",
      help="The recipe trained, relative to the repository root.",
  )
  parser.add_argument(
      "--skip_decodings",
      action="store_true",
      help="Only train and score the test split as the recipe says; no "
      "greedy/beam comparison and no export timing.",
  )
  parser.add_argument("--serving_batch_size", type=int, default=64)
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
  ][: args.train_examples]
  train_file = os.path.join(args.output_dir, "train.tsv")
  _write_tsv(train_file, columns, kept)
  _, validation_rows = _read_tsv(os.path.join(args.data_dir, "validation.tsv"))
  validation_file = os.path.join(args.output_dir, "validation.tsv")
  _write_tsv(
      validation_file, columns, validation_rows[: args.validation_examples]
  )
  _, test_rows = _read_tsv(os.path.join(args.data_dir, "test.tsv"))
  test_rows = test_rows[: args.test_examples]
  test_file = os.path.join(args.output_dir, "test.tsv")
  _write_tsv(test_file, columns, test_rows)

  model_dir = os.path.join(args.output_dir, "model")
  flagfile = os.path.join(root, args.flagfile)
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
  decodings = []
  if not args.skip_decodings:
    decodings = _compare_decodings(
        root, model_dir, test_file, args.num_beams, args.output_dir
    )
  for decoding in decodings:
    decoding.update(
        _serving_speed(
            root,
            model_dir,
            decoding,
            [row["source"] for row in test_rows],
            args.output_dir,
            args.serving_batch_size,
        )
    )
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
      "test_bleu_lowercase": test.get("bleu_lowercase"),
      "test_chrf": test["chrf"],
      "validation_bleu": eval_results.get("validation", {}).get("bleu"),
      "bleu_signature": test["bleu_signature"],
      "chrf_signature": test["chrf_signature"],
      "history": summary["history"],
      "command": " ".join(command),
      "decodings": decodings,
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
  if not decodings:
    return
  print()
  print(
      "| decoding | test BLEU | ignoring case | test chrF | brevity penalty | "
      "evaluate s | "
      f"SavedModel sentences/s (batches of {args.serving_batch_size}) |"
  )
  print("|---|---|---|---|---|---|---|")
  for decoding in decodings:
    print(
        f"| {decoding['name']} | {decoding['bleu']:.2f} | "
        f"{decoding['bleu_lowercase']:.2f} | "
        f"{decoding['chrf']:.2f} | {decoding['brevity_penalty']} | "
        f"{decoding['predict_seconds']} | "
        f"{decoding['serving_sentences_per_second']} |"
    )


def _compare_decodings(
    root: str, model_dir: str, test_file: str, num_beams: int, output_dir: str
) -> list[dict]:
  """Test BLEU and chrF of greedy and beam search, by the evaluate binary."""
  widths = [1] if num_beams == 1 else [1, num_beams]
  split = "test_decodings"
  _run(
      [
          sys.executable,
          "-m",
          "tf_finetune.evaluate",
          f"--model_dir={model_dir}",
          f"--test_file={test_file}",
          f"--split_name={split}",
          f"--compare_num_beams={','.join(map(str, widths))}",
      ],
      root,
      os.path.join(output_dir, "evaluate_decodings.log"),
  )
  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    comparisons = json.load(f)[split]["comparisons"]
  keys = (
      "bleu",
      "bleu_lowercase",
      "chrf",
      "brevity_penalty",
      "predict_seconds",
  )
  return [
      dict(
          {key: row[key] for key in keys},
          name="greedy"
          if row["num_beams"] == 1
          else f"beam {row['num_beams']}",
          num_beams=row["num_beams"],
          no_repeat_ngram_size=row["no_repeat_ngram_size"],
      )
      for row in comparisons
  ]


# Run in a fresh process: a SavedModel client needs only these imports.
_TIME_SAVED_MODEL = """
import json, sys, time
import tensorflow as tf
import tensorflow_text  # noqa: F401  SentencePiece ops.
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
with open(sys.argv[2], encoding="utf-8") as f:
  texts = json.load(f)
batch = int(sys.argv[3])
serve(text=tf.constant(texts[:batch]))
start = time.perf_counter()
for begin in range(0, len(texts), batch):
  serve(text=tf.constant(texts[begin : begin + batch]))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _serving_speed(
    root: str,
    model_dir: str,
    decoding: dict,
    texts: list[str],
    output_dir: str,
    batch_size: int,
) -> dict:
  """Exports the run with this decoding; times the SavedModel."""
  export_base = os.path.join(
      output_dir, f"export_beams_{decoding['num_beams']}"
  )
  _run(
      [
          sys.executable,
          "-m",
          "tf_finetune.export",
          f"--model_dir={model_dir}",
          f"--export_dir={export_base}",
          f"--num_beams={decoding['num_beams']}",
      ],
      root,
      os.path.join(output_dir, f"export_beams_{decoding['num_beams']}.log"),
  )
  versions = sorted(
      (name for name in os.listdir(export_base) if name.isdigit()), key=int
  )
  texts_file = os.path.join(output_dir, "test_sources.json")
  with open(texts_file, "w", encoding="utf-8") as f:
    json.dump(texts, f)
  timed = subprocess.run(
      [
          sys.executable,
          "-c",
          _TIME_SAVED_MODEL,
          os.path.join(export_base, versions[-1]),
          texts_file,
          str(batch_size),
      ],
      check=True,
      capture_output=True,
      text=True,
      cwd=root,
  )
  seconds = json.loads(timed.stdout.strip().splitlines()[-1])["seconds"]
  return {
      "serving_seconds": round(seconds, 2),
      "serving_sentences_per_second": round(len(texts) / seconds, 2),
  }


def _run(command: list[str], root: str, log_path: str) -> None:
  """Runs a binary, its output kept in log_path."""
  print(" ".join(command), flush=True)
  with open(log_path, "w", encoding="utf-8") as log:
    subprocess.run(
        command, check=True, cwd=root, stdout=log, stderr=subprocess.STDOUT
    )


if __name__ == "__main__":
  main()
