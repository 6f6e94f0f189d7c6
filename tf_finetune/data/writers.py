"""Prediction files: each input row with the task's prediction columns."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Sequence

from absl import logging

from tf_finetune import io_utils
from tf_finetune.data import readers

# CSV/TSV columns of a prediction's dict-valued field: "probabilities" ->
# probability_<label>.
_CSV_PREFIXES = {"probabilities": "probability_"}


def _flat_columns(prediction: dict) -> dict:
  """One CSV cell per value: dicts spread over columns, lists as JSON."""
  flat = {}
  for name, value in prediction.items():
    if isinstance(value, dict):
      prefix = _CSV_PREFIXES.get(name, f"{name}_")
      for key, item in value.items():
        flat[f"{prefix}{key}"] = (
            f"{item:.6f}" if isinstance(item, float) else item
        )
    elif isinstance(value, (list, tuple)):
      flat[name] = json.dumps(value, ensure_ascii=False)
    else:
      flat[name] = value
  return flat


def write_prediction_rows(
    path: str, examples: readers.Examples, predictions: Sequence[dict]
) -> None:
  """Writes each input row followed by its prediction's columns.

  JSONL records get the prediction's fields as they are (objects, lists);
  CSV/TSV get one column per value (`probability_<label>` for
  classification, lists as JSON text). The file is replaced atomically.
  """
  fmt = _output_format(path)
  out = io.StringIO()
  if fmt == "jsonl":
    for row, prediction in zip(examples.rows, predictions):
      out.write(json.dumps(dict(row, **prediction), ensure_ascii=False) + "\n")
  else:
    flat = [_flat_columns(prediction) for prediction in predictions]
    input_columns = list(examples.rows[0])
    columns = input_columns + [
        name for name in flat[0] if name not in input_columns
    ]
    writer = csv.writer(
        out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n"
    )
    writer.writerow(columns)
    for row, prediction in zip(examples.rows, flat):
      values = dict(row, **prediction)
      writer.writerow([_cell(values.get(c, "")) for c in columns])
  io_utils.write_text_atomically(path, out.getvalue())
  logging.info("Wrote %d predictions to %s.", len(predictions), path)


def _output_format(path: str) -> str:
  fmt = readers.file_format(path, "--output_file")
  if fmt == "tfrecord" or path.lower().endswith(".gz"):
    raise ValueError(
        f"--output_file={path!r}: predictions are written as plain .csv, "
        ".tsv or .jsonl files."
    )
  return fmt


class PredictionFileWriter:
  """Writes a prediction file a batch at a time, as `write_prediction_rows`
  writes it whole.

  Rows go to a temporary file next to `path` as they come; leaving the
  `with` block without an error renames it to `path`, with an error removes
  it, so `path` is whole or untouched. CSV/TSV columns are the first row's
  and its prediction's.
  """

  def __init__(self, path: str):
    self.path = path
    self.count = 0
    self._fmt = _output_format(path)
    self._columns = None
    self._file = None
    self._tmp_path = None

  def __enter__(self) -> PredictionFileWriter:
    directory = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(directory, exist_ok=True)
    fd, self._tmp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(self.path)}."
    )
    self._file = os.fdopen(fd, "w", encoding="utf-8", newline="")
    self._csv = csv.writer(
        self._file,
        delimiter="\t" if self._fmt == "tsv" else ",",
        lineterminator="\n",
    )
    return self

  def write(self, rows: Sequence[dict], predictions: Sequence[dict]) -> None:
    """Appends input rows, each with its prediction's columns."""
    for row, prediction in zip(rows, predictions):
      if self._fmt == "jsonl":
        self._file.write(
            json.dumps(dict(row, **prediction), ensure_ascii=False) + "\n"
        )
        continue
      flat = _flat_columns(prediction)
      if self._columns is None:
        self._columns = list(row) + [n for n in flat if n not in row]
        self._csv.writerow(self._columns)
      values = dict(row, **flat)
      self._csv.writerow([_cell(values.get(c, "")) for c in self._columns])
    self.count += len(rows)

  def __exit__(self, exc_type, exc, traceback) -> None:
    try:
      if exc_type is None:
        self._file.flush()
        os.fsync(self._file.fileno())
      self._file.close()
      if exc_type is None:
        os.replace(self._tmp_path, self.path)
        logging.info("Wrote %d predictions to %s.", self.count, self.path)
    finally:
      if os.path.exists(self._tmp_path):
        os.remove(self._tmp_path)


def _cell(value) -> str:
  if isinstance(value, (list, tuple, dict)):
    return json.dumps(value, ensure_ascii=False)
  return value
