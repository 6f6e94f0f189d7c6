import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import make_sentiment_rows, write_rows
from tf_finetune import callbacks, config as config_lib, training
from tf_finetune.data import readers


def _config(model_dir, tiny_bert_dir, files, **train):
  options = dict(epochs=3, learning_rate=3e-3, warmup_ratio=0.1,
                 early_stopping_patience=0, log_every_steps=5, export=False,
                 precision="fp32")
  options.update(train)
  return config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(train_file=files["train"],
                                 validation_file=files.get("validation"),
                                 max_seq_length=32, batch_size=16),
      model=config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean"),
      train=config_lib.TrainConfig(**options))


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_bert_dir,
                                               sentiment_files):
  assert len(tf.config.list_logical_devices("CPU")) == 2
  summary = training.train(_config(tmp_path / "run", tiny_bert_dir,
                                   sentiment_files, distribution="mirrored",
                                   epochs=2))
  assert summary["replicas"] == 2
  assert summary["global_batch_size"] == 32  # 16 per replica x 2 replicas.
  # 192 examples at 32 per step: at least 6 steps (more with bucketing).
  assert summary["steps_per_epoch"] >= 6
  loss = summary["history"]["loss"]
  assert np.isfinite(loss).all() and loss[-1] < loss[0]


def test_early_stopping_stops_and_restores_the_best_weights(
    tmp_path, tiny_bert_dir, sentiment_files):
  # Validation labels are the opposite of the training labels: the better
  # the model learns, the worse validation gets, so training must stop and
  # go back to an early epoch.
  flipped = [dict(row, label="negative" if row["label"] == "positive" else
                  "positive")
             for row in make_sentiment_rows(64, seed=2)]
  files = dict(sentiment_files, validation=write_rows(
      str(tmp_path / "flipped.csv"), flipped))
  model_dir = tmp_path / "run"
  summary = training.train(_config(
      model_dir, tiny_bert_dir, files, epochs=10, early_stopping_patience=2,
      early_stopping_metric="val_loss"))
  val_loss = summary["history"]["val_loss"]
  assert summary["stop_reason"] == "early_stopping"
  assert summary["epochs_run"] < 10
  assert summary["best_epoch"] == int(np.argmin(val_loss)) + 1
  assert summary["best_epoch"] < summary["epochs_run"]
  # Validation loss rose while training loss fell: the summary says so.
  assert summary["overfitting"]["overfitting"] is True
  assert summary["overfitting"]["message"].startswith("Overfitting:")
  assert summary["early_stopping_fired"] is True
  # The weights kept are the best epoch's: evaluating them reproduces it.
  results = json.load(open(model_dir / "eval_results.json"))
  assert results["validation"]["loss"] == pytest.approx(min(val_loss),
                                                        rel=1e-3)
  best = tf.train.load_checkpoint(str(model_dir / "checkpoints/best/weights"))
  final = tf.train.load_checkpoint(str(model_dir /
                                       "checkpoints/final/weights"))
  kernels = [k for k in best.get_variable_to_shape_map()
             if "head" in k and "kernel" in k and "OPTIMIZER" not in k]
  assert kernels
  for key in kernels:
    np.testing.assert_array_equal(best.get_tensor(key), final.get_tensor(key))


def test_last_epoch_is_kept_without_restore_best_weights(
    tmp_path, tiny_bert_dir, sentiment_files):
  model_dir = tmp_path / "run"
  summary = training.train(_config(
      model_dir, tiny_bert_dir, sentiment_files, epochs=2,
      restore_best_weights=False, early_stopping_metric="val_loss"))
  assert summary["kept_epoch"] == 2
  results = json.load(open(model_dir / "eval_results.json"))
  assert results["validation"]["loss"] == pytest.approx(
      summary["history"]["val_loss"][-1], rel=1e-3)


def test_non_finite_loss_stops_with_step_and_learning_rate():
  model = tf_keras.Sequential([tf_keras.layers.Dense(1)])
  model.compile(optimizer=tf_keras.optimizers.SGD(0.01), loss="mse")
  guard = callbacks.StopOnNonFiniteLoss()
  x = np.ones((8, 2), np.float32)
  y = np.ones((8, 1), np.float32)
  y[4:] = np.nan  # The second batch of 4 has a NaN target.
  history = model.fit(x, y, batch_size=4, epochs=3, callbacks=[guard],
                      shuffle=False, verbose=0)
  assert len(history.history["loss"]) == 1  # Stopped in the first epoch.
  assert "at step 2 (learning rate 0.01)" in guard.message
  assert "--learning_rate" in guard.message


def test_tfds_source_maps_class_labels_to_names():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=12):
    examples = readers.read_tfds("glue/sst2", "train", data_dir=None,
                                 text_column="sentence",
                                 text_pair_column=None, label_column="label")
  assert len(examples) == 12
  assert all(isinstance(text, str) for text in examples.texts)
  assert set(examples.labels) <= {"negative", "positive"}


def test_tfds_feature_names_are_checked():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ValueError, match=r"--text_column='text' is not a "
                       r"feature of glue/sst2; features are: .*sentence"):
      readers.read_tfds("glue/sst2", "train", data_dir=None,
                        text_column="text", text_pair_column=None,
                        label_column="label")


def test_tfds_training_run(tmp_path, tiny_bert_dir):
  import tensorflow_datasets as tfds
  config = config_lib.RunConfig(
      model_dir=str(tmp_path / "run"),
      data=config_lib.DataConfig(tfds_name="glue/sst2",
                                 text_column="sentence", max_seq_length=32,
                                 batch_size=8),
      model=config_lib.ModelConfig(model=tiny_bert_dir),
      train=config_lib.TrainConfig(epochs=1, export=False))
  with tfds.testing.mock_data(num_examples=24):
    summary = training.train(config)
  assert summary["epochs_run"] == 1
  assert "validation" in summary["eval_results"]


def test_precision_policy_is_restored_after_a_run(tmp_path, tiny_bert_dir,
                                                  sentiment_files):
  summary = training.train(_config(tmp_path / "run", tiny_bert_dir,
                                   sentiment_files, epochs=1,
                                   precision="bf16"))
  assert summary["precision"] == "bf16"
  assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_killed_run_resumes_from_its_backup(tmp_path, tiny_bert_dir,
                                            sentiment_files):
  """SIGKILL mid-epoch, rerun the same command: it finishes the same steps."""
  import signal
  import subprocess
  import sys
  import time

  args = [sys.executable, "-m", "tf_finetune.train",
          f"--model={tiny_bert_dir}",
          f"--train_file={sentiment_files['train']}",
          f"--validation_file={sentiment_files['validation']}",
          f"--model_dir={tmp_path / 'run'}", "--max_seq_length=32",
          "--batch_size=16", "--epochs=3", "--save_every_steps=2",
          "--log_every_steps=1", "--noexport", "--precision=fp32"]
  process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  killed_at = None
  try:
    for line in process.stderr:
      if "Step 17/36" in line:  # Second epoch: 192 examples / 16 = 12 steps.
        process.send_signal(signal.SIGKILL)
        killed_at = 17
        break
      assert time.time() < deadline, "training did not reach step 17"
  finally:
    process.kill()
    process.wait(timeout=60)
  assert killed_at == 17
  assert os.listdir(tmp_path / "run" / "backup")  # The backup survived.

  resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  # It resumed past the kill point instead of starting over.
  assert "Step 2/36" not in resumed.stderr
  summary = json.load(open(tmp_path / "run" / "summary.json"))
  assert summary["global_steps"] == 36
