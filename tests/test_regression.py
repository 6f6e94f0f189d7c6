"""tasks/regression.py: scores, correlations, losses, a fit and an export."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    make_score_rows,
    run_binary,
    run_python,
    train_task,
    write_rows,
)
from tf_finetune import (
    config as config_lib,
    evaluate,
    predict,
    prediction,
    serving,
    tasks,
)
from tf_finetune.data import readers
from tf_finetune.tasks import regression


def test_correlations_match_hand_computed_values():
  # Deviations from 2.5: x (-1.5, -.5, .5, 1.5), y (-1.5, .5, -.5, 1.5):
  # sum of products 4, sums of squares 5 and 5 -> 4 / 5.
  assert regression.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
  assert regression.spearman([10, 20, 30, 40], [1, 9, 5, 99]) == pytest.approx(
      0.8
  )
  # Ties share ranks: (1, 2.5, 2.5, 4) against (1, 2, 3, 4):
  # 4.5 / sqrt(4.5 x 5).
  assert regression.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
      4.5 / np.sqrt(22.5)
  )
  np.testing.assert_array_equal(
      regression.average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2]
  )
  assert regression.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_streaming_pearson_metric_equals_the_batch_value():
  metric = regression.PearsonCorrelation()
  labels = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 4.0])
  outputs = np.array([0.2, 0.9, 2.5, 2.0, 4.0, 4.5])
  metric.update_state(labels[:4], outputs[:4, None])
  metric.update_state(labels[4:], outputs[4:, None])
  assert float(metric.result()) == pytest.approx(
      regression.pearson(labels, outputs), abs=1e-6
  )


def test_mse_and_huber_losses():
  labels = tf.constant([0.0, 0.0, 0.0])
  outputs = tf.constant([[0.5], [-3.0], [1.0]])
  np.testing.assert_allclose(
      regression.regression_loss("mse", 1.0)(labels, outputs), [0.25, 9, 1]
  )
  # delta 1: 0.5 x 0.5^2 = 0.125; 1 x (3 - 0.5) = 2.5; 0.5 x 1^2 = 0.5.
  np.testing.assert_allclose(
      regression.regression_loss("huber", 1.0)(labels, outputs),
      [0.125, 2.5, 0.5],
  )


def test_a_label_that_is_not_a_number_names_file_and_line(tmp_path):
  path = write_rows(
      str(tmp_path / "scores.csv"),
      [{"text": "a", "label": "1.5"}, {"text": "b", "label": "high"}],
  )
  task = tasks.get_task(config_lib.task_config(task="regression"))
  examples = task.read(config_lib.DataConfig(train_file=path), "train")
  with pytest.raises(
      ValueError, match=r"scores.csv:3: the label 'high' is " "not a number"
  ):
    task.label_vocab_of(examples)


def test_train_binary_reports_a_bad_score_in_one_line(
    tmp_path, capsys, tiny_bert_dir
):
  from tf_finetune import train

  path = write_rows(
      str(tmp_path / "train.csv"),
      [
          {"text": "a", "label": "1.5"},
          {"text": "b", "label": "2"},
          {"text": "c", "label": "n/a"},
      ],
  )
  code = run_binary(
      train,
      [
          f"--model={tiny_bert_dir}",
          f"--train_file={path}",
          f"--model_dir={tmp_path / 'run'}",
          "--task=regression",
      ],
  )
  assert code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"train: error: {path}:4: the label 'n/a' is not a number; "
      "--task=regression needs a numeric --label_column."
  )
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_regression_needs_its_own_early_stopping_metric(tmp_path):
  with pytest.raises(
      ValueError,
      match=r"--early_stopping_metric="
      r"'val_accuracy' is not reported by --task=regression; "
      "use one of val_pearson, val_loss",
  ):
    config_lib.RunConfig(
        model_dir=str(tmp_path),
        data=config_lib.DataConfig(train_file="a"),
        model=config_lib.ModelConfig(model="m"),
        train=config_lib.TrainConfig(early_stopping_metric="val_accuracy"),
        task=config_lib.task_config(task="regression"),
    )


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_bert_dir):
  directory = tmp_path_factory.mktemp("regression")
  files = {
      split: write_rows(
          str(directory / f"{split}.csv"), make_score_rows(count, seed=seed)
      )
      for split, count, seed in (
          ("train", 192, 11),
          ("validation", 48, 12),
          ("test", 48, 13),
      )
  }
  return train_task(
      directory,
      tiny_bert_dir,
      files,
      ["--task=regression", "--regression_loss=huber"],
  )


def test_fit_learns_the_scores_and_reports_correlations(regression_run):
  results = json.load(open(os.path.join(regression_run, "eval_results.json")))
  summary = json.load(open(os.path.join(regression_run, "summary.json")))
  assert summary["best_metric"].keys() == {"val_pearson"}
  assert summary["history"]["loss"][-1] < summary["history"]["loss"][0]
  test = results["test"]
  assert {"pearson", "spearman", "mse", "loss"} <= set(test)
  assert test["pearson"] > 0.5, test
  assert (
      open(os.path.join(regression_run, "label_vocab.txt")).read() == "score\n"
  )


def test_export_returns_the_score_in_a_fresh_process(regression_run):
  texts = ["good great fun", "the movie", "superb moving good film"]
  export_dir = serving.latest_version_dir(
      os.path.join(regression_run, "export")
  )
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export_dir!r})
outputs = model.signatures["serving_default"](text=tf.constant({texts!r}))
print(json.dumps({{"score": outputs["score"].numpy().tolist(),
                  "task": model.get_task().numpy().decode()}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["task"] == "regression"
  rows = prediction.Predictor.from_model_dir(regression_run).predict_rows(texts)
  np.testing.assert_allclose(
      served["score"], [row["predicted_score"] for row in rows], atol=1e-5
  )
  # Three positive words score above none.
  assert served["score"][2] > served["score"][1]


def test_predict_binary_writes_the_score(regression_run, tmp_path):
  inputs = write_rows(
      str(tmp_path / "in.csv"),
      [{"id": "a", "text": "good fun"}, {"id": "b", "text": "the plot"}],
  )
  output = str(tmp_path / "out.csv")
  assert (
      run_binary(
          predict,
          [
              f"--saved_model={regression_run}/export",
              f"--input_file={inputs}",
              f"--output_file={output}",
          ],
      )
      == 0
  )
  examples = readers.read_file(
      output,
      text_column="text",
      text_pair_column=None,
      label_column="predicted_score",
  )
  assert [float(s) for s in examples.labels] == pytest.approx(
      [
          r["predicted_score"]
          for r in prediction.Predictor.from_model_dir(
              regression_run
          ).predict_rows(["good fun", "the plot"])
      ],
      abs=1e-5,
  )


def test_evaluate_binary_prints_the_correlations(regression_run, capsys):
  assert (
      run_binary(
          evaluate, [f"--model_dir={regression_run}", "--split_name=again"]
      )
      == 0
  )
  out = capsys.readouterr().out
  assert out.startswith("again pearson: ")
  results = json.load(open(os.path.join(regression_run, "eval_results.json")))
  assert results["again"]["pearson"] == pytest.approx(
      results["test"]["pearson"], abs=1e-6
  )


def test_tune_accepts_regression_and_refuses_tasks_without_folds(tmp_path):
  from tf_finetune import tuning

  path = write_rows(str(tmp_path / "train.csv"), make_score_rows(8, seed=5))

  def config(task):
    return config_lib.RunConfig(
        model_dir=str(tmp_path / "cv"),
        data=config_lib.DataConfig(train_file=path),
        model=config_lib.ModelConfig(model="m"),
        task=config_lib.task_config(task=task),
    )

  rows = [
      {"text": row["text"], "label": float(row["label"])}
      for row in csv.DictReader(open(path))
  ]
  folds = tuning.write_folds(config("regression"), 2)
  assert len(folds) == 2

  def read(path):
    return [json.loads(line) for line in open(path)]

  # Each example validates in exactly one fold and trains in the other,
  # with its text and score as read.
  validated = []
  for fold in folds:
    train, validation = read(fold["train"]), read(fold["validation"])
    assert validation and train
    for row in train + validation:
      row["label"] = float(row["label"])
    assert sorted(map(json.dumps, train + validation)) == sorted(
        map(json.dumps, rows)
    )
    validated += validation
  assert sorted(map(json.dumps, validated)) == sorted(map(json.dumps, rows))
  with pytest.raises(
      ValueError, match="--task=token_classification is not " "supported"
  ):
    tuning.write_folds(config("token_classification"), 2)


def test_tune_folds_spread_the_scores_by_quantile(tmp_path, caplog):
  """40 distinct scores in 4 folds: each fold holds one of every 4
  neighbouring scores (quantile bins), not one "class" per distinct float
  dealt out in the string order of the scores ("13.36" before "2.37")."""
  from tf_finetune import tuning

  scores = [round(0.037 * i * i, 2) for i in range(40)]
  rows = [
      {"text": f"text {i}", "label": score} for i, score in enumerate(scores)
  ]
  path = write_rows(str(tmp_path / "train.jsonl"), rows)
  config = config_lib.RunConfig(
      model_dir=str(tmp_path / "cv"),
      data=config_lib.DataConfig(train_file=path),
      model=config_lib.ModelConfig(model="m"),
      task=config_lib.task_config(task="regression"),
  )
  with caplog.at_level("WARNING"):
    folds = tuning.write_folds(config, 4)
  assert "rarest label" not in caplog.text
  fold_of = {}
  for fold, paths in enumerate(folds):
    for line in open(paths["validation"]):
      fold_of[float(json.loads(line)["label"])] = fold
  assert sorted(fold_of) == scores
  for start in range(0, 40, 4):
    assert sorted(fold_of[s] for s in scores[start : start + 4]) == [0, 1, 2, 3]
  # A different seed deals each bin out differently.
  reseeded = dataclasses.replace(
      config,
      model_dir=str(tmp_path / "cv2"),
      train=dataclasses.replace(config.train, seed=7),
  )
  other = {}
  for fold, paths in enumerate(tuning.write_folds(reseeded, 4)):
    for line in open(paths["validation"]):
      other[float(json.loads(line)["label"])] = fold
  assert other != fold_of
