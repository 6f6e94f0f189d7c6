"""The label vocabulary: inferred from training data, saved, reused."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from tf_finetune import io_utils

if TYPE_CHECKING:
  from tf_finetune.data.readers import Examples

LABEL_VOCAB_FILENAME = "label_vocab.txt"


def infer_label_vocab(labels: Sequence[str], source: str) -> list[str]:
  """Sorted distinct labels; integers sort numerically ("2" before "10")."""
  distinct = set(labels)
  if len(distinct) < 2:
    raise ValueError(
        f"{source}: the label column holds a single class "
        f"({', '.join(sorted(distinct)) or 'none'}); classification needs at "
        "least two."
    )
  if all(_is_int(label) for label in distinct):
    return sorted(distinct, key=int)
  return sorted(distinct)


def _is_int(text: str) -> bool:
  try:
    int(text)
  except ValueError:
    return False
  return True


def write_label_vocab(label_vocab: Sequence[str], directory: str) -> str:
  for label in label_vocab:
    if "\n" in label or "\r" in label:
      raise ValueError(f"Label {label!r} contains a line break.")
  path = os.path.join(directory, LABEL_VOCAB_FILENAME)
  io_utils.write_text_atomically(
      path, "".join(f"{label}\n" for label in label_vocab)
  )
  return path


def read_label_vocab(directory: str) -> list[str]:
  path = os.path.join(directory, LABEL_VOCAB_FILENAME)
  if not os.path.isfile(path):
    raise ValueError(
        f"{directory} has no {LABEL_VOCAB_FILENAME}; is it the "
        "--model_dir of a finished training run?"
    )
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


def check_label_lists(
    examples: Examples,
    label_vocab: Sequence[str],
    flag: str,
    *,
    noun: str = "label",
) -> None:
  """Refuses an example whose list of labels (or tags) has an unknown one.

  Raises:
    ValueError: naming the file and line, the label and the flag.
  """
  known = set(label_vocab)
  for labels, line in zip(examples.labels or (), examples.line_numbers):
    unknown = [label for label in labels if label not in known]
    if unknown:
      raise ValueError(
          f"{examples.source}:{line}: {noun} {unknown[0]!r} (from {flag}) "
          f"was never seen in training; the model knows: "
          f"{', '.join(label_vocab)}."
      )
