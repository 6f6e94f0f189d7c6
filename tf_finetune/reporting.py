"""Telling the user how training went: overfitting, still improving, no
better than the most frequent label, curves."""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

# Validation loss this much above its minimum (relative) counts as rising.
_RISE_TOLERANCE = 0.02


def monitor_mode(metric: str) -> str:
  """Which way `metric` improves: "min" for losses, "max" for the rest."""
  return "min" if metric.endswith("loss") else "max"


def diagnose_overfitting(
    history: dict[str, list[float]],
    *,
    monitor: str,
    best_epoch: Optional[int],
    min_delta: float = 0.0,
) -> dict:
  """Compares training and validation curves epoch by epoch.

  Args:
    history: Keras' `History.history` ("loss", "val_loss", "accuracy", ...).
    monitor: The validation metric early stopping watched.
    best_epoch: 1-based epoch whose weights were kept, if validated.
    min_delta: The smallest change of `monitor` that counts as improvement
      (--early_stopping_min_delta).

  Returns:
    "overfitting" (bool or None without validation data), "still_improving"
    (bool or None: the last epoch was the best by more than `min_delta`,
    the run not overfitting, so it ended before validation stopped
    improving), "message" (what to tell the user, for the log), and the
    gaps at the kept epoch, each positive when the model does better on its
    training data: "loss_gap", validation minus training loss, and
    "accuracy_gap", training minus validation accuracy.
  """
  train_loss = history.get("loss", [])
  val_loss = history.get("val_loss", [])
  if not val_loss:
    return {
        "overfitting": None,
        "still_improving": None,
        "message": "No validation data: overfitting cannot be judged; "
        "pass --validation_file.",
    }
  kept = (best_epoch or len(val_loss)) - 1
  lowest = min(range(len(val_loss)), key=val_loss.__getitem__)
  result = {
      "kept_epoch": kept + 1,
      "lowest_val_loss_epoch": lowest + 1,
      "loss_gap": round(val_loss[kept] - train_loss[kept], 4),
  }
  if "accuracy" in history and "val_accuracy" in history:
    result["accuracy_gap"] = round(
        history["accuracy"][kept] - history["val_accuracy"][kept], 4
    )
  rising = (
      val_loss[-1] > val_loss[lowest] * (1 + _RISE_TOLERANCE)
      and lowest < len(val_loss) - 1
  )
  falling = train_loss[-1] < train_loss[lowest]
  result["overfitting"] = bool(rising and falling)
  last_gain = _last_epoch_gain(history.get(monitor, []), monitor, min_delta)
  result["still_improving"] = not result["overfitting"] and bool(last_gain)
  if result["overfitting"]:
    result["message"] = (
        f"Overfitting: validation loss was lowest at epoch {lowest + 1} "
        f"({val_loss[lowest]:.4f}) and rose to {val_loss[-1]:.4f} by epoch "
        f"{len(val_loss)} while training loss fell from "
        f"{train_loss[lowest]:.4f} to {train_loss[-1]:.4f}; the weights of "
        f"epoch {kept + 1} (best {monitor}) are kept. More regularization "
        "(--l2_sp, --dropout, --label_smoothing) or fewer epochs would help."
    )
  else:
    result["message"] = (
        f"No sign of overfitting: validation loss {val_loss[-1]:.4f} at the "
        f"last epoch against its lowest {val_loss[lowest]:.4f} (epoch "
        f"{lowest + 1}); at epoch {kept + 1}, validation minus training "
        f"loss: {result['loss_gap']:+.4f}"
    )
    if "accuracy_gap" in result:
      result["message"] += (
          f", training minus validation accuracy: "
          f"{result['accuracy_gap']:+.4f}"
      )
    result["message"] += "."
  if result["still_improving"]:
    before, after = last_gain
    result["message"] += (
        f" Still improving: {monitor} went from {before:.4f} to {after:.4f} "
        f"in the last epoch ({len(val_loss)}), its best, so training ended "
        "before validation stopped improving; more updates (--epochs, "
        "--min_steps) or a higher --learning_rate may help."
    )
  return result


def _last_epoch_gain(
    values: list[float], monitor: str, min_delta: float
) -> Optional[tuple[float, float]]:
  """(the best before the last epoch, the last) when the last epoch beat
  every earlier one by more than `min_delta`, else None."""
  if len(values) < 2:
    return None
  sign = -1.0 if monitor_mode(monitor) == "min" else 1.0
  before = max(values[:-1], key=lambda value: sign * value)
  if sign * (values[-1] - before) <= abs(min_delta):
    return None
  return before, values[-1]


def compare_with_most_frequent_label(
    eval_results: dict[str, dict],
    splits: Sequence[str] = ("validation", "test"),
) -> Optional[dict]:
  """Whether a classifier did better than always answering one label.

  Judged on the first of `splits` that the results have (by default the
  validation split, else the test split) of a single-label
  classification run: the kept model's accuracy against the share of the
  split's most frequent label, the accuracy of a model that answers that
  label every time. A run that is not above it by more than one standard
  error of that share on the split's examples, sqrt(p (1 - p) / n), has
  learned nothing yet that the split can see: typically too few updates
  (on 500 examples, 2 epochs are 32 updates, often still in the warmup).

  Args:
    eval_results: Split name -> the task's metrics (classification metrics
      carry a confusion matrix).
    splits: The split names to judge by, the first present taken.

  Returns:
    None without a classification confusion matrix on any of `splits`;
    else "split", "accuracy", "most_frequent_label", "most_frequent_share",
    "standard_error", "most_predicted_label", "most_predicted_share",
    "no_better" (bool) and, when no better, "message" for the log.
  """
  for split in splits:
    confusion = (eval_results.get(split) or {}).get("confusion_matrix")
    if confusion:
      break
  else:
    return None
  labels = confusion["labels"]
  rows = confusion["rows_true_columns_predicted"]
  total = sum(map(sum, rows))
  if not total:
    return None
  actual = [sum(row) for row in rows]
  predicted = [sum(column) for column in zip(*rows)]
  correct = sum(rows[i][i] for i in range(len(rows)))
  frequent = max(range(len(labels)), key=actual.__getitem__)
  answered = max(range(len(labels)), key=predicted.__getitem__)
  share = actual[frequent] / total
  standard_error = math.sqrt(share * (1 - share) / total)
  accuracy = correct / total
  result = {
      "split": split,
      "accuracy": round(accuracy, 4),
      "most_frequent_label": labels[frequent],
      "most_frequent_share": round(share, 4),
      "standard_error": round(standard_error, 4),
      "most_predicted_label": labels[answered],
      "most_predicted_share": round(predicted[answered] / total, 4),
      "no_better": accuracy <= share + standard_error,
  }
  if result["no_better"]:
    result["message"] = (
        f"Learned nothing yet: {split} accuracy {accuracy:.4f} is no better "
        f"than always answering the most frequent label "
        f"'{labels[frequent]}' ({share:.4f} of {total:,} {split} examples, "
        f"one standard error {standard_error:.4f}); the kept model answers "
        f"'{labels[answered]}' for {predicted[answered]:,} of them. Training "
        "again with more updates (train --min_steps=1000, or "
        "--recipe=recommended) or a higher --learning_rate usually gets a "
        "run past this."
    )
  return result


def plot_curves(
    history: dict[str, list[float]],
    path: str,
    *,
    best_epoch: Optional[int] = None,
) -> Optional[str]:
  """Writes a PNG of training and validation curves; returns its path.

  One panel per metric that has both a training and a validation curve
  (loss, accuracy, macro-F1, and the other tasks' Pearson, micro-F1, token
  and answer-position accuracy),
  epochs on the x axis, the kept epoch marked.
  """
  names = [
      name
      for name in (
          "loss",
          "accuracy",
          "macro_f1",
          "pearson",
          "micro_f1",
          "token_accuracy",
          "position_accuracy",
      )
      if name in history and f"val_{name}" in history
  ]
  if not names:
    names = [name for name in ("loss",) if name in history]
  if not names:
    return None
  plt = _pyplot()
  figure, axes = plt.subplots(
      1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False
  )
  for axis, name in zip(axes[0], names):
    epochs = range(1, len(history[name]) + 1)
    axis.plot(epochs, history[name], marker="o", label="training")
    if f"val_{name}" in history:
      axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
    if best_epoch:
      axis.axvline(
          best_epoch,
          color="gray",
          linestyle="--",
          label=f"kept (epoch {best_epoch})",
      )
    axis.set_xlabel("epoch")
    axis.set_title(name)
    axis.legend()
  return _save_figure(figure, path)


def plot_learning_rate_range(
    learning_rates: list[float],
    losses: list[float],
    path: str,
    *,
    suggestion: Optional[float],
) -> str:
  """Writes the range test's loss-against-learning-rate PNG (log x axis)."""
  plt = _pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  axis.plot(learning_rates, losses)
  axis.set_xscale("log")
  axis.set_xlabel("learning rate")
  axis.set_ylabel("training loss (smoothed)")
  if suggestion:
    axis.axvline(
        suggestion,
        color="red",
        linestyle="--",
        label=f"suggested {suggestion:.2g}",
    )
    axis.legend()
  return _save_figure(figure, path)


def _pyplot():
  import matplotlib  # Local: only runs that plot pay for the import.

  matplotlib.use("Agg")
  from matplotlib import pyplot

  return pyplot


def _save_figure(figure, path: str) -> str:
  """Saves `figure` as PNG via a temporary file and a rename."""
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  staging = os.path.join(
      os.path.dirname(os.path.abspath(path)),
      f".{os.path.basename(path)}.tmp.png",
  )
  figure.savefig(staging, dpi=80)
  _pyplot().close(figure)
  os.replace(staging, path)
  return path
