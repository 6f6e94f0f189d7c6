"""A task defined outside the package trains, evaluates, predicts and
exports through the ordinary binaries, with no change to tf_finetune."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import TINY_TRAIN_FLAGS, run_binary, run_python, write_rows
from tf_finetune import evaluate, export, predict, serving, tasks, train
from tf_finetune.tasks import text


class PolarityServer(serving.EncoderServer):
  """polarity (float32 [batch]): -1 negative ... +1 positive."""

  def serve_ids(self, input_ids, attention_mask, token_type_ids):
    logits = self.logits(input_ids, attention_mask, token_type_ids)
    return {"polarity": tf.tanh(logits[:, 0])}


def polarity_loss(labels, logits):
  """Squared distance of tanh(logit) from the +1/-1 target, per example."""
  return tf.square(
      tf.tanh(tf.cast(logits[:, 0], tf.float32)) - tf.cast(labels, tf.float32)
  )


class Polarity(text.TextTask):
  """Sentiment as one signed number: +1 for "positive", -1 otherwise."""

  name = "toy_polarity"
  checked_output = "polarity"

  def label_vocab_of(self, examples):
    return ["polarity"]

  def label_ids(self, examples):
    return np.array(
        [1.0 if label == "positive" else -1.0 for label in examples.labels],
        np.float32,
    )

  def loss_fn(self, train_config):
    return polarity_loss

  def keras_metrics(self):
    return [tf_keras.metrics.MeanAbsoluteError(name="distance")]

  def predict(self, model, encoded, *, batch_size):
    return np.tanh(self.logits(model, encoded, batch_size=batch_size)[:, 0])

  def metrics(self, examples, encoded, outputs):
    signs = np.sign(outputs) == np.sign(encoded.label_ids)
    return {
        "num_examples": len(outputs),
        "sign_accuracy": float(np.mean(signs)),
    }

  def describe(self, metrics):
    return (
        f"sign accuracy: {metrics['sign_accuracy']:.4f}  "
        f"({metrics['num_examples']} examples)"
    )

  def server(self, trained):
    return PolarityServer(
        trained.model,
        trained.encoder,
        task_name=self.name,
        label_vocab=self.state.label_vocab,
        input_names=self.server_input_names(),
    )

  def prediction_rows(self, outputs):
    return [
        {"polarity": round(float(value), 6)} for value in outputs["polarity"]
    ]


@pytest.fixture
def polarity_task():
  tasks.register(
      "toy_polarity", Polarity, monitors=("val_loss", "val_distance")
  )
  yield
  tasks.unregister("toy_polarity")


def test_a_task_from_outside_the_package_runs_through_every_binary(
    polarity_task, tmp_path, tiny_bert_dir, sentiment_files
):
  model_dir = str(tmp_path / "run")
  assert (
      run_binary(
          train,
          [
              "--task=toy_polarity",
              f"--model={tiny_bert_dir}",
              f"--train_file={sentiment_files['train']}",
              f"--validation_file={sentiment_files['validation']}",
              f"--test_file={sentiment_files['test']}",
              f"--model_dir={model_dir}",
          ]
          + TINY_TRAIN_FLAGS,
      )
      == 0
  )
  config = json.load(open(os.path.join(model_dir, "config.json")))
  # The registered default metric was watched, and the toy's metrics kept.
  assert config["train"]["early_stopping_metric"] == "val_loss"
  summary = json.load(open(os.path.join(model_dir, "summary.json")))
  assert "val_distance" in summary["history"]
  results = json.load(open(os.path.join(model_dir, "eval_results.json")))
  assert results["test"]["sign_accuracy"] > 0.9  # It learned the task.

  assert (
      run_binary(
          evaluate,
          [
              f"--model_dir={model_dir}",
              f"--test_file={sentiment_files['validation']}",
              "--split_name=again",
          ],
      )
      == 0
  )
  results = json.load(open(os.path.join(model_dir, "eval_results.json")))
  assert results["again"]["sign_accuracy"] == pytest.approx(
      results["validation"]["sign_accuracy"]
  )

  inputs = write_rows(
      str(tmp_path / "in.jsonl"),
      [{"text": "good fun film"}, {"text": "boring dull plot"}],
  )
  outputs = {}
  for flag, where in (
      ("model_dir", model_dir),
      ("saved_model", os.path.join(model_dir, "export")),
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
    outputs[flag] = [json.loads(line)["polarity"] for line in open(output)]
  assert outputs["model_dir"] == pytest.approx(outputs["saved_model"], abs=1e-5)
  assert outputs["model_dir"][0] > 0 > outputs["model_dir"][1]

  assert run_binary(export, [f"--model_dir={model_dir}"]) == 0
  version = serving.latest_version_dir(os.path.join(model_dir, "export"))
  assert os.path.basename(version) == "2"
  # The export serves raw text in a process that never saw the toy task.
  reload = (
      "import sys, tensorflow as tf, tensorflow_text\n"
      "m = tf.saved_model.load(sys.argv[1])\n"
      "out = m.signatures['serving_default'](text=tf.constant(\n"
      "    ['good fun film']))\n"
      "print(m.get_task().numpy().decode(), "
      "float(out['polarity'][0]))\n"
  )
  result = run_python(["-c", reload, version])
  assert result.returncode == 0, result.stderr[-2000:]
  task_name, polarity = result.stdout.split()[-2:]
  assert task_name == "toy_polarity"
  assert float(polarity) == pytest.approx(outputs["model_dir"][0], abs=1e-5)


def test_an_unregistered_task_is_refused_in_one_line(
    tmp_path, tiny_bert_dir, sentiment_files, capsys
):
  assert (
      run_binary(
          train,
          [
              "--task=toy_polarity",
              f"--model={tiny_bert_dir}",
              f"--train_file={sentiment_files['train']}",
              f"--model_dir={tmp_path / 'run'}",
          ],
      )
      != 0
  )
  assert "toy_polarity" in capsys.readouterr().err
