"""Prediction files: each input row with the task's prediction columns."""

from __future__ import annotations

import csv
import io
import json
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
  fmt = readers.file_format(path, "--output_file")
  if fmt == "tfrecord" or path.lower().endswith(".gz"):
    raise ValueError(
        f"--output_file={path!r}: predictions are written as plain .csv, "
        ".tsv or .jsonl files."
    )
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


def _cell(value) -> str:
  if isinstance(value, (list, tuple, dict)):
    return json.dumps(value, ensure_ascii=False)
  return value
