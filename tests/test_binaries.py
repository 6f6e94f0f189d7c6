"""Each binary's main() on patched argv: outputs, and errors for bad input."""

import csv
import json
import os
import re
import shutil

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import TINY_TRAIN_FLAGS, run_binary, run_python, write_rows
from tf_finetune import config as config_lib, optimization
from tf_finetune import evaluate, export, predict, reporting, train


def test_training_writes_every_output(trained_run):
  files = set(os.listdir(trained_run))
  assert {
      "config.json",
      "label_vocab.txt",
      "tokenizer",
      "backbone",
      "checkpoints",
      "logs",
      "eval_results.json",
      "summary.json",
      "export",
  } <= files
  config = json.load(open(os.path.join(trained_run, "config.json")))
  assert config["train"]["learning_rate"] == 3e-3
  assert open(os.path.join(trained_run, "label_vocab.txt")).read() == (
      "negative\npositive\n"
  )
  results = json.load(open(os.path.join(trained_run, "eval_results.json")))
  assert set(results) == {"selection", "validation", "test"}
  assert set(results["test"]["per_class"]) == {"negative", "positive"}
  assert {"precision", "recall", "f1", "support"} <= set(
      results["test"]["per_class"]["positive"]
  )
  summary = json.load(open(os.path.join(trained_run, "summary.json")))
  assert summary["epochs_run"] == 4
  history = summary["history"]
  assert history["loss"][-1] < history["loss"][0]
  assert os.path.isfile(
      os.path.join(trained_run, "export", "1", "saved_model.pb")
  )
  # A finished run leaves no backup; the best epoch's weights (restored at
  # the end) are written once, and checkpoints/final refers to them.
  assert not os.path.exists(os.path.join(trained_run, "backup"))
  assert (
      os.readlink(os.path.join(trained_run, "checkpoints", "final")) == "best"
  )


def test_tensorboard_has_per_step_learning_rate_and_epoch_metrics(trained_run):
  def tags(subdir):
    found = set()
    directory = os.path.join(trained_run, "logs", subdir)
    for name in os.listdir(directory):
      events = event_accumulator.EventAccumulator(
          os.path.join(directory, name), size_guidance={"tensors": 0}
      )
      events.Reload()
      found |= set(events.Tags()["tensors"])
    return found

  train_tags = tags("train")
  assert {
      "learning_rate",
      "batch_loss",
      "epoch_loss",
      "epoch_accuracy",
      "grad_norm",
      "weight_norm",
      "epoch_grad_norm",
  } <= train_tags
  # Same tags in train/ and validation/: one chart per metric, two curves.
  assert {"epoch_loss", "epoch_accuracy"} <= tags("validation")


def test_tensorboard_learning_rates_are_those_the_updates_used(trained_run):
  """Update k (0-based) uses schedule(k): the point at step s (s updates
  done) shows schedule(s - 1), an epoch's point its last update's rate."""
  config = config_lib.read_config(trained_run)
  summary = json.load(open(os.path.join(trained_run, "summary.json")))
  steps_per_epoch = summary["steps_per_epoch"]
  schedule = optimization.create_schedule(
      config.train,
      summary["global_steps"],
      steps_per_epoch=steps_per_epoch,
  )

  def scalars(tag):
    found = {}
    directory = os.path.join(trained_run, "logs", "train")
    for name in os.listdir(directory):
      events = event_accumulator.EventAccumulator(
          os.path.join(directory, name), size_guidance={"tensors": 0}
      )
      events.Reload()
      if tag in events.Tags()["tensors"]:
        for event in events.Tensors(tag):
          found[event.step] = float(tf.make_ndarray(event.tensor_proto))
    return found

  per_step = scalars("learning_rate")
  assert sorted(per_step) == list(range(5, summary["global_steps"] + 1, 5))
  for step, rate in per_step.items():
    assert rate == pytest.approx(float(schedule(step - 1)), rel=1e-5), step
  per_epoch = scalars("epoch_learning_rate")
  assert sorted(per_epoch) == list(range(summary["epochs_run"]))
  for epoch, rate in per_epoch.items():
    last_update = (epoch + 1) * steps_per_epoch - 1
    expected = float(schedule(last_update))
    assert rate == pytest.approx(expected, rel=1e-5), epoch


def test_summary_reports_the_stop_and_the_curves(trained_run):
  summary = json.load(open(os.path.join(trained_run, "summary.json")))
  assert summary["stop_reason"] == "completed_all_epochs"
  assert summary["early_stopping_fired"] is False
  assert summary["kept_epoch"] == summary["best_epoch"]
  # The verdict is the one of the run's own curves at the kept epoch.
  history = summary["history"]
  assert summary["overfitting"] == reporting.diagnose_overfitting(
      history, monitor="val_accuracy", best_epoch=summary["kept_epoch"]
  )
  kept = summary["kept_epoch"] - 1
  assert summary["overfitting"]["accuracy_gap"] == pytest.approx(
      history["accuracy"][kept] - history["val_accuracy"][kept], abs=1e-4
  )
  with open(os.path.join(trained_run, "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # The tiny model learned the toy task: above its most frequent label.
  results = json.load(open(os.path.join(trained_run, "eval_results.json")))
  baseline = summary["most_frequent_label"]
  assert baseline == reporting.compare_with_most_frequent_label(results)
  assert baseline["split"] == "validation"
  assert baseline["accuracy"] == pytest.approx(
      results["validation"]["accuracy"], abs=1e-4
  )
  assert baseline["no_better"] is False


def test_a_run_that_learned_nothing_says_so(tiny_bert_dir, tmp_path, capsys):
  """Every text the same: the model can only learn how often each label
  occurs, so it answers one label for every validation text."""
  rows = [{"text": "the film", "label": "positive"}] * 24 + [
      {"text": "the film", "label": "negative"}
  ] * 8
  files = {
      split: write_rows(str(tmp_path / f"{split}.csv"), rows)
      for split in ("train", "validation")
  }
  model_dir = str(tmp_path / "run")
  code = run_binary(
      train,
      [
          f"--model={tiny_bert_dir}",
          f"--train_file={files['train']}",
          f"--validation_file={files['validation']}",
          f"--model_dir={model_dir}",
      ]
      + TINY_TRAIN_FLAGS,
  )
  assert code == 0
  summary = json.load(open(os.path.join(model_dir, "summary.json")))
  baseline = summary["most_frequent_label"]
  assert baseline["no_better"] is True
  assert baseline["most_predicted_share"] == 1.0
  assert (baseline["most_frequent_label"], baseline["most_frequent_share"]) == (
      "positive",
      0.75,
  )
  assert baseline["message"] in capsys.readouterr().out
  # The evaluate binary says the same of the file it scores.
  code = run_binary(
      evaluate,
      [
          f"--model_dir={model_dir}",
          f"--test_file={files['validation']}",
          "--split_name=again",
      ],
  )
  assert code == 0
  printed = capsys.readouterr().out
  assert "again accuracy: 0.7500" in printed
  assert baseline["message"].replace("validation", "again") in printed


def test_evaluate_binary_records_results(trained_run, sentiment_files, capsys):
  code = run_binary(
      evaluate,
      [
          f"--model_dir={trained_run}",
          f"--test_file={sentiment_files['validation']}",
          "--split_name=dev_again",
      ],
  )
  assert code == 0
  assert "dev_again accuracy:" in capsys.readouterr().out
  results = json.load(open(os.path.join(trained_run, "eval_results.json")))
  assert results["dev_again"]["accuracy"] == pytest.approx(
      results["validation"]["accuracy"]
  )
  assert "test" in results  # Earlier results are kept.


@pytest.mark.parametrize("source", ["model_dir", "saved_model"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_predict_binary_writes_labels_and_probabilities(
    trained_run, tmp_path, source, suffix
):
  inputs = write_rows(
      str(tmp_path / f"in{suffix}"),
      [
          {"id": "a", "text": "good fun film"},
          {"id": "b", "text": "boring dull plot"},
      ],
  )
  output = str(tmp_path / f"out{suffix}")
  where = (
      trained_run
      if source == "model_dir"
      else os.path.join(trained_run, "export")
  )
  code = run_binary(
      predict,
      [
          f"--{source}={where}",
          f"--input_file={inputs}",
          f"--output_file={output}",
      ],
  )
  assert code == 0
  if suffix == ".csv":
    rows = list(csv.DictReader(open(output)))
    assert list(rows[0]) == [
        "id",
        "text",
        "predicted_label",
        "probability_negative",
        "probability_positive",
    ]
    probabilities = [float(r["probability_positive"]) for r in rows]
  else:
    rows = [json.loads(line) for line in open(output)]
    probabilities = [r["probabilities"]["positive"] for r in rows]
  assert [r["id"] for r in rows] == ["a", "b"]
  # The trained model reads the opinion word; the label is the likelier one.
  assert [r["predicted_label"] for r in rows] == ["positive", "negative"]
  assert probabilities[0] > 0.5 > probabilities[1]


def test_predict_from_model_dir_and_saved_model_agree(trained_run, tmp_path):
  inputs = write_rows(
      str(tmp_path / "in.jsonl"),
      [{"text": "good fun film"}, {"text": "a dull story"}],
  )
  outputs = []
  for flag, where in (
      ("model_dir", trained_run),
      ("saved_model", os.path.join(trained_run, "export")),
  ):
    output = str(tmp_path / f"{flag}.jsonl")
    assert (
        run_binary(
            predict,
            [
                f"--{flag}={where}",
                f"--input_file={inputs}",
                f"--output_file={output}",
            ],
        )
        == 0
    )
    outputs.append(
        [json.loads(line)["probabilities"]["positive"] for line in open(output)]
    )
  assert outputs[0] == pytest.approx(outputs[1], abs=1e-5)


def test_export_binary_adds_a_new_version(trained_run, tmp_path):
  code = run_binary(
      export, [f"--model_dir={trained_run}", f"--export_dir={tmp_path}"]
  )
  assert code == 0
  assert os.listdir(tmp_path) == ["1"]
  assert (
      run_binary(
          export, [f"--model_dir={trained_run}", f"--export_dir={tmp_path}"]
      )
      == 0
  )
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def _snapshot(directory):
  return {
      os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
      for root, _, names in os.walk(directory)
      for name in names
  }


@pytest.fixture
def finished_run(trained_run, tmp_path):
  """A private copy of the trained run, to try bad input against."""
  copy = str(tmp_path / "run")
  shutil.copytree(trained_run, copy)
  return copy


def _bad_train(tiny_bert_dir, sentiment_files, model_dir, **overrides):
  flags = {
      "model": tiny_bert_dir,
      "train_file": sentiment_files["train"],
      "validation_file": sentiment_files["validation"],
      "model_dir": model_dir,
  }
  flags.update(overrides)
  return [f"--{k}={v}" for k, v in flags.items()] + TINY_TRAIN_FLAGS


def _write_bytes(path, content: bytes) -> str:
  path.write_bytes(content)
  return str(path)


def _copy_model(tmp, *, drop=None, extra_tokens=0) -> str:
  """A copy of the tiny model; without one file, or with a bigger vocabulary
  (the tokenizer rebuilt from vocab.txt) than its embedding table."""
  source = os.environ["TINY_BERT_DIR"]
  copy = tmp / "model_copy"
  shutil.copytree(source, copy)
  if drop:
    os.remove(copy / drop)
  if extra_tokens:
    os.remove(copy / "tokenizer.json")
    with open(copy / "vocab.txt", "a", encoding="utf-8") as f:
      f.write("".join(f"extra{i}\n" for i in range(extra_tokens)))
  return str(copy)


@pytest.mark.parametrize(
    "make_input, message",
    [
        (
            lambda tmp, files: {"train_file": str(tmp / "missing.csv")},
            r"--train_file='.*missing.csv' does not exist",
        ),
        (
            lambda tmp, files: {"label_column": "sentiment"},
            r"--label_column='sentiment' is not a column of .*train.csv; columns "
            r"are: text, label",
        ),
        (
            lambda tmp, files: {
                "validation_file": write_rows(
                    str(tmp / "val.csv"), [{"text": "meh", "label": "neutral"}]
                )
            },
            r"val.csv:2: label 'neutral' .* never seen in training",
        ),
        (
            lambda tmp, files: {
                "train_file": write_rows(
                    str(tmp / "one.csv"),
                    [{"text": "good", "label": "positive"}] * 3,
                )
            },
            r"single class",
        ),
        (
            lambda tmp, files: {"model": str(tmp)},
            r"--model='.*' is a directory without config.json",
        ),
        (
            lambda tmp, files: {
                "train_file": _write_bytes(
                    tmp / "latin1.csv",
                    b"text,label\ngood,positive\ncaf\xe9,negative\n",
                )
            },
            r"latin1.csv:3: the file is not valid UTF-8 \(byte 0xe9\); save it as "
            r"UTF-8",
        ),
        (
            lambda tmp, files: {
                "train_file": _write_bytes(
                    tmp / "ragged.csv",
                    b"text,label\ngood film,positive\ndull, slow film,negative\n",
                )
            },
            r"ragged.csv:3: expected 2 fields \(text, label\) but found 3",
        ),
        (
            lambda tmp, files: {
                "train_file": _write_bytes(
                    tmp / "broken.jsonl",
                    b'{"text": "good", "label": "positive"}\n{"text": "bad", label}\n',
                )
            },
            r"broken.jsonl:2: not valid JSON",
        ),
        # Labels only in the test split: the training file has none.
        (
            lambda tmp, files: {
                "train_file": write_rows(
                    str(tmp / "unlabelled.csv"),
                    [{"text": "good"}, {"text": "bad"}],
                ),
                "test_file": files["test"],
            },
            r"--label_column='label' is not a column of .*unlabelled.csv; columns "
            r"are: text",
        ),
        (
            lambda tmp, files: {"tfds_name": "glue/sst2"},
            r"--train_file and --tfds_name are both set",
        ),
        (
            lambda tmp, files: {"tpu": "local", "distribution": "mirrored"},
            r"--tpu='local' conflicts with --distribution='mirrored'",
        ),
        (
            lambda tmp, files: {"model": _copy_model(tmp, drop="tf_model.h5")},
            r"--model='.*' has config.json but no weights",
        ),
        (
            lambda tmp, files: {"model": _copy_model(tmp, extra_tokens=40)},
            r"the tokenizer has \d+ tokens but the model's embedding table only "
            r"\d+; they do not belong together",
        ),
        (
            lambda tmp, files: {"model_dir": "/sys/tf_finetune_run"},
            r"--model_dir='/sys/tf_finetune_run' is not writable",
        ),
    ],
)
def test_bad_training_input_fails_in_one_line_and_keeps_earlier_outputs(
    finished_run,
    tiny_bert_dir,
    sentiment_files,
    tmp_path,
    capsys,
    monkeypatch,
    make_input,
    message,
):
  monkeypatch.setenv("TINY_BERT_DIR", tiny_bert_dir)
  before = _snapshot(finished_run)
  overrides = make_input(tmp_path, sentiment_files)
  code = run_binary(
      train,
      _bad_train(
          tiny_bert_dir,
          sentiment_files,
          **{"model_dir": finished_run, **overrides},
      ),
  )
  assert code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith("train: error: ")
  assert re.search(message, error), error
  assert _snapshot(finished_run) == before


def test_evaluate_with_an_unseen_label(finished_run, tmp_path, capsys):
  bad = write_rows(
      str(tmp_path / "test.csv"),
      [
          {"text": "good", "label": "positive"},
          {"text": "meh", "label": "neutral"},
      ],
  )
  before = _snapshot(finished_run)
  assert (
      run_binary(
          evaluate, [f"--model_dir={finished_run}", f"--test_file={bad}"]
      )
      == 2
  )
  assert "test.csv:3: label 'neutral'" in capsys.readouterr().err
  assert _snapshot(finished_run) == before


def test_model_dir_without_weights(finished_run, tmp_path, capsys):
  shutil.rmtree(os.path.join(finished_run, "checkpoints"))
  inputs = write_rows(str(tmp_path / "in.csv"), [{"text": "good"}])
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={finished_run}",
              f"--input_file={inputs}",
              f"--output_file={tmp_path / 'out.csv'}",
          ],
      )
      == 2
  )
  assert "has no trained weights" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "out.csv")


def test_unknown_flag_in_a_flagfile_is_rejected(tmp_path):
  flagfile = tmp_path / "bad.flags"
  flagfile.write_text("--model=x\n--learning_rte=1e-5\n")
  result = run_python(
      ["-m", "tf_finetune.train", f"--flagfile={flagfile}"], timeout=120
  )
  assert result.returncode != 0
  assert "learning_rte" in result.stderr


def test_train_binary_in_a_fresh_process_reports_a_clear_error(tmp_path):
  result = run_python(
      [
          "-m",
          "tf_finetune.train",
          "--model=x",
          f"--train_file={tmp_path / 'nope.csv'}",
          f"--model_dir={tmp_path / 'run'}",
      ],
      timeout=120,
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"train: error: --train_file='{tmp_path / 'nope.csv'}' does not exist."
  )


def test_empty_and_very_long_texts_are_reported_not_fatal(
    finished_run, tmp_path, capsys, caplog
):
  long_text = " ".join(["good"] * 25_000)[:100_000]
  assert len(long_text) == 100_000
  rows = [
      {"text": "good fun film", "label": "positive"},
      {"text": "", "label": "negative"},
      {"text": long_text, "label": "positive"},
      {"text": "a dull story", "label": "negative"},
  ]
  test_file = write_rows(str(tmp_path / "odd.csv"), rows)
  caplog.set_level("INFO")
  assert (
      run_binary(
          evaluate,
          [
              f"--model_dir={finished_run}",
              f"--test_file={test_file}",
              "--split_name=odd",
          ],
      )
      == 0
  )
  assert "odd accuracy:" in capsys.readouterr().out
  assert re.search(
      r"odd.csv: 1 example\(s\) have an empty 'text' text " r"\(lines 3\)",
      caplog.text,
  )
  # 3 of 4 fit in --max_seq_length=32 tokens; the long one is cut.
  assert re.search(
      r"odd.csv: 1 of 4 examples \(25.0%\) were longer than "
      r"--max_seq_length=32 tokens and were truncated",
      caplog.text,
  )
  results = json.load(open(os.path.join(finished_run, "eval_results.json")))
  assert results["odd"]["num_examples"] == 4


def test_read_only_model_dir_fails_before_training(tmp_path):
  """A directory this user cannot write: checked first, in one line.

  Root writes through permission bits, so the check runs in a child
  process that gives up root (the check is plain Python, safe after fork).
  """
  from tf_finetune import io_utils

  model_dir = tmp_path / "read_only"
  model_dir.mkdir()
  (model_dir / "earlier.txt").write_text("kept")
  os.chmod(tmp_path, 0o755)
  os.chmod(model_dir, 0o555)
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:  # The child: check, report, exit without cleanup.
    try:
      os.close(read)
      if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
      try:
        io_utils.check_writable(str(model_dir), "--model_dir")
        message = "writable"
      except ValueError as e:
        message = str(e)
      os.write(write, message.encode("utf-8"))
    finally:
      os._exit(0)
  os.close(write)
  with os.fdopen(read, encoding="utf-8") as f:
    message = f.read()
  os.waitpid(pid, 0)
  os.chmod(model_dir, 0o755)
  assert message == (
      f"--model_dir={str(model_dir)!r} is not writable: " "Permission denied."
  )
  assert os.listdir(model_dir) == ["earlier.txt"]
