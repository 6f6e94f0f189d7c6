"""lr_find and tune end to end on the tiny BERT, through their binaries."""

import csv
import json
import os

import pytest

from conftest import run_binary
from tf_finetune import lr_find, lr_range_test, tune, tuning

TINY = [
    "--max_seq_length=32",
    "--batch_size=16",
    "--pooling=mean",
    "--precision=fp32",
    "--log_every_steps=5",
]


def test_suggestion_is_a_tenth_of_the_lowest_loss_rate():
  rates = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
  smoothed = [0.70, 0.69, 0.60, 0.40, 2.0]
  picks = lr_range_test.suggest_learning_rate(rates, smoothed)
  assert picks["lowest_loss"] == 1e-2
  assert picks["suggested"] == pytest.approx(1e-3)
  # Slopes against log(rate) (np.gradient: one-sided at the ends, central
  # inside), in units of 1/ln(10): -0.01, -0.05, -0.145, -0.20. The last
  # segment, 0.60 -> 0.40, is the steepest.
  assert picks["steepest"] == 1e-2


def test_a_curve_lowest_at_its_first_step_gets_a_suggestion():
  """The loss only rose: the lowest point is the first rate (no slope to
  take before it)."""
  rates = [1e-5, 1e-4, 1e-3, 1e-2]
  picks = lr_range_test.suggest_learning_rate(rates, [0.5, 0.6, 0.9, 2.0])
  assert picks == pytest.approx(
      {"suggested": 1e-6, "lowest_loss": 1e-5, "steepest": 1e-5}
  )
  picks = lr_range_test.suggest_learning_rate(rates, [0.6, 0.5, 0.9, 2.0])
  assert picks["lowest_loss"] == 1e-4 and picks["steepest"] == 1e-5


def test_lr_find_writes_plot_and_suggestion(
    tmp_path, tiny_bert_dir, sentiment_files, capsys
):
  model_dir = tmp_path / "lr"
  code = run_binary(
      lr_find,
      [
          f"--model={tiny_bert_dir}",
          f"--train_file={sentiment_files['train']}",
          f"--model_dir={model_dir}",
          "--lr_find_steps=40",
          "--lr_find_max=10",
          *TINY,
      ],
  )
  assert code == 0
  results = json.load(open(model_dir / "lr_find.json"))
  rates = results["learning_rates"]
  assert rates[0] == pytest.approx(1e-7)
  assert all(b > a for a, b in zip(rates, rates[1:]))
  # A rate of 10 makes the loss explode: the test stops early.
  assert results["stopped_on_divergence"] is True
  # The curve: each step's loss at a rate rising geometrically from 1e-7
  # to 10 over 40 steps, smoothed (bias-corrected moving average, 0.9).
  assert rates == pytest.approx(
      [1e-7 * (10 / 1e-7) ** (step / 39) for step in range(len(rates))],
      rel=1e-4,
  )
  losses, smoothed = results["losses"], results["smoothed_losses"]
  assert len(losses) == len(smoothed) == len(rates)
  average = 0.0
  for step, loss in enumerate(losses):
    average = 0.9 * average + 0.1 * loss
    assert smoothed[step] == pytest.approx(average / (1 - 0.9 ** (step + 1)))
  # It stopped once the smoothed loss passed 4 times its lowest value, and
  # the suggestion is a tenth of the rate of that lowest value.
  lowest = smoothed.index(min(smoothed))
  assert smoothed[-1] > 4 * min(smoothed) >= max(smoothed[:-1])
  assert results["lowest_loss"] == rates[lowest]
  assert results["suggested"] == pytest.approx(rates[lowest] / 10)
  assert (model_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
  assert f"--learning_rate={results['suggested']:.2g}" in (
      capsys.readouterr().out
  )


def test_stratified_folds_spread_every_label():
  labels = ["a"] * 10 + ["b"] * 5
  folds = tuning.stratified_folds(labels, 5, seed=0)
  for fold in range(5):
    members = [label for label, f in zip(labels, folds) if f == fold]
    assert members.count("a") == 2 and members.count("b") == 1


def test_grid_values_are_typed_and_checked():
  grid = tuning.parse_grid(
      ["learning_rate=1e-5,3e-5", "epochs=2,3", "l2_sp=0,0.01"]
  )
  assert grid == {
      "learning_rate": [1e-5, 3e-5],
      "epochs": [2, 3],
      "l2_sp": [0.0, 0.01],
  }
  # Optional fields take their declared type: a model name, a step count.
  assert tuning.parse_grid(["model=bert-base-cased", "warmup_steps=100"]) == {
      "model": ["bert-base-cased"],
      "warmup_steps": [100],
  }
  with pytest.raises(ValueError, match="'learnin_rate' is not a training"):
    tuning.parse_grid(["learnin_rate=1e-5"])
  with pytest.raises(ValueError, match="'fast' for epochs is not a int"):
    tuning.parse_grid(["epochs=fast"])
  with pytest.raises(ValueError, match="must look like"):
    tuning.parse_grid(["learning_rate"])


def test_grid_values_stay_inside_the_trials_directory(tmp_path):
  """--grid=model=a/../../x names a directory under trials/, not a path
  out of it."""
  from tf_finetune import config as config_lib

  model_dir = tmp_path / "cv"
  config = config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(train_file="train.csv"),
      model=config_lib.ModelConfig(model="m"),
  )
  paths = {"train": "train.jsonl", "validation": "validation.jsonl"}
  grid = tuning.parse_grid(["model=a/../../x,/abs/m,a%2F..%2F..%2Fx"])
  trials = os.path.realpath(model_dir / "trials")
  directories = []
  for point in tuning.grid_points(grid):
    trial = tuning.fold_config(config, point, 0, paths)
    directory = os.path.realpath(os.path.dirname(trial.model_dir))
    assert os.path.dirname(directory) == trials, trial.model_dir
    assert trial.model.model == point["model"]  # The value itself is kept.
    directories.append(os.path.basename(directory))
  assert directories == [
      "model=a%2F..%2F..%2Fx",
      "model=%2Fabs%2Fm",
      "model=a%252F..%252F..%252Fx",
  ]
  # Plain values read as they are.
  point = {"learning_rate": 3e-05, "epochs": 2}
  assert tuning.point_directory(point) == "learning_rate=3e-05,epochs=2"


def test_tune_cross_validates_resumes_and_refits(
    tmp_path, tiny_bert_dir, sentiment_files, capsys
):
  model_dir = tmp_path / "tune"
  args = [
      f"--model={tiny_bert_dir}",
      f"--train_file={sentiment_files['train']}",
      f"--validation_file={sentiment_files['validation']}",
      f"--model_dir={model_dir}",
      "--cv_folds=2",
      "--epochs=2",
      "--early_stopping_patience=0",
      "--grid=learning_rate=1e-4,3e-3",
      *TINY,
  ]
  assert run_binary(tune, args) == 0
  with open(model_dir / "cv_results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [row["learning_rate"] for row in rows] == ["0.0001", "0.003"]
  for row in rows:
    folds = [float(row["fold_0"]), float(row["fold_1"])]
    assert float(row["mean"]) == pytest.approx(sum(folds) / 2, abs=1e-6)
  best = json.load(open(model_dir / "best_params.json"))
  means = {float(row["learning_rate"]): float(row["mean"]) for row in rows}
  assert best["params"]["learning_rate"] == max(means, key=means.get)
  out = capsys.readouterr().out
  assert "<- best" in out and "mean ± std over 2 folds" in out
  # Each fold trained on the other fold only, validated on its own.
  fold_0 = model_dir / "folds" / "fold_0"
  assert (
      sum(1 for _ in open(fold_0 / "train.jsonl"))
      + sum(1 for _ in open(fold_0 / "validation.jsonl"))
  ) == 192
  assert os.listdir(model_dir / "logs")  # HParams dashboard.

  # A rerun (with --refit) redoes no fold: their summaries are untouched.
  summaries = sorted(model_dir.glob("trials/*/fold_*/summary.json"))
  assert len(summaries) == 4
  stamps = [path.stat().st_mtime_ns for path in summaries]
  assert run_binary(tune, args + ["--refit"]) == 0
  assert [path.stat().st_mtime_ns for path in summaries] == stamps
  refit = json.load(open(model_dir / "refit" / "config.json"))
  assert refit["train"]["learning_rate"] == best["params"]["learning_rate"]
  assert refit["data"]["train_file"] == sentiment_files["train"]
  assert os.listdir(model_dir / "refit" / "export")
