import pytest

from tf_finetune import reporting


def test_rising_validation_loss_with_falling_training_loss_is_overfitting():
  history = {
      "loss": [0.7, 0.4, 0.2, 0.1],
      "val_loss": [0.6, 0.5, 0.55, 0.7],
      "accuracy": [0.6, 0.8, 0.9, 0.97],
      "val_accuracy": [0.7, 0.78, 0.77, 0.75],
  }
  found = reporting.diagnose_overfitting(
      history, monitor="val_loss", best_epoch=2
  )
  assert found["overfitting"] is True
  assert found["lowest_val_loss_epoch"] == 2
  assert found["kept_epoch"] == 2
  assert found["loss_gap"] == pytest.approx(0.1)  # 0.5 - 0.4
  assert found["accuracy_gap"] == pytest.approx(0.02)  # 0.8 - 0.78
  assert "epoch 2" in found["message"] and "0.7000" in found["message"]


def test_falling_validation_loss_is_not_overfitting():
  history = {"loss": [0.7, 0.4], "val_loss": [0.6, 0.5]}
  found = reporting.diagnose_overfitting(
      history, monitor="val_loss", best_epoch=2
  )
  assert found["overfitting"] is False
  assert found["message"].startswith("No sign of overfitting")


def test_gaps_have_the_signs_their_words_say():
  """Validation loss 0.5 against training 0.4, training accuracy 0.9
  against validation 0.8: both gaps +0.1, as the message says."""
  history = {
      "loss": [0.7, 0.4],
      "val_loss": [0.6, 0.5],
      "accuracy": [0.6, 0.9],
      "val_accuracy": [0.6, 0.8],
  }
  found = reporting.diagnose_overfitting(
      history, monitor="val_loss", best_epoch=2
  )
  assert found["loss_gap"] == pytest.approx(0.1)
  assert found["accuracy_gap"] == pytest.approx(0.1)
  assert found["message"] == (
      "No sign of overfitting: validation loss 0.5000 at the last epoch "
      "against its lowest 0.5000 (epoch 2); at epoch 2, validation minus "
      "training loss: +0.1000, training minus validation accuracy: +0.1000."
  )


def test_tasks_without_accuracy_get_a_message_without_it():
  history = {
      "loss": [5.2, 5.0],
      "val_loss": [5.1, 5.0],
      "token_accuracy": [0.2, 0.3],
      "val_token_accuracy": [0.2, 0.3],
  }
  found = reporting.diagnose_overfitting(
      history, monitor="val_loss", best_epoch=2
  )
  assert "accuracy_gap" not in found
  assert found["message"] == (
      "No sign of overfitting: validation loss 5.0000 at the last epoch "
      "against its lowest 5.0000 (epoch 2); at epoch 2, validation minus "
      "training loss: +0.0000."
  )


def test_without_validation_overfitting_is_unknown():
  found = reporting.diagnose_overfitting(
      {"loss": [0.5]}, monitor="val_loss", best_epoch=None
  )
  assert found["overfitting"] is None
  assert "--validation_file" in found["message"]


def test_curves_png(tmp_path):
  path = reporting.plot_curves(
      {
          "loss": [0.7, 0.4],
          "val_loss": [0.6, 0.5],
          "accuracy": [0.5, 0.8],
          "val_accuracy": [0.6, 0.7],
      },
      str(tmp_path / "curves.png"),
      best_epoch=2,
  )
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
