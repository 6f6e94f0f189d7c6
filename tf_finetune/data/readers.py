"""Reading labelled text from CSV, TSV, JSONL files and TensorFlow Datasets.

Readers return plain Python lists: the data sets this toolkit fine-tunes on fit
in memory many times over, and having them in memory lets every error name the
file and line it came from and lets the label vocabulary be built up front.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Optional, Sequence

import numpy as np
from absl import logging

SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


@dataclasses.dataclass(frozen=True)
class Examples:
  """Texts and labels read from one source.

  Attributes:
    source: The file path or TFDS name/split, for messages.
    texts: The first (or only) text of each example.
    text_pairs: The second text of each example, or None for single texts.
    labels: Label strings, or None where the source has no labels.
    line_numbers: Where each example starts in the file (1-based), for
      messages; for TFDS, the example index.
    rows: The original records, kept so predictions can be written next to
      the input.
  """

  source: str
  texts: list[str]
  text_pairs: Optional[list[str]]
  labels: Optional[list[str]]
  line_numbers: list[int]
  rows: list[dict]

  def __len__(self) -> int:
    return len(self.texts)


def file_format(path: str, flag: str = "file") -> str:
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in SUFFIX_FORMATS:
    raise ValueError(
        f"{flag}={path!r} has an unknown extension {suffix!r}; "
        "expected .csv, .tsv or .jsonl."
    )
  return SUFFIX_FORMATS[suffix]


def read_records(
    path: str, flag: str
) -> tuple[list[dict], list[int], list[str]]:
  """Returns (records, line numbers, column names) of a CSV/TSV/JSONL file."""
  fmt = file_format(path, flag)
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} does not exist.")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise ValueError(
        f"{path}:{line}: the file is not valid UTF-8 (byte "
        f"0x{raw[e.start]:02x}); save it as UTF-8."
    ) from e
  if not content.strip():
    raise ValueError(f"{flag}={path!r} is empty.")
  if fmt == "jsonl":
    return _parse_jsonl(path, content)
  return _parse_delimited(path, content, "\t" if fmt == "tsv" else ",")


def _parse_jsonl(path, content):
  rows, lines, columns = [], [], {}
  for number, line in enumerate(content.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(
          f"{path}:{number}: not valid JSON ({e.msg} at column "
          f"{e.colno}); each line must be one JSON object."
      ) from e
    if not isinstance(record, dict):
      raise ValueError(
          f"{path}:{number}: expected a JSON object per line, "
          f"got {type(record).__name__}."
      )
    rows.append(record)
    lines.append(number)
    columns.update(dict.fromkeys(record))
  return rows, lines, list(columns)


def _parse_delimited(path, content, delimiter):
  reader = csv.reader(
      content.splitlines(keepends=True), delimiter=delimiter, strict=True
  )
  try:
    header = next(reader)
  except csv.Error as e:
    raise ValueError(f"{path}:1: unreadable header ({e}).") from e
  rows, lines = [], []
  try:
    for fields in reader:
      number = reader.line_num
      if not fields:
        continue
      if len(fields) != len(header):
        raise ValueError(
            f"{path}:{number}: expected {len(header)} fields "
            f"({', '.join(header)}) but found {len(fields)}; quote fields that "
            "contain the delimiter."
        )
      rows.append(dict(zip(header, fields)))
      lines.append(number)
  except csv.Error as e:
    raise ValueError(f"{path}:{reader.line_num}: unreadable row ({e}).") from e
  return rows, lines, header


def column_values(rows, lines, columns, name, path, flag, *, as_text):
  """The values of column `name` of rows read by `read_records`, checked:
  text (`as_text`) or a single label, as a string; errors name the flag,
  file and line."""
  if name not in columns:
    raise ValueError(
        f"{flag}={name!r} is not a column of {path}; columns are: "
        f"{', '.join(map(str, columns))}."
    )
  values = []
  for row, line in zip(rows, lines):
    value = row.get(name)
    if value is None:
      raise ValueError(f"{path}:{line}: the {flag}={name!r} value is missing.")
    if as_text and not isinstance(value, str):
      raise ValueError(
          f"{path}:{line}: the {flag}={name!r} value {value!r} is "
          "not a string."
      )
    if not as_text:
      if isinstance(value, (dict, list)):
        raise ValueError(
            f"{path}:{line}: the {flag}={name!r} value {value!r}"
            " is not a single label."
        )
      value = label_to_string(value)
    values.append(value)
  return values


def label_to_string(value) -> str:
  """Canonical string of a label: 1, 1.0 and "1" are the same label."""
  if isinstance(value, bool):
    return str(int(value))
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value).strip()


def _warn_on_empty_texts(texts, lines, path, column):
  empty = [line for text, line in zip(texts, lines) if not text.strip()]
  if empty:
    shown = ", ".join(map(str, empty[:5])) + (" ..." if len(empty) > 5 else "")
    logging.warning(
        "%s: %d example(s) have an empty %r text (lines %s); they "
        "are kept and read as [CLS] [SEP].",
        path,
        len(empty),
        column,
        shown,
    )


def read_file(
    path: str,
    *,
    text_column: str,
    text_pair_column: Optional[str],
    label_column: Optional[str],
    flag: str = "--train_file",
) -> Examples:
  """Reads a CSV, TSV or JSONL file.

  Args:
    path: The file; its extension selects the format.
    text_column: Column of the first text.
    text_pair_column: Column of the second text, or None.
    label_column: Column of the label, or None to read texts only.
    flag: The flag that named the file, used in error messages.

  Returns:
    The examples, in file order.

  Raises:
    ValueError: naming the file and line, for anything that cannot be read.
  """
  rows, lines, columns = read_records(path, flag)
  if not rows:
    raise ValueError(f"{flag}={path!r} has a header but no examples.")
  texts = column_values(
      rows, lines, columns, text_column, path, "--text_column", as_text=True
  )
  _warn_on_empty_texts(texts, lines, path, text_column)
  pairs = None
  if text_pair_column:
    pairs = column_values(
        rows,
        lines,
        columns,
        text_pair_column,
        path,
        "--text_pair_column",
        as_text=True,
    )
  labels = None
  if label_column:
    labels = column_values(
        rows,
        lines,
        columns,
        label_column,
        path,
        "--label_column",
        as_text=False,
    )
  return Examples(path, texts, pairs, labels, lines, rows)


def read_tfds(
    name: str,
    split: str,
    *,
    data_dir: Optional[str],
    text_column: str,
    text_pair_column: Optional[str],
    label_column: Optional[str],
) -> Examples:
  """Reads a TensorFlow Datasets split into memory.

  Class-label features are mapped to their names ("negative", "positive"), so
  the label vocabulary and predictions speak the data set's own words.
  """
  import tensorflow_datasets as tfds  # Heavy; only when TFDS is used.

  source = f"{name}[{split}]"
  dataset, info = tfds.load(
      name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False
  )
  features = info.features
  for flag, column in (
      ("--text_column", text_column),
      ("--text_pair_column", text_pair_column),
      ("--label_column", label_column),
  ):
    if column and column not in features:
      raise ValueError(
          f"{flag}={column!r} is not a feature of {name}; "
          f"features are: {', '.join(features.keys())}."
      )
  label_names = (
      getattr(features[label_column], "names", None) if label_column else None
  )
  texts, pairs, labels, rows = [], [] if text_pair_column else None, [], []
  for record in tfds.as_numpy(dataset):
    texts.append(record[text_column].decode("utf-8"))
    row = {text_column: texts[-1]}
    if pairs is not None:
      pairs.append(record[text_pair_column].decode("utf-8"))
      row[text_pair_column] = pairs[-1]
    if label_column:
      value = record[label_column]
      if isinstance(value, bytes):
        value = value.decode("utf-8")
      elif isinstance(value, np.floating):
        value = float(str(value))  # float32 3.8 -> 3.8, not 3.7999999523.
      else:
        value = int(value)
      if (
          isinstance(value, (int, float))
          and value < 0
          and (label_names is not None or name.startswith("glue/"))
      ):
        # GLUE test splits carry -1 (-1.0 for STS-B scores): no label.
        labels = None
        label_column = None
      elif label_names is not None and isinstance(value, int):
        value = label_names[value]
      if labels is not None:
        labels.append(label_to_string(value))
        row[label_column] = labels[-1]
    rows.append(row)
  if not texts:
    raise ValueError(f"--tfds_name={name!r} split {split!r} is empty.")
  return Examples(
      source, texts, pairs, labels or None, list(range(1, len(texts) + 1)), rows
  )


def check_labels_known(
    examples: Examples, label_vocab: Sequence[str], flag: str
) -> None:
  """Raises if `examples` holds a label the model was not trained on."""
  known = set(label_vocab)
  for label, line in zip(examples.labels or (), examples.line_numbers):
    if label not in known:
      raise ValueError(
          f"{examples.source}:{line}: label {label!r} (from {flag}) was never "
          f"seen in training; the model knows: {', '.join(label_vocab)}."
      )
