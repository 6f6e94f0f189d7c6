"""Choosing hyperparameters by stratified k-fold cross-validation.

Every point of the grid is fine-tuned k times from the same pretrained
weights, each time on k - 1 folds of the training data and validated on the
remaining one. A fold is one `train()` in its own process (so memory is
returned to the system between folds) under
`<model_dir>/trials/<point>/fold_<i>/`; a fold whose summary.json exists is
not run again, so rerunning an interrupted sweep picks up where it stopped.

  <model_dir>/folds/fold_<i>/{train,validation}.jsonl   the k splits
  <model_dir>/trials/<point>/fold_<i>/                   one run per fold
  <model_dir>/cv_results.csv                             mean and std per point
  <model_dir>/best_params.json                           the winner
  <model_dir>/logs/                                      TensorBoard HParams
  <model_dir>/refit/                                     with --refit
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import random
import subprocess
import sys
import typing
import urllib.parse
from typing import Any, Optional

import numpy as np
from absl import logging

from tf_finetune import config as config_lib, io_utils, tasks
from tf_finetune.config import RunConfig

CV_RESULTS_FILENAME = "cv_results.csv"
BEST_PARAMS_FILENAME = "best_params.json"
_SECTIONS = (
    ("data", config_lib.DataConfig),
    ("model", config_lib.ModelConfig),
    ("train", config_lib.TrainConfig),
)


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
  """Parses `--grid=name=v1,v2` specs into {name: [typed values]}.

  Names are train flags (fields of the data, model or train config); values
  are converted to the field's type.
  """
  grid = {}
  for spec in specs:
    name, separator, values = spec.partition("=")
    name = name.strip()
    if not separator or not values.strip():
      raise ValueError(
          f"--grid={spec!r} must look like " "learning_rate=1e-5,3e-5,5e-5."
      )
    section = _section_of(name, spec)
    if name in grid:
      raise ValueError(f"--grid names {name!r} twice.")
    kind = _field_type(section, name)
    grid[name] = [
        _convert(value.strip(), kind, name) for value in values.split(",")
    ]
  if not grid:
    raise ValueError(
        "--grid is required, e.g. " "--grid=learning_rate=1e-5,3e-5,5e-5."
    )
  return grid


def _section_of(name: str, spec: str):
  for _, section in _SECTIONS:
    if name in {field.name for field in dataclasses.fields(section)}:
      return section
  raise ValueError(f"--grid={spec!r}: {name!r} is not a training flag.")


def _field_type(section, name: str) -> type:
  """The declared type of a config field, Optional[X] read as X (so
  --grid=model=... gives strings and --grid=warmup_steps=... integers)."""
  hint = typing.get_type_hints(section)[name]
  if typing.get_origin(hint) is typing.Union:
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    if len(kinds) == 1:
      hint = kinds[0]
  return hint if hint in (bool, int, float, str) else float


def _convert(value: str, kind: type, name: str):
  try:
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(value)
      return value.lower() in ("true", "1")
    return kind(float(value)) if kind is int else kind(value)
  except ValueError:
    raise ValueError(
        f"--grid value {value!r} for {name} is not a " f"{kind.__name__}."
    ) from None


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
  names = list(grid)
  return [
      dict(zip(names, values))
      for values in itertools.product(*(grid[name] for name in names))
  ]


def point_name(point: dict[str, Any]) -> str:
  return ",".join(f"{name}={value}" for name, value in point.items())


def point_directory(point: dict[str, Any]) -> str:
  """The point's name as one directory name: every character but letters,
  digits and "=,+-_." percent-encoded, so a value holding "/" or ".."
  (--grid=model=a/../../x -> model=a%2F..%2F..%2Fx) stays inside its
  parent; distinct points keep distinct names."""
  return urllib.parse.quote(point_name(point), safe="=,+-_.")


def with_params(config: RunConfig, point: dict[str, Any], **data) -> RunConfig:
  """`config` with the grid point's values (and data fields) replaced."""
  sections = {}
  for section_name, section in _SECTIONS:
    names = {field.name for field in dataclasses.fields(section)}
    updates = {name: value for name, value in point.items() if name in names}
    if section_name == "data":
      updates.update(data)
    sections[section_name] = dataclasses.replace(
        getattr(config, section_name), **updates
    )
  return dataclasses.replace(config, **sections)


def stratified_folds(labels: list[str], num_folds: int, seed: int) -> list[int]:
  """A fold index per example, each label spread evenly over the folds."""
  if num_folds < 2:
    raise ValueError(f"--cv_folds={num_folds} must be at least 2.")
  by_label: dict[str, list[int]] = {}
  for index, label in enumerate(labels):
    by_label.setdefault(label, []).append(index)
  rng = random.Random(seed)
  fold_of = [0] * len(labels)
  offset = 0
  for label in sorted(by_label):
    indices = by_label[label]
    rng.shuffle(indices)
    for position, index in enumerate(indices):
      fold_of[index] = (offset + position) % num_folds
    offset += len(indices)
  smallest = min(len(indices) for indices in by_label.values())
  if smallest < num_folds:
    logging.warning(
        "The rarest label has %d examples, fewer than "
        "--cv_folds=%d: some folds validate without it.",
        smallest,
        num_folds,
    )
  return fold_of


def score_bins(
    scores: list[float], num_folds: int, max_bins: int = 10
) -> list[str]:
  """Stratification labels of regression scores: their quantile bins.

  Every distinct score a class of its own would give each "class" one
  example; bins of neighbouring scores, each of at least `num_folds`
  examples, spread low, middle and high scores over every fold. With 40
  scores and 4 folds: 10 bins of 4, one of each bin in every fold.
  """
  count = len(scores)
  num_bins = max(1, min(max_bins, count // num_folds))
  order = sorted(range(count), key=lambda index: scores[index])
  bins = [0] * count
  for rank, index in enumerate(order):
    bins[index] = rank * num_bins // count
  return [f"bin_{bin_index:02d}" for bin_index in bins]


def _write_jsonl(path: str, rows: list[dict]) -> None:
  text = io.StringIO()
  for row in rows:
    text.write(json.dumps(row, ensure_ascii=False) + "\n")
  io_utils.write_text_atomically(path, text.getvalue())


def write_folds(config: RunConfig, num_folds: int) -> list[dict[str, str]]:
  """Splits the training data into stratified folds written as JSONL
  (regression: stratified by quantile bins of the scores)."""
  if config.task.task not in ("classification", "regression"):
    raise ValueError(
        f"tune splits text-level data into folds; "
        f"--task={config.task.task} is not supported yet (use "
        "--task=classification or regression)."
    )
  examples = tasks.get_task(config.task).read(config.data, "train")
  if examples.labels is None:
    raise ValueError(f"{examples.source} has no labels.")
  strata = examples.labels
  if config.task.task == "regression":
    strata = score_bins([float(label) for label in strata], num_folds)
  fold_of = stratified_folds(strata, num_folds, config.train.seed)
  rows = []
  for index in range(len(examples)):
    row = {"text": examples.texts[index], "label": examples.labels[index]}
    if examples.text_pairs is not None:
      row["text_pair"] = examples.text_pairs[index]
    rows.append(row)
  folds = []
  for fold in range(num_folds):
    directory = os.path.join(config.model_dir, "folds", f"fold_{fold}")
    paths = {
        "train": os.path.join(directory, "train.jsonl"),
        "validation": os.path.join(directory, "validation.jsonl"),
    }
    _write_jsonl(
        paths["train"], [row for row, f in zip(rows, fold_of) if f != fold]
    )
    _write_jsonl(
        paths["validation"], [row for row, f in zip(rows, fold_of) if f == fold]
    )
    folds.append(paths)
  return folds


def fold_config(
    config: RunConfig, point: dict[str, Any], fold: int, paths: dict[str, str]
) -> RunConfig:
  trial = with_params(
      config,
      point,
      train_file=paths["train"],
      validation_file=paths["validation"],
      test_file=None,
      tfds_name=None,
      text_column="text",
      label_column="label",
      text_pair_column=("text_pair" if config.data.text_pair_column else None),
  )
  return dataclasses.replace(
      trial,
      model_dir=os.path.join(
          config.model_dir, "trials", point_directory(point), f"fold_{fold}"
      ),
      export_dir=None,
      train=dataclasses.replace(trial.train, export=False),
  )


def run_in_subprocess(
    config: RunConfig, *, timeout: Optional[int] = None
) -> dict:
  """Runs `train(config)` in a fresh Python process; returns its summary."""
  io_utils.check_writable(config.model_dir, "--model_dir")
  path = os.path.join(config.model_dir, "trial_config.json")
  io_utils.write_text_atomically(path, config.to_json() + "\n")
  process = subprocess.run(
      [sys.executable, "-m", "tf_finetune.tuning", path],
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  if process.returncode != 0:
    last = (process.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise RuntimeError(
        f"The run in {config.model_dir} failed (exit "
        f"{process.returncode}): {last}"
    )
  return _read_summary(config.model_dir)


def _read_summary(model_dir: str) -> Optional[dict]:
  path = os.path.join(model_dir, "summary.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def cross_validate(
    config: RunConfig,
    grid: dict[str, list[Any]],
    *,
    num_folds: int,
    refit: bool = False,
) -> dict:
  """Runs the sweep (resuming finished folds) and writes its results.

  Returns:
    {"metric", "points": [{"params", "mean", "std", "folds"}...], "best",
     and "refit_dir" when refit}.
  """
  io_utils.check_writable(config.model_dir, "--model_dir")
  metric = config.train.early_stopping_metric
  higher_is_better = not metric.endswith("loss")
  folds = write_folds(config, num_folds)
  points = grid_points(grid)
  rows = []
  for number, point in enumerate(points, start=1):
    values = []
    for fold, paths in enumerate(folds):
      trial = fold_config(config, point, fold, paths)
      summary = _read_summary(trial.model_dir)
      if summary is None:
        logging.info(
            "Point %d/%d (%s), fold %d/%d: training.",
            number,
            len(points),
            point_name(point),
            fold + 1,
            num_folds,
        )
        summary = run_in_subprocess(trial)
      else:
        logging.info(
            "Point %d/%d (%s), fold %d/%d: already done.",
            number,
            len(points),
            point_name(point),
            fold + 1,
            num_folds,
        )
      values.append(float(summary["best_metric"][metric]))
    rows.append(
        {
            "params": point,
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)),
            "folds": values,
        }
    )
  best = (max if higher_is_better else min)(rows, key=lambda row: row["mean"])
  results = {
      "metric": metric,
      "num_folds": num_folds,
      "points": rows,
      "best": best,
  }
  _write_results(config.model_dir, grid, results)
  if refit:
    refit_config = dataclasses.replace(
        with_params(config, best["params"]),
        model_dir=os.path.join(config.model_dir, "refit"),
        export_dir=config.export_dir,
    )
    if _read_summary(refit_config.model_dir) is None:
      logging.info(
          "Refitting %s on all training data.", point_name(best["params"])
      )
      run_in_subprocess(refit_config)
    results["refit_dir"] = refit_config.model_dir
  return results


def format_table(results: dict) -> str:
  """The sweep as an aligned text table, best point marked."""
  names = list(results["points"][0]["params"])
  header = names + [
      f"{results['metric']} (mean ± std over " f"{results['num_folds']} folds)"
  ]
  lines = [header]
  for row in results["points"]:
    mark = (
        "  <- best"
        if row is results["best"]
        or (row["params"] == results["best"]["params"])
        else ""
    )
    lines.append(
        [str(row["params"][name]) for name in names]
        + [f"{row['mean']:.4f} ± {row['std']:.4f}{mark}"]
    )
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return "\n".join(
      "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
      for line in lines
  )


def _write_results(model_dir: str, grid, results: dict) -> None:
  names = list(grid)
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(
      names
      + ["metric", "mean", "std"]
      + [f"fold_{i}" for i in range(results["num_folds"])]
  )
  for row in results["points"]:
    writer.writerow(
        [row["params"][name] for name in names]
        + [results["metric"], f"{row['mean']:.6f}", f"{row['std']:.6f}"]
        + [f"{value:.6f}" for value in row["folds"]]
    )
  io_utils.write_text_atomically(
      os.path.join(model_dir, CV_RESULTS_FILENAME), text.getvalue()
  )
  io_utils.write_text_atomically(
      os.path.join(model_dir, BEST_PARAMS_FILENAME),
      json.dumps(
          {
              "params": results["best"]["params"],
              "metric": results["metric"],
              "mean": results["best"]["mean"],
              "std": results["best"]["std"],
          },
          indent=2,
      )
      + "\n",
  )
  _write_hparams(os.path.join(model_dir, "logs"), grid, results)


def _write_hparams(log_dir: str, grid, results: dict) -> None:
  """TensorBoard HParams dashboard: one session per grid point."""
  import tensorflow as tf
  from tensorboard.plugins.hparams import api as hp

  metric = f"cv_mean_{results['metric']}"
  with tf.summary.create_file_writer(log_dir).as_default():
    hp.hparams_config(
        hparams=[
            hp.HParam(name, hp.Discrete(values))
            for name, values in grid.items()
        ],
        metrics=[
            hp.Metric(metric, display_name=f"{results['metric']} " "(CV mean)")
        ],
    )
  for row in results["points"]:
    with tf.summary.create_file_writer(
        os.path.join(log_dir, point_directory(row["params"]))
    ).as_default():
      hp.hparams(row["params"], trial_id=point_name(row["params"]))
      tf.summary.scalar(metric, row["mean"], step=1)


def _train_from_json(path: str) -> None:
  """The per-fold process: trains the run config stored at `path`."""
  # Imported here: the parent process that schedules the folds never loads
  # TensorFlow's model code, only each fold's own process does.
  from tf_finetune import training

  logging.set_verbosity(logging.INFO)
  with open(path, encoding="utf-8") as f:
    config = RunConfig.from_dict(json.load(f))
  try:
    training.train(config)
  except ValueError as e:
    print(f"tune: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _train_from_json(sys.argv[1])
