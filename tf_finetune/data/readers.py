"""Reading labelled text from CSV, TSV, JSONL, TFRecord files and TensorFlow
Datasets.

Readers return plain Python lists: the data sets this toolkit fine-tunes on fit
in memory many times over, and having them in memory lets every error name the
file and line it came from and lets the label vocabulary be built up front.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import io
import json
import os
import re
from typing import Optional, Sequence

import numpy as np
from absl import logging

_UNIVERSAL_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_FEED = re.compile(r"\n")

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
    shard_of: Read from several shards: the shard of each example (its
      line number counts in that shard); None for one file.
  """

  source: str
  texts: list[str]
  text_pairs: Optional[list[str]]
  labels: Optional[list[str]]
  line_numbers: list[int]
  rows: list[dict]
  shard_of: Optional[list[str]] = None

  def __len__(self) -> int:
    return len(self.texts)

  def where(self, index: int) -> str:
    """ "file:line" of example `index`, for messages."""
    source = self.shard_of[index] if self.shard_of else self.source
    return f"{source}:{self.line_numbers[index]}"


def file_format(path: str, flag: str = "file") -> str:
  """ "csv", "tsv", "jsonl" or "tfrecord", from the name (a .gz ends it when
  the file is gzip-compressed)."""
  from tf_finetune.data import shards  # shards reads records with us.

  return shards.shard_format(path, flag)[0]


def read_text(path: str, flag: str, *, universal_newlines: bool = True) -> str:
  r"""The text of a UTF-8 file, its line breaks untouched.

  A byte-order mark at the start is dropped (editors on Windows write one).

  Args:
    path: The file.
    flag: The flag that named the file, for messages.
    universal_newlines: How the line of an undecodable byte is counted: True
      for CSV, TSV and JSON files, whose lines end at "\r\n", "\r" or "\n";
      False for plain text files, whose lines end at "\n" (see `text_lines`).

  Returns:
    The decoded text.

  Raises:
    ValueError: for a missing file, or one that is not UTF-8 (naming the line
      of the first undecodable byte).
  """
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} does not exist.")
  if path.lower().endswith(".gz"):
    with gzip.open(path, "rb") as f:
      raw = f.read()
  else:
    with open(path, "rb") as f:
      raw = f.read()
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    # Everything before the first bad byte decodes.
    before = raw[: e.start].decode("utf-8-sig")
    line, _ = position(
        before, len(before), universal_newlines=universal_newlines
    )
    raise ValueError(
        f"{path}:{line}: the file is not valid UTF-8 (byte "
        f"0x{raw[e.start]:02x}); save it as UTF-8."
    ) from e


def position(
    text: str, offset: int, *, universal_newlines: bool = True
) -> tuple[int, int]:
  r"""The 1-based (line, column) of `text[offset]`.

  Lines end at "\r\n", "\r" or "\n" (Python's universal newlines, which the
  csv module counts in `line_num`), or with `universal_newlines=False` at
  "\n" only. No other character ends a line: U+0085, U+2028, U+2029, \v, \f
  and \x1c-\x1e, where `str.splitlines()` also breaks, are text.
  """
  line_break = _UNIVERSAL_LINE_BREAK if universal_newlines else _LINE_FEED
  end = offset
  if (
      universal_newlines
      and offset > 0
      and text[offset - 1 : offset + 1] == "\r\n"
  ):
    end -= 1  # The "\n" of a "\r\n" is on the line that the "\r" ends.
  line, line_start = 1, 0
  for match in line_break.finditer(text, 0, max(end, 0)):
    line, line_start = line + 1, match.end()
  return line, offset - line_start + 1


def text_lines(text: str, *, universal_newlines: bool = False) -> list[str]:
  r"""The lines of a plain text file that holds one item per line.

  By default a line ends at "\n" only; a "\r" just before it is part of the
  line end (a Windows file). Every other character stays inside its line, a
  lone "\r" included: line i is what `sed -n '<i>p'` prints and the number of
  lines is what `wc -l` counts, so two line-aligned files stay aligned
  whatever their sentences hold. With `universal_newlines`, a lone "\r" ends
  a line too (files from classic Mac OS), as in `position`. Either way the
  last line needs no line end, and `str.splitlines()`'s other breaks (U+0085,
  U+2028, U+2029, \v, \f, \x1c-\x1e) are text.
  """
  line_break = _UNIVERSAL_LINE_BREAK if universal_newlines else _LINE_FEED
  lines = line_break.split(text)
  if lines[-1] == "":
    lines.pop()  # The last line break ends the last line.
  return [line.removesuffix("\r") for line in lines]


def read_records(
    path: str, flag: str
) -> tuple[list[dict], list[int], list[str]]:
  r"""Returns (records, line numbers, column names) of a CSV/TSV/JSONL file.

  CSV and TSV files are read as Python's `csv` module reads them (RFC 4180
  quoting; quoted fields may hold line breaks, delimiters and any other
  character), in its strict mode: text after a closing quote, or a quote that
  never closes, is an error rather than silently changed text. JSONL files
  hold one JSON value per "\n"-ended line, as JSON Lines defines them; blank
  lines are skipped. A record's line number is its first physical line,
  counting "\r\n", "\r" and "\n" as line breaks, as `csv` and editors do.
  """
  fmt = file_format(path, flag)
  if fmt == "tfrecord":
    from tf_finetune.data import shards

    return shards.tfrecord_rows(path, flag)
  content = read_text(path, flag)
  if not content.strip():
    raise ValueError(f"{flag}={path!r} is empty.")
  if fmt == "jsonl":
    return _parse_jsonl(path, content)
  return _parse_delimited(path, content, "\t" if fmt == "tsv" else ",")


def _parse_jsonl(path, content):
  rows, lines, columns = [], [], {}
  number = 1  # The physical line the next record starts on.
  for text in content.split("\n"):
    start = number
    # This record's line breaks: any lone "\r" (JSON whitespace) and the
    # "\n" that ends it, one "\r\n" with a "\r" before it.
    number += text.count("\r") + (0 if text.endswith("\r") else 1)
    if not text.strip():
      continue
    try:
      record = json.loads(text)
    except json.JSONDecodeError as e:
      line, column = position(text, e.pos)
      raise ValueError(
          f"{path}:{start + line - 1}: not valid JSON ({e.msg} at column "
          f"{column}); each line must be one JSON object."
      ) from e
    if not isinstance(record, dict):
      raise ValueError(
          f"{path}:{start}: expected a JSON object per line, "
          f"got {type(record).__name__}."
      )
    rows.append(record)
    lines.append(start)
    columns.update(dict.fromkeys(record))
  return rows, lines, list(columns)


# The most csv.field_size_limit() takes everywhere (a C long on Windows).
_MAX_FIELD_SIZE = 2**31 - 1


def _parse_delimited(path, content, delimiter):
  # No field is longer than the file, so this limit refuses nothing; csv's
  # default (131,072 characters) refuses long documents. The limit is
  # process-wide, so it is put back afterwards.
  default_limit = csv.field_size_limit()
  csv.field_size_limit(
      max(default_limit, min(len(content) + 1, _MAX_FIELD_SIZE))
  )
  try:
    return _parse_delimited_rows(path, content, delimiter)
  finally:
    csv.field_size_limit(default_limit)


def _parse_delimited_rows(path, content, delimiter):
  # newline="": lines end at "\r\n", "\r" or "\n" and keep their ends, as
  # csv needs them to read quoted line breaks; line_num counts these lines.
  reader = csv.reader(
      io.StringIO(content, newline=""), delimiter=delimiter, strict=True
  )
  rows, lines = [], []
  start = 1  # The physical line the record being read starts on.
  try:
    header = next(reader)
    start = reader.line_num + 1
    for fields in reader:
      if fields and len(fields) != len(header):
        raise ValueError(
            f"{path}:{start}: expected {len(header)} fields "
            f"({', '.join(header)}) but found {len(fields)}; quote fields that "
            "contain the delimiter."
        )
      if fields:
        rows.append(dict(zip(header, fields)))
        lines.append(start)
      start = reader.line_num + 1
  except csv.Error as e:
    what = "header" if start == 1 else "row"
    where = f" on line {reader.line_num}" if reader.line_num != start else ""
    reason = str(e).replace("\t", "\\t")  # The error stays on one line.
    raise ValueError(
        f"{path}:{start}: unreadable {what} ({reason}{where}); a quoted "
        "field ends with a quote followed by the delimiter or the line end, "
        'and a quote inside it is written twice ("").'
    ) from e
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
  for index, label in enumerate(examples.labels or ()):
    if label not in known:
      raise ValueError(
          f"{examples.where(index)}: label {label!r} (from {flag}) was never "
          f"seen in training; the model knows: {', '.join(label_vocab)}."
      )


def read_text_files(patterns: str, flag: str = "--text_files") -> Examples:
  """Reads plain UTF-8 text files holding one text per line.

  Lines end as `text_lines` reads them ("\\n", with or without a "\\r"
  before it); blank lines (only whitespace) are skipped, as the blank lines
  between documents of a corpus.

  Args:
    patterns: Comma-separated paths or glob patterns ("corpus/*.txt").
    flag: The flag that named them, for messages.

  Returns:
    Examples without labels, files in pattern order (each pattern's matches
    sorted), lines in file order; `source` names the files.

  Raises:
    ValueError: for a pattern that matches no file, a file that is not
      UTF-8 (naming its line), or files without text.
  """
  paths = []
  for pattern in (p.strip() for p in patterns.split(",")):
    if not pattern:
      continue
    if not glob.has_magic(pattern):
      paths.append(pattern)  # read_text names it if it does not exist.
      continue
    files = [
        path for path in sorted(glob.glob(pattern)) if os.path.isfile(path)
    ]
    if not files:
      raise ValueError(f"{flag}: {pattern!r} matches no file.")
    paths.extend(files)
  texts, lines, rows = [], [], []
  for path in dict.fromkeys(paths):
    for number, line in enumerate(
        text_lines(read_text(path, flag, universal_newlines=False)), 1
    ):
      if line.strip():
        texts.append(line)
        lines.append(number)
        rows.append({"file": path})
  if not texts:
    raise ValueError(
        f"{flag}={patterns!r} holds no text (only blank lines); expected "
        "one text per line."
    )
  source = paths[0] if len(paths) == 1 else f"{flag} ({len(paths)} files)"
  return Examples(source, texts, None, None, lines, rows)
