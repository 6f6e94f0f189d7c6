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
      "training loss: +0.1000, training minus validation accuracy: +0.1000. "
      "Still improving: val_loss went from 0.6000 to 0.5000 in the last "
      "epoch (2), its best, so training ended before validation stopped "
      "improving; more updates (--epochs, --min_steps) or a higher "
      "--learning_rate may help."
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
      "training loss: +0.0000. Still improving: val_loss went from 5.1000 "
      "to 5.0000 in the last epoch (2), its best, so training ended before "
      "validation stopped improving; more updates (--epochs, --min_steps) "
      "or a higher --learning_rate may help."
  )


def test_without_validation_overfitting_is_unknown():
  found = reporting.diagnose_overfitting(
      {"loss": [0.5]}, monitor="val_loss", best_epoch=None
  )
  assert found["overfitting"] is None
  assert found["still_improving"] is None
  assert "--validation_file" in found["message"]


# 20 Newsgroups with the recommended recipe at 5e-5: validation accuracy
# still rising in the last of 4 epochs, which kept it (its summary.json;
# README, "Measured").
_STILL_RISING = {
    "loss": [1.6616, 0.5849, 0.3438, 0.2447],
    "val_loss": [0.7560, 0.4930, 0.4029, 0.3838],
    "accuracy": [0.5625, 0.8549, 0.9209, 0.9505],
    "val_accuracy": [0.7933, 0.8625, 0.8900, 0.8988],
}


def test_a_run_whose_last_epoch_was_its_best_is_still_improving():
  found = reporting.diagnose_overfitting(
      _STILL_RISING, monitor="val_accuracy", best_epoch=4
  )
  assert found["overfitting"] is False
  assert found["still_improving"] is True
  assert (
      "Still improving: val_accuracy went from 0.8900 to 0.8988 in the last "
      "epoch (4)" in found["message"]
  )
  assert "--learning_rate" in found["message"]


def test_a_run_that_peaked_before_its_last_epoch_is_not_still_improving():
  history = dict(_STILL_RISING, val_accuracy=[0.7933, 0.8625, 0.8990, 0.8988])
  found = reporting.diagnose_overfitting(
      history, monitor="val_accuracy", best_epoch=3
  )
  assert found["still_improving"] is False
  assert "Still improving" not in found["message"]


def test_still_improving_needs_more_than_the_smallest_improvement():
  """A last-epoch gain of 0.0088 is improvement at min_delta 0.005, not at
  0.01, as early stopping would count it."""
  found = {
      min_delta: reporting.diagnose_overfitting(
          _STILL_RISING,
          monitor="val_accuracy",
          best_epoch=4,
          min_delta=min_delta,
      )["still_improving"]
      for min_delta in (0.005, 0.01)
  }
  assert found == {0.005: True, 0.01: False}


def test_still_improving_reads_losses_as_lower_is_better():
  """The same falling validation loss is improvement; a validation accuracy
  that fell in its last epoch is not."""
  loss = reporting.diagnose_overfitting(
      _STILL_RISING, monitor="val_loss", best_epoch=4
  )
  falling = dict(_STILL_RISING, val_accuracy=[0.8988, 0.8900, 0.8625, 0.7933])
  accuracy = reporting.diagnose_overfitting(
      falling, monitor="val_accuracy", best_epoch=4
  )
  assert (loss["still_improving"], accuracy["still_improving"]) == (True, False)


def test_an_overfitting_run_is_not_called_still_improving():
  """Validation accuracy can still creep up while validation loss rises
  and training loss falls: the verdict is overfitting, not more training."""
  history = dict(_STILL_RISING, val_loss=[0.7560, 0.4930, 0.5500, 0.6500])
  found = reporting.diagnose_overfitting(
      history, monitor="val_accuracy", best_epoch=4
  )
  assert found["overfitting"] is True
  assert found["still_improving"] is False
  assert "Still improving" not in found["message"]


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


def _confusion(labels, rows, split="validation"):
  return {
      split: {
          "confusion_matrix": {
              "labels": labels,
              "rows_true_columns_predicted": rows,
          }
      }
  }


# The 500 Rotten Tomatoes validation reviews of the few-example study: 205
# rotten, 295 fresh. Our defaults on 500 training examples answered "fresh"
# for every one (README, "Few training examples").
_ALWAYS_FRESH = _confusion(["rotten", "fresh"], [[0, 205], [0, 295]])


def test_answering_one_label_every_time_is_no_better_than_that_label():
  found = reporting.compare_with_most_frequent_label(_ALWAYS_FRESH)
  assert found["no_better"] is True
  assert found["most_frequent_label"] == found["most_predicted_label"]
  assert found["accuracy"] == found["most_frequent_share"] == 0.59
  assert found["most_predicted_share"] == 1.0
  assert found["message"].startswith(
      "Learned nothing yet: validation accuracy 0.5900 is no better than "
      "always answering the most frequent label 'fresh' (0.5900 of 500 "
      "validation examples, one standard error 0.0220); the kept model "
      "answers 'fresh' for 500 of them."
  )
  # The advice names the binary that acts on it: `evaluate` prints it too.
  assert "train --min_steps=1000" in found["message"]


def test_a_classifier_must_beat_the_most_frequent_label_by_a_standard_error():
  """0.5900 + 0.0220 = 0.6120: 0.6100 is within it, 0.6140 beyond it."""

  def accuracy_of(correct_rotten):
    rows = [[correct_rotten, 205 - correct_rotten], [40, 255]]
    found = reporting.compare_with_most_frequent_label(
        _confusion(["rotten", "fresh"], rows)
    )
    return found["accuracy"], found["no_better"]

  assert accuracy_of(50) == (0.61, True)
  assert accuracy_of(52) == (0.614, False)


def test_many_labels_beat_the_most_frequent_one_at_low_accuracy():
  """20 topics: 20% accuracy is poor, but above answering one topic (5%)."""
  rows = [[0] * 20 for _ in range(20)]
  for topic in range(20):
    rows[topic][topic] = 10
    rows[topic][(topic + 1) % 20] = 40
  found = reporting.compare_with_most_frequent_label(
      _confusion([f"topic{i}" for i in range(20)], rows)
  )
  assert (found["accuracy"], found["most_frequent_share"]) == (0.2, 0.05)
  assert found["no_better"] is False
  assert "message" not in found


def test_the_most_frequent_label_is_judged_on_validation_else_test():
  learned = _confusion(["rotten", "fresh"], [[190, 15], [20, 275]], "test")
  assert (
      reporting.compare_with_most_frequent_label({**learned, **_ALWAYS_FRESH})[
          "split"
      ]
      == "validation"
  )
  found = reporting.compare_with_most_frequent_label(learned)
  assert (found["split"], found["no_better"]) == ("test", False)
  # Regression and token tasks have no confusion matrix: nothing to judge.
  assert (
      reporting.compare_with_most_frequent_label(
          {"validation": {"pearson": 0.1}}
      )
      is None
  )
  assert reporting.compare_with_most_frequent_label({}) is None


def test_the_most_frequent_label_is_judged_on_the_split_asked_for():
  """The evaluate binary judges the file it scored, under its own name."""
  results = {
      **_confusion(["rotten", "fresh"], [[190, 15], [20, 275]]),
      **_confusion(["rotten", "fresh"], [[0, 205], [0, 295]], "holdout"),
  }
  found = reporting.compare_with_most_frequent_label(
      results, splits=["holdout"]
  )
  assert (found["split"], found["no_better"]) == ("holdout", True)
  assert found["message"].startswith("Learned nothing yet: holdout accuracy")
  assert (
      reporting.compare_with_most_frequent_label(results, splits=["test"])
      is None
  )


def test_the_message_names_the_label_the_model_answers_most():
  """A model that answers mostly the rarer label is below the most
  frequent one; the message says which label it answers."""
  found = reporting.compare_with_most_frequent_label(
      _confusion(["rotten", "fresh"], [[190, 15], [250, 45]])
  )
  assert found["no_better"] is True
  assert (found["most_frequent_label"], found["most_predicted_label"]) == (
      "fresh",
      "rotten",
  )
  assert found["most_predicted_share"] == 0.88
  assert "the kept model answers 'rotten' for 440 of them" in found["message"]
