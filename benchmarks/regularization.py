r"""Does regularization help fine-tuning on little data? Measured, not assumed.

  make assets
  .venv/bin/python benchmarks/regularization.py            # about 45 minutes
  .venv/bin/python benchmarks/regularization.py --seeds=1 --epochs=2 \
      --skip_lr_choice                                     # smoke run

MiniLM (assets/minilm) on Rotten Tomatoes snippets with a deliberately small
training set: --train_examples (500) drawn at random (seed 0, fixed for every
run) from the training split, --validation_examples (500) from the
validation split for early stopping, and the whole test split (2,550) for
the reported accuracy. Every run is the real train binary in its own
process, for --epochs (10) epochs at most, batch 32, AdamW at
--learning_rate (5e-5) with linear decay after 10% warmup. Three recipes:

  none        nothing against overfitting: no weight decay, no dropout
              (head, hidden, attention), all epochs run and the last epoch's
              weights kept;
  early_stop  the same, plus early stopping on validation accuracy
              (patience 2) keeping the best epoch's weights;
  es_l2sp_lld early stopping + L2-SP (--l2_sp=0.01, distance from the
              pretrained weights) + layer-wise learning-rate decay 0.9.

Each recipe runs with seeds 1..--seeds (head initialization and batch
order); the table reports the mean and standard deviation of test accuracy.

Then the learning rate is chosen two ways on the same 500 examples and each
choice trained once with the early_stop recipe (seed 1):

  lr_find  python -m tf_finetune.lr_find (100 steps, 1e-7 to 1), its
           suggestion;
  tune     python -m tf_finetune.tune --cv_folds=3
           --grid=learning_rate=1e-5,3e-5,1e-4 (3-fold stratified CV, best
           mean validation accuracy).

Writes <output_dir>/results.json and prints a Markdown table.
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

FLAGS = flags.FLAGS
flags.DEFINE_string("assets", "assets", "Where `make assets` put the data.")
flags.DEFINE_string(
    "output_dir", "runs/bench_regularization", "Runs and results."
)
flags.DEFINE_integer("train_examples", 500, "Training examples.")
flags.DEFINE_integer("validation_examples", 500, "Validation examples.")
flags.DEFINE_integer("epochs", 10, "Epoch budget of every run.")
flags.DEFINE_integer("seeds", 3, "Seeds per recipe.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of the recipes.")
flags.DEFINE_bool("skip_lr_choice", False, "Skip lr_find and tune.")

NO_REGULARIZATION = [
    "--weight_decay=0",
    "--dropout=0",
    "--hidden_dropout=0",
    "--attention_dropout=0",
]
RECIPES = {
    "none": NO_REGULARIZATION
    + ["--early_stopping_patience=0", "--norestore_best_weights"],
    "early_stop": NO_REGULARIZATION + ["--early_stopping_patience=2"],
    "es_l2sp_lld": NO_REGULARIZATION
    + [
        "--early_stopping_patience=2",
        "--l2_sp=0.01",
        "--layerwise_lr_decay=0.9",
    ],
}


def _subset(source: str, target: str, count: int, seed: int) -> str:
  with open(source, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  rows = random.Random(seed).sample(rows, min(count, len(rows)))
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with open(target, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
  return target


def _common_flags(data: dict[str, str]) -> list[str]:
  return [
      f"--model={FLAGS.assets}/minilm",
      f"--train_file={data['train']}",
      f"--validation_file={data['validation']}",
      f"--test_file={data['test']}",
      "--max_seq_length=128",
      "--batch_size=32",
      "--warmup_ratio=0.1",
      "--schedule=linear",
      "--log_every_steps=100",
      "--noexport",
  ]


def _run(module: str, args: list[str], log_path: str) -> str:
  start = time.time()
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.run(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
  if process.returncode != 0:
    raise RuntimeError(f"{module} failed; see {log_path}")
  print(f"  {module} done in {time.time() - start:.0f} s", flush=True)
  return process.stdout


def _train(name: str, data, extra: list[str]) -> dict:
  model_dir = os.path.join(FLAGS.output_dir, name)
  summary_path = os.path.join(model_dir, "summary.json")
  if not os.path.isfile(summary_path):
    _run(
        "tf_finetune.train",
        _common_flags(data)
        + [f"--model_dir={model_dir}", f"--epochs={FLAGS.epochs}"]
        + extra,
        os.path.join(FLAGS.output_dir, f"{name}.log"),
    )
  with open(summary_path, encoding="utf-8") as f:
    summary = json.load(f)
  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    results = json.load(f)
  return {
      "test_accuracy": results["test"]["accuracy"],
      "epochs_run": summary["epochs_run"],
      "kept_epoch": summary["kept_epoch"],
      "overfitting": summary["overfitting"]["overfitting"],
  }


def _choose_learning_rates(data) -> dict:
  chosen = {}
  lr_dir = os.path.join(FLAGS.output_dir, "lr_find")
  if not os.path.isfile(os.path.join(lr_dir, "lr_find.json")):
    _run(
        "tf_finetune.lr_find",
        _common_flags(data)
        + [
            f"--model_dir={lr_dir}",
            "--lr_find_steps=100",
            *RECIPES["early_stop"],
        ],
        os.path.join(FLAGS.output_dir, "lr_find.log"),
    )
  with open(os.path.join(lr_dir, "lr_find.json"), encoding="utf-8") as f:
    chosen["lr_find"] = json.load(f)["suggested"]
  tune_dir = os.path.join(FLAGS.output_dir, "tune")
  _run(
      "tf_finetune.tune",
      _common_flags(data)
      + [
          f"--model_dir={tune_dir}",
          "--cv_folds=3",
          "--grid=learning_rate=1e-5,3e-5,1e-4",
          f"--epochs={FLAGS.epochs}",
          *RECIPES["early_stop"],
      ],
      os.path.join(FLAGS.output_dir, "tune.log"),
  )
  with open(os.path.join(tune_dir, "best_params.json"), encoding="utf-8") as f:
    chosen["tune"] = json.load(f)["params"]["learning_rate"]
  return {
      method: {
          "learning_rate": rate,
          **_train(
              f"{method}_lr",
              data,
              RECIPES["early_stop"] + [f"--learning_rate={rate}", "--seed=1"],
          ),
      }
      for method, rate in chosen.items()
  }


def main(argv):
  del argv
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  source = os.path.join(FLAGS.assets, "rotten_tomatoes")
  data_dir = os.path.join(FLAGS.output_dir, "data")
  data = {
      "train": _subset(
          f"{source}/train.csv",
          f"{data_dir}/train.csv",
          FLAGS.train_examples,
          0,
      ),
      "validation": _subset(
          f"{source}/validation.csv",
          f"{data_dir}/validation.csv",
          FLAGS.validation_examples,
          0,
      ),
      "test": f"{source}/test.csv",
  }
  results = {
      "recipes": {},
      "settings": {
          "train_examples": FLAGS.train_examples,
          "validation_examples": FLAGS.validation_examples,
          "epochs": FLAGS.epochs,
          "learning_rate": FLAGS.learning_rate,
      },
  }
  for recipe, extra in RECIPES.items():
    runs = []
    for seed in range(1, FLAGS.seeds + 1):
      print(f"{recipe}, seed {seed}", flush=True)
      runs.append(
          _train(
              f"{recipe}_seed{seed}",
              data,
              extra
              + [f"--seed={seed}", f"--learning_rate={FLAGS.learning_rate}"],
          )
      )
    accuracies = [run["test_accuracy"] for run in runs]
    results["recipes"][recipe] = {
        "mean": statistics.mean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "runs": runs,
    }
  if not FLAGS.skip_lr_choice:
    results["learning_rate_choice"] = _choose_learning_rates(data)
  with open(
      os.path.join(FLAGS.output_dir, "results.json"), "w", encoding="utf-8"
  ) as f:
    json.dump(results, f, indent=2)
  print("| Recipe | Test accuracy (mean ± std) | Epochs run | Kept epoch |")
  print("|---|---|---|---|")
  for recipe, found in results["recipes"].items():
    epochs = ", ".join(str(run["epochs_run"]) for run in found["runs"])
    kept = ", ".join(str(run["kept_epoch"]) for run in found["runs"])
    print(
        f"| {recipe} | {found['mean']:.4f} ± {found['std']:.4f} | "
        f"{epochs} | {kept} |"
    )
  for method, found in results.get("learning_rate_choice", {}).items():
    print(
        f"| {method} learning rate {found['learning_rate']:.2g} | "
        f"{found['test_accuracy']:.4f} | {found['epochs_run']} | "
        f"{found['kept_epoch']} |"
    )


if __name__ == "__main__":
  app.run(main)
