r"""Which fine-tuning recipe wins on real data, against strong baselines.

  .venv/bin/pip install -r requirements-bench.txt
  .venv/bin/python scripts/prepare_newsgroups.py --output_dir=assets
  .venv/bin/python benchmarks/recipes.py                      # everything
  .venv/bin/python benchmarks/recipes.py --datasets=rotten_tomatoes \
      --recipes=tfidf,hf_tf,defaults --seeds=42                # one cell each

Every cell is (dataset, recipe, seed). Datasets (CSV files with `text` and
`label` columns):

  rotten_tomatoes      assets/rotten_tomatoes (8,927 / 1,275 / 2,550 short
                       review snippets, 2 classes)
  newsgroups           assets/newsgroups (10,142 / 1,127 / 7,514 posts of
                       20 Newsgroups, 20 topics; most are longer than 128
                       tokens)
  <name>_500           500 training and 500 validation examples drawn at
                       random (seed 0, the same for every run) from <name>,
                       tested on <name>'s whole test split

Recipes:

  tfidf        TF-IDF of word 1-2-grams and character 2-5-grams + logistic
               regression (scikit-learn's liblinear, one-vs-rest), C chosen
               on validation; no seeds
  hf_tf        the Keras recipe of the `transformers` documentation with its
               own optimizer defaults (epsilon 1e-8, no clipping), fp32,
               trained for the same epochs, tested on the last epoch (it
               has no validation); benchmarks/finetune_throughput.py's
               `hf_tf` pipeline
  defaults     `python -m tf_finetune.train` with the base flags below and
               nothing else
  <lever>      the base flags plus one lever (LEVERS below): the Hugging
               Face optimizer settings, fp32, per-batch padding, each
               long-document and few-sample lever, and the step budget
               with each other few-sample lever (min_steps_reinit,
               min_steps_ema), with mean pooling (min_steps_mean) and at
               twice the learning rate (min_steps_lr1e-4), with both
               (min_steps_mean_lr1e-4), that with twice the step budget
               (min_steps2000_mean_lr1e-4) or 256 tokens of each text
               (min_steps_mean_lr1e-4_256) or both
               (min_steps2000_mean_lr1e-4_256), the recipe at four times
               the rate (min_steps_mean_lr2e-4) and that reading 256 tokens
               (min_steps_mean_lr2e-4_256) or 512
               (min_steps_mean_lr2e-4_512), the 256-token one at 3e-4
               in the top layer and 0.9 times the rate per layer below
               (min_steps_mean_lr3e-4_256_llrd0.9) or with twice
               the step budget (min_steps2000_mean_lr2e-4_256), in batches
               of 16 with twice the step budget, so twice the updates for
               the same encoder work (min_steps2000_mean_lr2e-4_256_batch16)
               or keeping the first and last 127 tokens of a longer text
               (min_steps_mean_lr2e-4_256_head_tail), and the 1e-4
               recipe with windows over up to 4 x 128 tokens of each
               text, their logits averaged
               (min_steps_mean_lr1e-4_chunks4) or their largest taken
               (min_steps_mean_lr1e-4_chunks4_max)
  pretrained   the base flags, --model the backbone of one epoch of
               `pretrain` (masked LM) over the full dataset's training texts
               (for <name>_500 too: its labels are few, its texts are not)
  recommended  the base flags plus --recipe=recommended
  pretrained_recommended
               both: --recipe=recommended on the pretrained backbone

Base flags (every `train` run): --model (MiniLM-L6-H384) --max_seq_length=128
--batch_size=32 --epochs=2 --learning_rate=5e-5 --schedule=linear
--warmup_ratio=0.1 --weight_decay=0.01 --early_stopping_metric=val_accuracy
--seed. Levers that change the number of updates (min_steps, recommended)
say so in the steps column.

A cell's result is kept in <output_dir>/<dataset>/<recipe>/seed<seed>/
result.json and not run again: an interrupted benchmark continues where it
stopped. The report (results.json and a Markdown table of test accuracy,
mean +/- standard deviation over seeds, with validation accuracy, steps and
what each run said of itself: no better than the most frequent label, or
what its curves said at its end: still improving, overfitting or
neither, by the rules of the run summary, recomputed from the run's
history) covers every finished cell. --report_only reports the finished
cells of the given datasets, recipes and seeds without running the others.
"""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time

from absl import app, flags

from tf_finetune import reporting

FLAGS = flags.FLAGS
flags.DEFINE_string("assets", "assets", "Where the datasets and model are.")
flags.DEFINE_string("model", "assets/minilm", "The pretrained encoder.")
flags.DEFINE_string("output_dir", "runs/bench_recipes", "Runs and results.")
flags.DEFINE_list(
    "datasets",
    "rotten_tomatoes,rotten_tomatoes_500,newsgroups,newsgroups_500",
    "Datasets (see the module docstring).",
)
flags.DEFINE_list(
    "recipes",
    "tfidf,hf_tf,defaults,hf_optimizer,head_tail,chunks,reinit,min_steps,"
    "ema,pretrained,recommended",
    "Recipes, in the order of the table.",
)
flags.DEFINE_list("seeds", "42,1,2", "Seeds of every recipe but tfidf.")
flags.DEFINE_integer("epochs", 2, "--epochs of every run.")
flags.DEFINE_integer(
    "pretrain_epochs", 1, "Masked-LM epochs over the training texts."
)
flags.DEFINE_bool(
    "report_only",
    False,
    "Report the finished cells of --datasets x --recipes x --seeds and run "
    "none: cells without a result are left out of the table.",
)

SMALL = 500
BASE_FLAGS = (
    "--max_seq_length=128",
    "--batch_size=32",
    "--learning_rate=5e-5",
    "--schedule=linear",
    "--warmup_ratio=0.1",
    "--weight_decay=0.01",
    "--early_stopping_metric=val_accuracy",
)


def _recipe_at(
    learning_rate: str, *more: str, min_steps: int = 1000
) -> tuple[str, ...]:
  """The recommended recipe's flags at another learning rate, plus `more`."""
  return (
      f"--min_steps={min_steps}",
      "--pooling=mean",
      f"--learning_rate={learning_rate}",
  ) + more


_TOKENS256 = ("--max_seq_length=256",)
_TOKENS512 = ("--max_seq_length=512",)
_WINDOWS4 = ("--long_document=chunks", "--max_chunks=4")
# One lever each, added to the base flags.
LEVERS = {
    "defaults": (),
    "hf_optimizer": ("--clip_norm=0", "--adam_epsilon=1e-8"),
    # Where our defaults differ from the Hugging Face recipe's run.
    "fp32": ("--precision=fp32",),
    "fp32_nobucketing": ("--precision=fp32", "--nobucketing"),
    "head_tail": ("--truncation=head_tail",),
    "chunks": ("--long_document=chunks",),
    "reinit": ("--reinit_layers=1",),
    "min_steps": ("--min_steps=1000",),
    "ema": ("--ema_decay=0.99",),
    # The step budget with each other few-sample lever of the recipe.
    "min_steps_reinit": ("--min_steps=1000", "--reinit_layers=1"),
    "min_steps_ema": ("--min_steps=1000", "--ema_decay=0.99"),
    # The step budget with the mean of the token states as the text's
    # vector (how sentence-embedding checkpoints were trained).
    "min_steps_mean": ("--min_steps=1000", "--pooling=mean"),
    # The step budget at twice the base learning rate.
    "min_steps_lr1e-4": ("--min_steps=1000", "--learning_rate=1e-4"),
    # The two together: the recommended recipe at twice the learning rate.
    "min_steps_mean_lr1e-4": _recipe_at("1e-4"),
    # The same with twice the step budget.
    "min_steps2000_mean_lr1e-4": _recipe_at("1e-4", min_steps=2000),
    # The same updates as min_steps_mean_lr1e-4, reading 256 tokens.
    "min_steps_mean_lr1e-4_256": _recipe_at("1e-4", *_TOKENS256),
    # Twice the step budget and 256 tokens together.
    "min_steps2000_mean_lr1e-4_256": _recipe_at(
        "1e-4", *_TOKENS256, min_steps=2000
    ),
    # The recommended recipe at four times the base learning rate.
    "min_steps_mean_lr2e-4": _recipe_at("2e-4"),
    # That reading 256 tokens.
    "min_steps_mean_lr2e-4_256": _recipe_at("2e-4", *_TOKENS256),
    # That reading 512 tokens, the most MiniLM's positions allow.
    "min_steps_mean_lr2e-4_512": _recipe_at("2e-4", *_TOKENS512),
    # The 256-token one with layer-wise learning-rate decay (Sun et al.,
    # 2019): the top layer and the head at 3e-4, each lower layer 0.9 times
    # the one above (the bottom one 1.8e-4, the embeddings 1.6e-4), about
    # the 2e-4 recipe's rate on average.
    "min_steps_mean_lr3e-4_256_llrd0.9": _recipe_at(
        "3e-4", *_TOKENS256, "--layerwise_lr_decay=0.9"
    ),
    # The 256-token one with twice the step budget: 7 epochs, 2,219
    # updates on 20 Newsgroups.
    "min_steps2000_mean_lr2e-4_256": _recipe_at(
        "2e-4", *_TOKENS256, min_steps=2000
    ),
    # That in batches of 16: twice the updates (4 epochs, 2,536 on 20
    # Newsgroups) for the same encoder work.
    "min_steps2000_mean_lr2e-4_256_batch16": _recipe_at(
        "2e-4", *_TOKENS256, "--batch_size=16", min_steps=2000
    ),
    # The 2e-4, 256-token recipe keeping both ends of a longer text: its
    # first 127 and last 127 tokens.
    "min_steps_mean_lr2e-4_256_head_tail": _recipe_at(
        "2e-4", *_TOKENS256, "--truncation=head_tail", "--head_share=0.5"
    ),
    # The 1e-4 recipe, reading each text in up to 4 windows of
    # --max_seq_length.
    "min_steps_mean_lr1e-4_chunks4": _recipe_at("1e-4", *_WINDOWS4),
    # The same windows, pooled by the most confident window per label.
    "min_steps_mean_lr1e-4_chunks4_max": _recipe_at(
        "1e-4", *_WINDOWS4, "--chunk_pooling=max"
    ),
    "pretrained": (),  # --model is the continued-pretraining backbone.
    "recommended": ("--recipe=recommended",),
    # --model is the continued-pretraining backbone.
    "pretrained_recommended": ("--recipe=recommended",),
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(message: str) -> None:
  print(f"[recipes {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _read_csv(path: str) -> list[dict]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _write_csv(path: str, rows: list[dict]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  staging = path + ".tmp"
  with open(staging, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
  os.replace(staging, path)


def dataset_dir(name: str) -> str:
  """The directory with train/validation/test.csv of `name`; the small
  variants are drawn once into the output directory."""
  if not name.endswith(f"_{SMALL}"):
    return os.path.join(FLAGS.assets, name)
  source = os.path.join(FLAGS.assets, name[: -len(f"_{SMALL}")])
  target = os.path.join(FLAGS.output_dir, "data", name)
  if not os.path.isfile(os.path.join(target, "test.csv")):
    draw = random.Random(0)
    for split in ("train", "validation"):
      rows = _read_csv(os.path.join(source, f"{split}.csv"))
      _write_csv(os.path.join(target, f"{split}.csv"), draw.sample(rows, SMALL))
    _write_csv(
        os.path.join(target, "test.csv"),
        _read_csv(os.path.join(source, "test.csv")),
    )
  return target


def run_tfidf(data: str) -> dict:
  """TF-IDF + logistic regression, C chosen by validation accuracy."""
  import numpy as np
  from scipy import sparse
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.multiclass import OneVsRestClassifier

  splits = {
      s: _read_csv(os.path.join(data, f"{s}.csv"))
      for s in ("train", "validation", "test")
  }
  texts = {s: [r["text"] for r in rows] for s, rows in splits.items()}
  labels = {s: [r["label"] for r in rows] for s, rows in splits.items()}
  words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
  chars = TfidfVectorizer(
      analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
  )
  words.fit(texts["train"])
  chars.fit(texts["train"])

  def features(split):
    return sparse.hstack(
        [words.transform(texts[split]), chars.transform(texts[split])]
    ).tocsr()

  x = {s: features(s) for s in splits}
  best = None
  for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
    # liblinear: one-vs-rest, fast on sparse features of long texts.
    classifier = OneVsRestClassifier(
        LogisticRegression(C=c, solver="liblinear")
    )
    classifier.fit(x["train"], labels["train"])
    accuracy = float(
        np.mean(classifier.predict(x["validation"]) == labels["validation"])
    )
    if best is None or accuracy > best[0]:
      best = (accuracy, c, classifier)
  validation_accuracy, c, classifier = best
  test_accuracy = float(
      np.mean(classifier.predict(x["test"]) == labels["test"])
  )
  return {
      "test_accuracy": test_accuracy,
      "validation_accuracy": validation_accuracy,
      "chosen_c": c,
  }


def run_hf_tf(data: str, seed: int, cell_dir: str) -> dict:
  """The Hugging Face TF recipe through finetune_throughput's worker."""
  train_examples = len(_read_csv(os.path.join(data, "train.csv")))
  steps_per_epoch = -(-train_examples // 32)
  total_steps = FLAGS.epochs * steps_per_epoch
  job = {
      "args": {
          "model": FLAGS.model,
          "data_dir": data,
          "max_seq_length": 128,
          "batch_size": 32,
          "learning_rate": 5e-5,
          "weight_decay": 0.01,
          "warmup_ratio": 0.1,
          "adam_epsilon": 1e-8,
          "clip_norm": 0.0,
          "seed": seed,
          "skip_steps": 2,
      },
      "plan": {
          "train_examples": train_examples,
          "steps_per_epoch": steps_per_epoch,
          "total_steps": total_steps,
          "warmup_steps": int(round(0.1 * total_steps)),
          "epochs_to_run": FLAGS.epochs,
      },
      "scratch_dir": cell_dir,
      "result_file": os.path.join(cell_dir, "hf_tf.json"),
  }
  job_path = os.path.join(cell_dir, "job.json")
  with open(job_path, "w", encoding="utf-8") as f:
    json.dump(job, f)
  subprocess.run(
      [
          sys.executable,
          os.path.join(REPO_ROOT, "benchmarks", "finetune_throughput.py"),
          "--_worker=hf_tf",
          f"--_job={job_path}",
      ],
      env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
      check=True,
  )
  with open(job["result_file"], encoding="utf-8") as f:
    result = json.load(f)
  return {
      "test_accuracy": result["test"]["accuracy"],
      "validation_accuracy": None,
      "steps": total_steps,
      "train_seconds": result["training"].get("train_seconds"),
  }


def pretrained_backbone(dataset: str) -> str:
  """Continued masked-LM pretraining on the training texts of the full
  dataset, once per dataset; the backbone directory `train --model` takes.
  A few-sample set pretrains on all of its parent's training texts, as
  unlabelled text: few labels, many texts of the task."""
  dataset = dataset.removesuffix(f"_{SMALL}")
  data = os.path.join(FLAGS.assets, dataset)
  model_dir = os.path.join(FLAGS.output_dir, "pretrained", dataset)
  backbone = os.path.join(model_dir, "backbone")
  if not os.path.isfile(os.path.join(model_dir, "summary.json")):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_finetune.pretrain",
            f"--model={FLAGS.model}",
            f"--train_file={os.path.join(data, 'train.csv')}",
            "--text_column=text",
            f"--model_dir={model_dir}",
            f"--epochs={FLAGS.pretrain_epochs}",
            "--max_seq_length=128",
            "--batch_size=32",
            "--learning_rate=5e-5",
            "--seed=0",
        ],
        check=True,
    )
  return backbone


def run_ours(dataset: str, data: str, recipe: str, seed: int, cell_dir: str):
  model = FLAGS.model
  if recipe.startswith("pretrained"):
    model = pretrained_backbone(dataset)
  model_dir = os.path.join(cell_dir, "run")
  command = [
      sys.executable,
      "-m",
      "tf_finetune.train",
      f"--model={model}",
      f"--train_file={os.path.join(data, 'train.csv')}",
      f"--validation_file={os.path.join(data, 'validation.csv')}",
      f"--test_file={os.path.join(data, 'test.csv')}",
      "--text_column=text",
      "--label_column=label",
      f"--model_dir={model_dir}",
      f"--epochs={FLAGS.epochs}",
      f"--seed={seed}",
      "--export=false",
      *BASE_FLAGS,
      *LEVERS[recipe],
  ]
  subprocess.run(command, check=True)
  with open(os.path.join(model_dir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    results = json.load(f)
  return {
      "test_accuracy": results["test"]["accuracy"],
      "validation_accuracy": results["validation"]["accuracy"],
      "steps": summary["global_steps"],
      "kept_epoch": summary.get("kept_epoch"),
      "train_seconds": summary["train_seconds"],
      "flags": command[3:],
  }


def cell_path(dataset: str, recipe: str, seed: int, *names: str) -> str:
  """<output_dir>/<dataset>/<recipe>/seed<seed>/<names...>."""
  return os.path.join(FLAGS.output_dir, dataset, recipe, f"seed{seed}", *names)


def run_cell(dataset: str, recipe: str, seed: int) -> dict:
  cell_dir = cell_path(dataset, recipe, seed)
  result_path = os.path.join(cell_dir, "result.json")
  if os.path.isfile(result_path):
    with open(result_path, encoding="utf-8") as f:
      return json.load(f)
  os.makedirs(cell_dir, exist_ok=True)
  data = dataset_dir(dataset)
  _log(f"{dataset} {recipe} seed {seed}")
  begin = time.time()
  if recipe == "tfidf":
    result = run_tfidf(data)
  elif recipe == "hf_tf":
    result = run_hf_tf(data, seed, cell_dir)
  else:
    result = run_ours(dataset, data, recipe, seed, cell_dir)
  result["wall_seconds"] = round(time.time() - begin, 1)
  with open(result_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  os.replace(result_path + ".tmp", result_path)
  _log(f"{dataset} {recipe} seed {seed}: test {result['test_accuracy']:.4f}")
  return result


def verdict(dataset: str, recipe: str, seed: int) -> str | None:
  """What the run says of itself, by today's `reporting` rules: "no better
  than the most frequent label", else what its curves say: "still
  improving", "overfitting" or "neither"; None for the baselines."""
  run_dir = cell_path(dataset, recipe, seed, "run")
  path = os.path.join(run_dir, "summary.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    summary = json.load(f)
  with open(os.path.join(run_dir, "eval_results.json"), encoding="utf-8") as f:
    baseline = reporting.compare_with_most_frequent_label(json.load(f))
  if baseline and baseline["no_better"]:
    return "no better than the most frequent label"
  (monitor,) = summary["best_metric"]  # The metric early stopping watched.
  found = reporting.diagnose_overfitting(
      summary["history"], monitor=monitor, best_epoch=summary["kept_epoch"]
  )
  if found["still_improving"]:
    return "still improving"
  return "overfitting" if found["overfitting"] else "neither"


def _counted(values: list[str | None]) -> str:
  """ "still improving x2, overfitting x1"; "-" when none is known."""
  known = [value for value in values if value]
  return (
      ", ".join(
          f"{value} x{known.count(value)}" for value in dict.fromkeys(known)
      )
      or "-"
  )


def _mean_std(values: list[float]) -> str:
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.mean(values):.4f} +/- {statistics.stdev(values):.4f}"


def main(argv) -> None:
  del argv
  unknown = set(FLAGS.recipes) - set(LEVERS) - {"tfidf", "hf_tf"}
  if unknown:
    raise app.UsageError(f"--recipes: unknown {sorted(unknown)}")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  report = {}
  for dataset in FLAGS.datasets:
    for recipe in FLAGS.recipes:
      seeds = [0] if recipe == "tfidf" else [int(s) for s in FLAGS.seeds]
      if FLAGS.report_only:
        seeds = [
            seed
            for seed in seeds
            if os.path.isfile(cell_path(dataset, recipe, seed, "result.json"))
        ]
        if not seeds:
          continue
      cells = [run_cell(dataset, recipe, seed) for seed in seeds]
      for cell, seed in zip(cells, seeds):
        cell["verdict"] = verdict(dataset, recipe, seed)
      report.setdefault(dataset, {})[recipe] = cells
  with open(
      os.path.join(FLAGS.output_dir, "results.json"), "w", encoding="utf-8"
  ) as f:
    json.dump(report, f, indent=2)
  print(
      "| dataset | recipe | test accuracy | validation accuracy | steps "
      "| how the run ended |"
  )
  print("|---|---|---|---|---|---|")
  for dataset, recipes in report.items():
    for recipe, cells in recipes.items():
      valid = [c["validation_accuracy"] for c in cells]
      steps = sorted({c.get("steps") for c in cells} - {None})
      print(
          f"| {dataset} | {recipe} | "
          f"{_mean_std([c['test_accuracy'] for c in cells])} | "
          f"{_mean_std([v for v in valid if v is not None])} | "
          f"{'/'.join(str(s) for s in steps) or '-'} | "
          f"{_counted([c['verdict'] for c in cells])} |"
      )


if __name__ == "__main__":
  app.run(main)
