import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import (
    final_weights,
    kill_when_logged,
    make_sentiment_rows,
    run_binary,
    write_rows,
)
from tf_finetune import artifacts, callbacks, config as config_lib, training
from tf_finetune import train as train_binary
from tf_finetune.data import readers


def _config(model_dir, tiny_bert_dir, files, **train):
  options = dict(
      epochs=3,
      learning_rate=3e-3,
      warmup_ratio=0.1,
      early_stopping_patience=0,
      log_every_steps=5,
      export=False,
      precision="fp32",
  )
  options.update(train)
  return config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(
          train_file=files["train"],
          validation_file=files.get("validation"),
          max_seq_length=32,
          batch_size=16,
      ),
      model=config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean"),
      train=config_lib.TrainConfig(**options),
  )


def test_mirrored_strategy_on_two_logical_cpus_trains_like_one_device(
    tmp_path, tiny_bert_dir, sentiment_files
):
  """2 replicas x 16 give the run of one device x 32: the same batches, the
  same losses and metrics (reported once, not summed over replicas)."""
  assert len(tf.config.list_logical_devices("CPU")) == 2

  def run(name, batch_size, distribution):
    config = _config(
        tmp_path / name,
        tiny_bert_dir,
        sentiment_files,
        epochs=2,
        distribution=distribution,
    )
    return training.train(
        dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, batch_size=batch_size),
            # No dropout: each replica would draw its own masks.
            model=dataclasses.replace(config.model, dropout=0.0),
        )
    )

  mirrored = run("mirrored", 16, "mirrored")
  assert mirrored.replicas == 2
  assert mirrored.global_batch_size == 32  # 16 per replica x 2 replicas.
  single = run("single", 32, "one_device")
  assert single.replicas == 1 and single.global_batch_size == 32
  assert mirrored.steps_per_epoch == single.steps_per_epoch
  for name in ("loss", "val_loss", "accuracy", "val_accuracy", "macro_f1"):
    assert mirrored.history[name] == pytest.approx(
        single.history[name], rel=1e-3, abs=1e-4
    ), name
  assert mirrored.history["loss"][-1] < mirrored.history["loss"][0]


def test_early_stopping_stops_and_restores_the_best_weights(
    tmp_path, tiny_bert_dir, sentiment_files
):
  # Validation labels are the opposite of the training labels: the better
  # the model learns, the worse validation gets, so training must stop and
  # go back to an early epoch.
  flipped = [
      dict(row, label="negative" if row["label"] == "positive" else "positive")
      for row in make_sentiment_rows(64, seed=2)
  ]
  files = dict(
      sentiment_files,
      validation=write_rows(str(tmp_path / "flipped.csv"), flipped),
  )
  model_dir = tmp_path / "run"
  summary = training.train(
      _config(
          model_dir,
          tiny_bert_dir,
          files,
          epochs=10,
          early_stopping_patience=2,
          early_stopping_metric="val_loss",
      )
  )
  val_loss = summary.history["val_loss"]
  assert summary.stop_reason == "early_stopping"
  assert summary.epochs_run < 10
  assert summary.best_epoch == int(np.argmin(val_loss)) + 1
  assert summary.best_epoch < summary.epochs_run
  # Validation loss rose while training loss fell: the summary says so.
  assert summary.overfitting["overfitting"] is True
  assert summary.overfitting["message"].startswith("Overfitting:")
  assert summary.early_stopping_fired is True
  # The weights kept are the best epoch's: evaluating them reproduces it.
  results = json.load(open(model_dir / "eval_results.json"))
  assert results["validation"]["loss"] == pytest.approx(min(val_loss), rel=1e-3)
  # Validation chose when to stop and which epoch to keep: its metrics are
  # selection metrics.
  assert (
      results["selection"]
      == summary.selection
      == {
          "kept_epoch": "validation",
          "stopping_epoch": "validation",
          "validation_metrics": "selection",
      }
  )
  best = tf.train.load_checkpoint(str(model_dir / "checkpoints/best/weights"))
  final = tf.train.load_checkpoint(str(model_dir / "checkpoints/final/weights"))
  kernels = [
      k
      for k in best.get_variable_to_shape_map()
      if "head" in k and "kernel" in k and "OPTIMIZER" not in k
  ]
  assert kernels
  for key in kernels:
    np.testing.assert_array_equal(best.get_tensor(key), final.get_tensor(key))


def test_last_epoch_is_kept_without_restore_best_weights(
    tmp_path, tiny_bert_dir, sentiment_files
):
  model_dir = tmp_path / "run"
  summary = training.train(
      _config(
          model_dir,
          tiny_bert_dir,
          sentiment_files,
          epochs=2,
          restore_best_weights=False,
          early_stopping_metric="val_loss",
      )
  )
  assert summary.kept_epoch == 2
  results = json.load(open(model_dir / "eval_results.json"))
  # Nothing was chosen on validation: its metrics are held out too.
  assert results["selection"] == {
      "kept_epoch": "last epoch",
      "validation_metrics": "held out",
  }
  assert results["validation"]["loss"] == pytest.approx(
      summary.history["val_loss"][-1], rel=1e-3
  )
  # Validation chose the last epoch: its weights are written once, and
  # checkpoints/final refers to them (the evaluation above loaded them).
  assert summary.best_epoch == 2
  assert os.readlink(model_dir / "checkpoints/final") == "best"
  # A kept checkpoint holds the weights only: Adam's two slots per weight
  # would make it about 3x.
  weights = artifacts.load_trained(str(model_dir)).model.weights
  weight_bytes = sum(w.numpy().nbytes for w in weights)
  data = model_dir / "checkpoints/best/weights.data-00000-of-00001"
  assert weight_bytes <= os.path.getsize(data) < 1.05 * weight_bytes
  assert not os.path.exists(model_dir / "backup")


def test_without_restore_best_weights_final_keeps_the_last_epoch(
    tmp_path, tiny_bert_dir, sentiment_files
):
  """The best epoch is not the last: checkpoints/final is its own copy of
  the last epoch's weights (no optimizer state), not a link to best."""
  flipped = [
      dict(row, label="negative" if row["label"] == "positive" else "positive")
      for row in make_sentiment_rows(64, seed=2)
  ]
  files = dict(
      sentiment_files,
      validation=write_rows(str(tmp_path / "flipped.csv"), flipped),
  )
  model_dir = tmp_path / "run"
  summary = training.train(
      _config(
          model_dir,
          tiny_bert_dir,
          files,
          epochs=3,
          restore_best_weights=False,
          early_stopping_metric="val_loss",
      )
  )
  assert summary.best_epoch < 3
  final = model_dir / "checkpoints/final"
  assert final.is_dir() and not final.is_symlink()
  results = json.load(open(model_dir / "eval_results.json"))
  assert results["validation"]["loss"] == pytest.approx(
      summary.history["val_loss"][-1], rel=1e-3
  )
  sizes = [
      os.path.getsize(
          model_dir / f"checkpoints/{name}/weights.data-00000-of-00001"
      )
      for name in ("best", "final")
  ]
  assert sizes[0] == sizes[1]
  names = tf.train.load_checkpoint(
      str(final / "weights")
  ).get_variable_to_shape_map()
  assert not [name for name in names if "optimizer" in name]


def test_non_finite_loss_stops_with_step_and_learning_rate():
  model = tf_keras.Sequential([tf_keras.layers.Dense(1)])
  model.compile(optimizer=tf_keras.optimizers.SGD(0.01), loss="mse")
  guard = callbacks.StopOnNonFiniteLoss()
  x = np.ones((8, 2), np.float32)
  y = np.ones((8, 1), np.float32)
  y[4:] = np.nan  # The second batch of 4 has a NaN target.
  history = model.fit(
      x, y, batch_size=4, epochs=3, callbacks=[guard], shuffle=False, verbose=0
  )
  assert len(history.history["loss"]) == 1  # Stopped in the first epoch.
  assert "at step 2 (learning rate 0.01)" in guard.message
  assert "--learning_rate" in guard.message


def test_tfds_source_maps_class_labels_to_names():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=12):
    examples = readers.read_tfds(
        "glue/sst2",
        "train",
        data_dir=None,
        text_column="sentence",
        text_pair_column=None,
        label_column="label",
    )
  assert len(examples) == 12
  assert all(isinstance(text, str) for text in examples.texts)
  assert set(examples.labels) <= {"negative", "positive"}


def test_tfds_feature_names_are_checked():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(
        ValueError,
        match=r"--text_column='text' is not a "
        r"feature of glue/sst2; features are: .*sentence",
    ):
      readers.read_tfds(
          "glue/sst2",
          "train",
          data_dir=None,
          text_column="text",
          text_pair_column=None,
          label_column="label",
      )


def test_tfds_training_run(tmp_path, tiny_bert_dir):
  import tensorflow_datasets as tfds

  config = config_lib.RunConfig(
      model_dir=str(tmp_path / "run"),
      data=config_lib.DataConfig(
          tfds_name="glue/sst2",
          text_column="sentence",
          max_seq_length=32,
          batch_size=8,
      ),
      model=config_lib.ModelConfig(model=tiny_bert_dir),
      train=config_lib.TrainConfig(epochs=1, export=False),
  )
  with tfds.testing.mock_data(num_examples=24):
    summary = training.train(config)
  assert summary.epochs_run == 1
  assert "validation" in summary.eval_results


def test_precision_policy_is_restored_after_a_run(
    tmp_path, tiny_bert_dir, sentiment_files
):
  summary = training.train(
      _config(
          tmp_path / "run",
          tiny_bert_dir,
          sentiment_files,
          epochs=1,
          precision="bf16",
      )
  )
  assert summary.precision == "bf16"
  assert tf_keras.mixed_precision.global_policy().name == "float32"


def _train_command(tiny_bert_dir, sentiment_files, model_dir, *extra):
  return [
      sys.executable,
      "-m",
      "tf_finetune.train",
      f"--model={tiny_bert_dir}",
      f"--train_file={sentiment_files['train']}",
      f"--validation_file={sentiment_files['validation']}",
      f"--model_dir={model_dir}",
      "--max_seq_length=32",
      "--batch_size=16",
      "--epochs=3",
      "--learning_rate=3e-3",
      "--pooling=mean",
      "--early_stopping_patience=0",
      "--log_every_steps=1",
      "--precision=fp32",
      *extra,
  ]


def test_killed_run_resumes_from_its_backup(
    tmp_path, tiny_bert_dir, sentiment_files, caplog, capsys
):
  """SIGKILL mid-epoch, rerun the same command: it goes on with the batches
  it would have trained on and ends with the weights of an uninterrupted
  run.

  No dropout: the masks are drawn from the random state of the process,
  which a resumed process starts afresh (the tiny BERT has none inside).
  """
  model_dir = tmp_path / "run"
  args = _train_command(
      tiny_bert_dir,
      sentiment_files,
      model_dir,
      "--save_every_steps=2",
      "--dropout=0",
      "--noexport",
  )
  # Second epoch: 192 examples / 16 = 12 steps per epoch; backed up after
  # step 16, the fourth of the second epoch.
  kill_when_logged(args, "Step 17/36")
  assert os.listdir(model_dir / "backup")  # The backup survived.

  # Another learning rate would continue this run's state with other
  # settings: refused, naming the change, before anything is touched.
  backup_files = sorted(os.listdir(model_dir / "backup" / "chief"))
  assert run_binary(train_binary, args[3:] + ["--learning_rate=1e-3"]) == 2
  captured = capsys.readouterr().err.strip().splitlines()[-1]
  assert captured == (
      "train: error: --learning_rate changed from 0.003 to 0.001 since the "
      f"run in {model_dir} was interrupted; pass --overwrite_model_dir to "
      "start fresh or choose a new --model_dir."
  )
  assert sorted(os.listdir(model_dir / "backup" / "chief")) == backup_files

  # The same command again (in this process, to save starting Python).
  caplog.set_level("INFO")
  assert run_binary(train_binary, args[3:]) == 0
  # It resumed past the kill point instead of starting over.
  assert "Resuming from the backup in epoch 2 after 4 of its 12 steps" in (
      caplog.text
  )
  assert "Step 2/36" not in caplog.text
  assert "Step 36/36" in caplog.text
  summary = json.load(open(model_dir / "summary.json"))
  assert summary["global_steps"] == 36
  # The epochs before the kill are remembered: three in all, and the best
  # epoch is the best of all three.
  history = summary["history"]
  assert summary["epochs_run"] == 3 and len(history["val_accuracy"]) == 3
  assert summary["best_metric"]["val_accuracy"] == max(history["val_accuracy"])
  assert summary["best_epoch"] == int(np.argmax(history["val_accuracy"])) + 1

  config = _config(tmp_path / "uninterrupted", tiny_bert_dir, sentiment_files)
  uninterrupted = training.train(
      dataclasses.replace(
          config, model=dataclasses.replace(config.model, dropout=0.0)
      )
  )
  assert uninterrupted.global_steps == 36
  assert uninterrupted.eval_results["validation"]["accuracy"] > 0.8
  # Each epoch ends with the same validation results (epoch 2's training
  # loss differs: the resumed process averaged only its last 8 steps).
  for name in ("val_loss", "val_accuracy"):
    np.testing.assert_allclose(
        history[name], uninterrupted.history[name], rtol=1e-5, err_msg=name
    )
  # And the same weights: the same batches in the same order.
  expected = final_weights(tmp_path / "uninterrupted")
  got = final_weights(model_dir)
  assert len(expected) > 20 and got.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)


def test_run_killed_after_training_resumes_at_evaluation(
    tmp_path, tiny_bert_dir, sentiment_files, caplog
):
  """Killed while evaluating or exporting (the backup already deleted): the
  same command evaluates and exports the trained weights, no retraining."""
  model_dir = tmp_path / "run"
  args = _train_command(tiny_bert_dir, sentiment_files, model_dir, "--epochs=1")
  # The validation results are logged after evaluation, before the export.
  kill_when_logged(args, "validation: accuracy")
  finished = json.load(open(model_dir / "training_finished.json"))
  assert finished["global_steps"] == 12

  # The same command again (in this process, to save starting Python).
  caplog.set_level("INFO")
  assert run_binary(train_binary, args[3:]) == 0
  assert "Training already finished" in caplog.text
  assert "Step 1/12" not in caplog.text and "Epoch 1:" not in caplog.text
  summary = json.load(open(model_dir / "summary.json"))
  assert summary["global_steps"] == 12
  assert summary["weights_fingerprint"] == finished["weights_fingerprint"]
  versions = [
      name for name in os.listdir(model_dir / "export") if name.isdigit()
  ]
  assert versions == ["1"]

  # Run again: still nothing retrained, and the export is not repeated.
  caplog.clear()
  assert run_binary(train_binary, args[3:]) == 0
  assert "Epoch 1:" not in caplog.text
  assert "already exported" in caplog.text
  assert [
      name for name in os.listdir(model_dir / "export") if name.isdigit()
  ] == ["1"]


def _finished(model_dir):
  return json.load(open(model_dir / "training_finished.json"))


def test_a_rerun_with_other_data_or_settings_is_refused(
    tmp_path, tiny_bert_dir, caplog
):
  """train.csv regenerated at the same path, or another learning rate, after
  a finished run: refused in one line; --overwrite_model_dir trains anew;
  a change of what only outputs use reuses the weights."""
  model_dir = tmp_path / "run"
  train_file = write_rows(
      str(tmp_path / "train.csv"), make_sentiment_rows(64, seed=1)
  )
  config = _config(model_dir, tiny_bert_dir, {"train": train_file}, epochs=1)
  first = training.train(config)
  assert first.global_steps == 4  # 64 examples / 16.

  # Another log frequency, output files elsewhere: the same run.
  caplog.set_level("INFO")
  same = training.train(
      dataclasses.replace(
          config,
          train=dataclasses.replace(config.train, log_every_steps=1),
          export_dir=str(tmp_path / "exports"),
      )
  )
  assert "Training already finished" in caplog.text
  assert same.weights_fingerprint == first.weights_fingerprint

  with pytest.raises(ValueError) as refused:
    training.train(
        dataclasses.replace(
            config,
            train=dataclasses.replace(config.train, learning_rate=1e-3),
        )
    )
  assert str(refused.value) == (
      "--learning_rate changed from 0.003 to 0.001 since the run in "
      f"{model_dir} finished; pass --overwrite_model_dir to start fresh or "
      "choose a new --model_dir."
  )

  recorded = _finished(model_dir)["fingerprint"]["data"]["--train_file"]
  assert recorded["bytes"] == os.path.getsize(train_file)
  write_rows(train_file, make_sentiment_rows(64, seed=5))  # Regenerated.
  with pytest.raises(
      ValueError,
      match=rf"^--train_file='{train_file}' changed \({recorded['bytes']} "
      rf"bytes, SHA-256 {recorded['sha256'][:12]}\.\.\. then; \d+ bytes, "
      r"SHA-256 [0-9a-f]{12}\.\.\. now\) since the run in .* finished; "
      r"pass --overwrite_model_dir to start fresh or choose a new "
      r"--model_dir\.$",
  ):
    training.train(config)
  assert (
      _finished(model_dir)["weights_fingerprint"] == first.weights_fingerprint
  )

  caplog.clear()
  fresh = training.train(dataclasses.replace(config, overwrite_model_dir=True))
  assert "Training already finished" not in caplog.text
  assert fresh.global_steps == 4
  assert fresh.weights_fingerprint != first.weights_fingerprint
  assert (
      _finished(model_dir)["fingerprint"]["data"]["--train_file"]["sha256"]
      != recorded["sha256"]
  )
  assert not os.path.exists(model_dir / "backup")
  # The new data is now the run's: the same command reuses it, and
  # --overwrite_model_dir trains it again.
  assert training.train(config).weights_fingerprint == (
      fresh.weights_fingerprint
  )
  caplog.clear()
  training.train(dataclasses.replace(config, overwrite_model_dir=True))
  assert "Training already finished" not in caplog.text
  assert "Epoch 1:" in caplog.text


def _tiny_model():
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
  model.compile(optimizer=tf_keras.optimizers.SGD(0.01), loss="mse")
  return model


def test_best_epoch_survives_a_resume(tmp_path):
  directory = str(tmp_path / "best")
  model = _tiny_model()
  first = callbacks.BestWeightsCheckpoint(directory, "val_accuracy", "max")
  first.set_model(model)
  first.on_epoch_begin(0)
  first.on_epoch_end(0, {"val_accuracy": 0.9, "loss": 0.5})
  saved = model.get_weights()
  model.set_weights([w + 1.0 for w in saved])

  # The process is killed; a new one resumes at the third epoch, which is
  # worse than the first: the first stays the best, its weights stay.
  resumed = callbacks.BestWeightsCheckpoint(directory, "val_accuracy", "max")
  resumed.set_model(model)
  resumed.on_epoch_begin(2)
  assert (resumed.best_epoch, resumed.best) == (1, 0.9)
  resumed.on_epoch_end(2, {"val_accuracy": 0.8, "loss": 0.4})
  assert resumed.best_epoch == 1
  restored = _tiny_model()
  restored.load_weights(callbacks.weights_path(directory))
  for got, want in zip(restored.get_weights(), saved):
    np.testing.assert_array_equal(got, want)

  # A fresh run in the same directory does not inherit the record.
  fresh = callbacks.BestWeightsCheckpoint(directory, "val_accuracy", "max")
  fresh.set_model(model)
  fresh.on_epoch_begin(0)
  assert fresh.best is None
  fresh.on_epoch_end(0, {"val_accuracy": 0.5, "loss": 0.4})
  assert fresh.best_epoch == 1 and fresh.best == 0.5


def test_non_finite_loss_keeps_the_last_good_backup(tmp_path):
  """Keras would back up the NaN weights and delete the backup; ours keeps
  the state of the last good step."""
  backup_dir = str(tmp_path / "backup")
  x = np.ones((16, 2), np.float32)
  y = np.ones((16, 1), np.float32)
  y[12:] = np.nan  # The fourth batch of 4 has a NaN target.
  model = _tiny_model()
  backup = callbacks.BackupAndRestore(backup_dir, save_freq=1)
  guard = callbacks.StopOnNonFiniteLoss()
  model.fit(
      x,
      y,
      batch_size=4,
      epochs=2,
      callbacks=[guard, backup],
      shuffle=False,
      verbose=0,
  )
  assert "at step 4" in guard.message
  assert backup.kept_after_non_finite_loss
  assert not np.isfinite(model.get_weights()[0]).all()

  # The backup holds the state after the last good step: three steps,
  # finite weights.
  checkpoint = tf.train.load_checkpoint(
      tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  )
  names = checkpoint.get_variable_to_shape_map()
  steps = [name for name in names if "optimizer/_iterations" in name]
  kernels = [
      name
      for name in names
      if name.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE")
  ]
  assert steps and kernels, sorted(names)
  assert checkpoint.get_tensor(steps[0]) == 3
  assert all(np.isfinite(checkpoint.get_tensor(name)).all() for name in kernels)


class _KilledAtEpoch(tf_keras.callbacks.Callback):
  """Ends the process's `fit` at the start of an epoch, as a kill would."""

  def __init__(self, epoch):
    super().__init__()
    self._epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self._epoch:
      raise KeyboardInterrupt


def test_resumed_early_stopping_stops_at_the_epoch_of_an_uninterrupted_run(
    tmp_path,
):
  """Validation labels are flipped: validation loss rises every epoch from
  the first, so patience 3 stops after epoch 4. Killed after epoch 2 (one
  epoch without improvement), the resumed run must stop there too, not
  count its patience afresh."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 2)).astype(np.float32)
  y = (x[:, :1] + x[:, 1:] > 0).astype(np.float32)

  def run(directory, killed_at=None):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.layers.Dense(1, activation="sigmoid", input_shape=(2,))]
    )
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss="bce")
    history_path = str(directory / "history.json")
    early_stopping = callbacks.ResumableEarlyStopping(
        history_path, monitor="val_loss", mode="min", patience=3
    )
    run_callbacks = [
        callbacks.PersistentHistory(history_path),
        early_stopping,
        callbacks.BackupAndRestore(str(directory / "backup")),
    ]
    if killed_at is not None:
      run_callbacks.insert(0, _KilledAtEpoch(killed_at))
    model.fit(
        x,
        y,
        validation_data=(x, 1.0 - y),
        batch_size=16,
        epochs=10,
        shuffle=False,
        callbacks=run_callbacks,
        verbose=0,
    )
    return early_stopping, json.load(open(history_path))

  uninterrupted, history = run(tmp_path / "uninterrupted")
  assert np.all(np.diff(history["val_loss"]) > 0), history["val_loss"]
  assert uninterrupted.stopped_epoch == 3  # 0-based: after epoch 4.

  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / "resumed", killed_at=2)
  resumed, resumed_history = run(tmp_path / "resumed")
  assert (resumed.stopped_epoch, resumed.best_epoch) == (3, 0)
  assert resumed.best == pytest.approx(history["val_loss"][0])
  np.testing.assert_allclose(
      resumed_history["val_loss"], history["val_loss"], rtol=1e-6
  )


@pytest.mark.parametrize(
    "task, chosen, record_best, train, expected",
    [
        # A threshold tuned on validation makes it a selection split even
        # when the last epoch is kept.
        (
            dict(task="multi_label", label_delimiter="|"),
            {"threshold": 0.3, "tuned": True},
            None,
            dict(restore_best_weights=False),
            {"kept_epoch": "last epoch", "threshold": "validation"},
        ),
        (
            dict(task="multi_label", label_delimiter="|"),
            {"threshold": 0.5, "tuned": False},
            2,
            dict(restore_best_weights=False),
            {"kept_epoch": "last epoch", "threshold": "--threshold"},
        ),
        (
            dict(task="question_answering", allow_no_answer=True),
            {"null_score_threshold": -1.5},
            2,
            dict(early_stopping_patience=2),
            {
                "kept_epoch": "validation",
                "stopping_epoch": "validation",
                "no_answer_threshold": "validation",
            },
        ),
        (
            dict(
                task="question_answering",
                allow_no_answer=True,
                null_score_threshold=0.0,
            ),
            {"null_score_threshold": 0.0},
            None,
            {},
            {
                "kept_epoch": "last epoch",
                "no_answer_threshold": "--null_score_threshold",
            },
        ),
    ],
    ids=["tuned_threshold", "given_threshold", "qa_tuned", "qa_given"],
)
def test_selection_says_which_data_chose_what(
    task, chosen, record_best, train, expected
):
  from tf_finetune import tasks
  from tf_finetune.tasks.base import TaskState
  from tf_finetune.training.fit_record import FitRecord

  task_config = config_lib.task_config(**task)
  bound = tasks.get_task(task_config)
  bound.bind(TaskState(label_vocab=("a", "b"), chosen=chosen))
  config = config_lib.RunConfig(
      model_dir="m",
      data=config_lib.DataConfig(train_file="t.csv"),
      model=config_lib.ModelConfig(model="m"),
      train=config_lib.TrainConfig(**{"early_stopping_patience": 0, **train}),
      task=task_config,
  )
  record = FitRecord(
      history={},
      best_epoch=record_best,
      best_metric=None,
      stopped_early=False,
      global_steps=1,
      train_seconds=1.0,
      weights_fingerprint="",
  )
  selected_on_validation = "validation" in expected.values()
  assert training.selection(
      config, record, bound, ["validation", "test"]
  ) == dict(
      expected,
      validation_metrics="selection" if selected_on_validation else "held out",
      test_metrics="held out",
  )


def test_final_referring_to_a_missing_best_fails_in_one_line(tmp_path):
  checkpoints = tmp_path / "checkpoints"
  checkpoints.mkdir()
  os.symlink("best", checkpoints / "final")
  with pytest.raises(ValueError) as raised:
    artifacts.final_weights_dir(str(tmp_path))
  assert str(raised.value) == (
      f"--model_dir={str(tmp_path)!r}: checkpoints/final refers to "
      "checkpoints/best, which has no weights; train again."
  )
