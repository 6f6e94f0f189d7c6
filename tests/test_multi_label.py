"""tasks/multi_label.py: label formats, F1 and thresholds, a fit, an export."""

import json
import os

import numpy as np
import pytest

from conftest import (
    make_multi_label_rows,
    run_binary,
    run_python,
    train_task,
    write_rows,
)
from tf_finetune import config as config_lib, predict, serving, tasks
from tf_finetune.tasks import multi_label
from tf_finetune.tasks.base import TaskState


def _task(**options):
  return tasks.get_task(config_lib.task_config(task="multi_label", **options))


def _read(task, path):
  return task.read(config_lib.DataConfig(train_file=path), "train")


def test_micro_and_macro_f1_match_hand_computed_values():
  targets = np.array([[1, 0], [1, 1], [0, 1]])
  predicted = np.array([[1, 1], [1, 0], [0, 0]])
  scores = multi_label.f1_scores(targets, predicted)
  # Label 0: 2 true positives, 2 predicted, 2 actual -> F1 1.
  # Label 1: 0 true positives, 1 predicted, 2 actual -> F1 0.
  # Micro: 2 true positives, 3 predicted, 4 actual -> 2 x 2 / 7.
  assert scores["micro_f1"] == pytest.approx(4 / 7)
  assert scores["micro_precision"] == pytest.approx(2 / 3)
  assert scores["micro_recall"] == pytest.approx(2 / 4)
  assert scores["macro_f1"] == pytest.approx(0.5)
  metric = multi_label.MultiLabelF1(2, "micro")
  # Logits >= 0 are predictions at probability 0.5.
  metric.update_state(targets, np.where(predicted, 1.0, -1.0))
  assert float(metric.result()) == pytest.approx(4 / 7)
  macro = multi_label.MultiLabelF1(2, "macro")
  macro.update_state(targets, np.where(predicted, 1.0, -1.0))
  assert float(macro.result()) == pytest.approx(0.5)


def test_training_f1_predicts_at_the_threshold_flag():
  """Probabilities 0.7 on the true labels, 0.3 on the false ones: at
  --threshold=0.5 every decision is right; at 0.8 nothing is predicted."""
  targets = np.array([[1, 0], [0, 1], [1, 1]])
  logits = np.where(targets, np.log(0.7 / 0.3), np.log(0.3 / 0.7))
  results = {}
  for threshold in (0.5, 0.8, 0.25):
    task = tasks.get_task(
        config_lib.task_config(task="multi_label", threshold=threshold)
    )
    task.bind(TaskState(label_vocab=("a", "b")))
    micro, macro = task.keras_metrics()
    for metric in (micro, macro):
      metric.update_state(targets, logits)
    results[threshold] = (float(micro.result()), float(macro.result()))
  assert results[0.5] == pytest.approx((1.0, 1.0))
  assert results[0.8] == pytest.approx((0.0, 0.0))
  # At 0.25 every label is predicted: 4 true positives, 6 predicted, 4
  # actual; per label 2 x 2 / (3 + 2) and 2 x 2 / (3 + 2).
  assert results[0.25] == pytest.approx((0.8, 0.8))


def test_threshold_tuning_picks_the_best_micro_f1():
  targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
  # True labels score 0.3-0.4, false ones 0.1-0.2: any threshold in
  # (0.2, 0.3] is perfect; 0.25 and 0.3 tie and 0.3 is nearer 0.5.
  probabilities = np.array([[0.35, 0.1], [0.2, 0.3], [0.4, 0.32], [0.15, 0.2]])
  assert multi_label.best_threshold(targets, probabilities) == 0.3


def test_reads_delimited_labels_lists_and_binary_columns(tmp_path):
  delimited = write_rows(
      str(tmp_path / "a.csv"),
      [
          {"text": "x", "label": "sports|politics"},
          {"text": "y", "label": ""},
          {"text": "z", "label": "arts"},
      ],
  )
  task = _task(label_delimiter="|")
  examples = _read(task, delimited)
  assert examples.labels == [("sports", "politics"), (), ("arts",)]
  assert task.label_vocab_of(examples) == ["arts", "politics", "sports"]
  task.bind(TaskState(label_vocab=("arts", "politics", "sports")))
  np.testing.assert_array_equal(
      task.label_ids(examples), [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
  )

  lists = tmp_path / "b.jsonl"
  lists.write_text(
      '{"text": "x", "label": ["b", "a"]}\n' '{"text": "y", "label": []}\n'
  )
  assert _read(_task(), str(lists)).labels == [("b", "a"), ()]

  columns = write_rows(
      str(tmp_path / "c.csv"),
      [
          {"text": "x", "toxic": "1", "spam": "0"},
          {"text": "y", "toxic": "0", "spam": "1"},
      ],
  )
  task = _task(label_columns="toxic,spam")
  examples = _read(task, columns)
  assert examples.labels == [("toxic",), ("spam",)]
  assert task.label_vocab_of(examples) == ["toxic", "spam"]


def test_bad_multi_label_input_names_file_and_line(tmp_path):
  columns = write_rows(
      str(tmp_path / "c.csv"),
      [{"text": "x", "toxic": "1"}, {"text": "y", "toxic": "maybe"}],
  )
  with pytest.raises(
      ValueError, match=r"c.csv:3: the 'toxic' value " "'maybe' is not 0 or 1"
  ):
    _read(_task(label_columns="toxic"), columns)
  validation = write_rows(
      str(tmp_path / "v.csv"),
      [{"text": "x", "label": "a"}, {"text": "y", "label": "a|zzz"}],
  )
  task = _task(label_delimiter="|")
  with pytest.raises(
      ValueError,
      match=r"v.csv:3: label 'zzz' \(from "
      r"--validation_file\) was never seen in training",
  ):
    task.bind(TaskState(label_vocab=("a", "b")))
    task.check_labels(_read(task, validation), "--validation_file")
  with pytest.raises(
      ValueError, match="--label_delimiter and " "--label_columns are both set"
  ):
    config_lib.task_config(
        task="multi_label", label_delimiter="|", label_columns="a,b"
    )


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_bert_dir):
  directory = tmp_path_factory.mktemp("multi_label")
  files = {
      split: write_rows(
          str(directory / f"{split}.jsonl"),
          make_multi_label_rows(count, seed=seed),
      )
      for split, count, seed in (
          ("train", 192, 21),
          ("validation", 48, 22),
          ("test", 48, 23),
      )
  }
  return train_task(
      directory,
      tiny_bert_dir,
      files,
      ["--task=multi_label", "--label_column=labels", "--label_delimiter=|"],
  )


def test_fit_tunes_and_saves_the_threshold(multi_label_run):
  state = json.load(open(os.path.join(multi_label_run, "task_state.json")))
  assert state["tuned"] is True
  assert state["threshold"] in multi_label.CANDIDATE_THRESHOLDS
  results = json.load(open(os.path.join(multi_label_run, "eval_results.json")))
  assert results["test"]["threshold"] == state["threshold"]
  assert results["test"]["micro_f1"] > 0.7, results["test"]
  assert set(results["test"]["per_label"]) == {"complaint", "praise"}
  summary = json.load(open(os.path.join(multi_label_run, "summary.json")))
  assert summary["best_metric"].keys() == {"val_micro_f1"}


def test_validation_reports_the_tuned_threshold_as_selection(multi_label_run):
  """The threshold was tuned on validation: there the headline metrics are
  at --threshold, the tuned ones under a key saying they are selection
  numbers; the test split is scored at the tuned threshold, held out."""
  state = json.load(open(os.path.join(multi_label_run, "task_state.json")))
  results = json.load(open(os.path.join(multi_label_run, "eval_results.json")))
  assert results["selection"] == {
      "kept_epoch": "validation",
      "threshold": "validation",
      "validation_metrics": "selection",
      "test_metrics": "held out",
  }
  validation, test = results["validation"], results["test"]
  assert validation["threshold"] == 0.5
  assert validation["micro_f1"] == validation["micro_f1_at_0.5"]
  tuned = validation["selection_at_tuned_threshold"]
  assert tuned["threshold"] == state["threshold"]
  # The tuned threshold is the best of the candidates on validation.
  assert tuned["micro_f1"] >= validation["micro_f1"]
  assert "selection_at_tuned_threshold" not in test
  assert test["threshold"] == state["threshold"]


def test_export_returns_the_labels_above_the_saved_threshold(
    multi_label_run, tmp_path
):
  texts = ["good and boring", "the movie", "a superb story", "dull plot"]
  export_dir = serving.latest_version_dir(
      os.path.join(multi_label_run, "export")
  )
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export_dir!r})
out = model.signatures["serving_default"](text=tf.constant({texts!r}))
print(json.dumps({{"probabilities": out["probabilities"].numpy().tolist(),
                  "labels": [l.decode() for l in out["labels"].numpy()],
                  "threshold": float(model.get_threshold().numpy()),
                  "vocab": [l.decode() for l in
                            model.get_label_vocab().numpy()]}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  threshold = json.load(open(os.path.join(multi_label_run, "task_state.json")))[
      "threshold"
  ]
  # The export carries the tuned threshold, not --threshold's 0.5.
  assert served["threshold"] == pytest.approx(threshold)
  for probabilities, labels in zip(served["probabilities"], served["labels"]):
    expected = [
        name
        for name, p in zip(served["vocab"], probabilities)
        if p >= threshold
    ]
    assert labels == "|".join(expected)
  assert served["labels"][0] == "complaint|praise"
  assert served["labels"][1] == ""

  inputs = write_rows(
      str(tmp_path / "in.jsonl"), [{"text": text} for text in texts]
  )
  output = str(tmp_path / "out.jsonl")
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={multi_label_run}",
              f"--input_file={inputs}",
              f"--output_file={output}",
          ],
      )
      == 0
  )
  rows = [json.loads(line) for line in open(output)]
  assert ["|".join(row["predicted_labels"]) for row in rows] == served["labels"]
