"""Inputs of any size: shard lists, gzip and TFRecord files, read a record at
a time.

A split's file flag (--train_file, ...) names one file, a glob
(`train-*.csv.gz`) or a comma-separated list of files and globs; the shards
are read in sorted order. Each shard is CSV, TSV or JSONL, each optionally
gzip-compressed (`.gz`), or TFRecord (`.tfrecord`, `.tfrecord.gz`) of
`tf.train.Example`s whose features are named by --text_column,
--text_pair_column and --label_column: the texts a bytes feature of one
UTF-8 value, the label one bytes or int64 value.

`iter_records` reads a shard a record at a time (memory does not grow with
its size), with the same strict CSV and JSON rules as `readers` and errors
naming the shard and line (the record number, counted from 1, for TFRecord).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import glob
import gzip
import io
import json
import os
import re
from typing import IO, Iterator, Optional

from tf_finetune.data import readers

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")


@dataclasses.dataclass(frozen=True)
class Columns:
  """The columns (features) a split is read from; label None: unlabelled."""

  text: str
  text_pair: Optional[str]
  label: Optional[str]


def expand(spec: str, flag: str) -> list[str]:
  """The shards a file flag names, sorted, each once.

  Args:
    spec: A file, a glob or a comma-separated list of files and globs.
    flag: The flag, for messages.

  Raises:
    ValueError: when a name matches no file.
  """
  found = set()
  for part in (piece.strip() for piece in spec.split(",")):
    if not part:
      continue
    where = f"{flag}={spec!r}" + (f": {part!r}" if part != spec else "")
    if glob.has_magic(part):
      matches = [p for p in glob.glob(part) if os.path.isfile(p)]
      if not matches:
        raise ValueError(f"{where} matches no file.")
      found.update(matches)
    elif not os.path.isfile(part):
      raise ValueError(f"{where} does not exist.")
    else:
      found.add(part)
  if not found:
    raise ValueError(f"{flag}={spec!r} names no file.")
  return sorted(found)


def shard_format(path: str, flag: str) -> tuple[str, bool]:
  """(format, gzip-compressed) of a shard, from its name.

  The format is "csv", "tsv", "jsonl" or "tfrecord".

  Raises:
    ValueError: for an unknown extension, naming the flag and shard.
  """
  compressed = path.lower().endswith(".gz")
  name = path[:-3] if compressed else path
  suffix = os.path.splitext(name)[1].lower()
  if suffix in TFRECORD_SUFFIXES:
    return "tfrecord", compressed
  if suffix not in readers.SUFFIX_FORMATS:
    raise ValueError(
        f"{flag}={path!r} has an unknown extension {suffix!r}; expected "
        ".csv, .tsv, .jsonl or .tfrecord, each optionally gzip-compressed "
        "(.gz)."
    )
  return readers.SUFFIX_FORMATS[suffix], compressed


def total_bytes(paths: list[str]) -> int:
  """Bytes on disk of the shards (compressed size for .gz)."""
  return sum(os.path.getsize(path) for path in paths)


def read_bytes(path: str) -> bytes:
  """The content of a file, decompressed if its name ends in .gz."""
  opener = gzip.open if path.lower().endswith(".gz") else open
  with opener(path, "rb") as f:
    return f.read()


def _open_text(path: str, compressed: bool, newline: str) -> IO[str]:
  raw = gzip.open(path, "rb") if compressed else open(path, "rb")
  return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline)


class BadRecord(ValueError):
  """A record that can be skipped (--skip_bad_records): the rest of the
  shard is still readable."""


def iter_records(path: str, flag: str) -> Iterator[tuple[int, dict]]:
  """(line or record number, record) of each record of one shard, in order.

  A record that cannot be read while the next can (a CSV row with the
  wrong number of fields, a line that is not a JSON object, a TFRecord that
  is not a tf.train.Example) comes as a `BadRecord` in place of the record.
  A CSV shard's header comes first, as (0, {"__header__": names}).

  Raises:
    ValueError: for a shard that cannot be read further (not UTF-8, an
      unclosed CSV quote, a corrupt TFRecord file).
  """
  fmt, compressed = shard_format(path, flag)
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} does not exist.")
  if fmt == "tfrecord":
    yield from _tfrecord_records(path, compressed)
    return
  try:
    if fmt == "jsonl":
      yield from _jsonl_records(path, compressed)
    else:
      yield from _delimited_records(
          path, flag, compressed, "\t" if fmt == "tsv" else ","
      )
  except UnicodeDecodeError as e:
    line, byte = _first_undecodable(path, compressed)
    raise ValueError(
        f"{path}:{line}: the file is not valid UTF-8 (byte 0x{byte:02x}); "
        "save it as UTF-8."
    ) from e


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _first_undecodable(path: str, compressed: bool) -> tuple[int, int]:
  r"""(line, byte) of a file's first byte that is not UTF-8; lines end at
  "\r\n", "\r" or "\n", as `readers.position` counts them. Reads the file
  again, a chunk at a time: the text decoder reads ahead of the records."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  line, after_cr = 1, False
  with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      try:
        text = decoder.decode(chunk)
        byte = None
      except UnicodeDecodeError as e:
        text, byte = e.object[: e.start].decode("utf-8"), e.object[e.start]
      line += len(_LINE_BREAK.findall(text))
      if after_cr and text.startswith("\n"):
        line -= 1  # The "\n" of a "\r\n" split between chunks.
      if byte is not None:
        return line, byte
      after_cr = text.endswith("\r") or (after_cr and not text)
  return line, 0


def _jsonl_records(path, compressed):
  # Lines end at "\n" only, as JSON Lines defines them (and `readers`).
  with _open_text(path, compressed, newline="\n") as f:
    number = 1
    for text in f:
      start = number
      text = text.removesuffix("\n")
      number += text.count("\r") + (0 if text.endswith("\r") else 1)
      if not text.strip():
        continue
      try:
        record = json.loads(text)
      except json.JSONDecodeError as e:
        line, column = readers.position(text, e.pos)
        yield start, BadRecord(
            f"{path}:{start + line - 1}: not valid JSON ({e.msg} at column "
            f"{column}); each line must be one JSON object."
        )
        continue
      if not isinstance(record, dict):
        yield start, BadRecord(
            f"{path}:{start}: expected a JSON object per line, "
            f"got {type(record).__name__}."
        )
        continue
      yield start, record


# The most csv.field_size_limit() takes everywhere (a C long on Windows).
_MAX_FIELD_SIZE = 2**31 - 1


def _delimited_records(path, flag, compressed, delimiter):
  # A shard may be larger than memory, so no field limit below the largest:
  # csv's default (131,072 characters) refuses long documents. Raising the
  # process-wide limit refuses nothing that was accepted before.
  csv.field_size_limit(_MAX_FIELD_SIZE)
  with _open_text(path, compressed, newline="") as f:
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    start = 1
    try:
      header = next(reader, None)
      if header is None:
        raise ValueError(f"{flag}={path!r} is empty.")
      yield 0, {"__header__": header}
      start = reader.line_num + 1
      for fields in reader:
        if fields and len(fields) != len(header):
          yield start, BadRecord(
              f"{path}:{start}: expected {len(header)} fields "
              f"({', '.join(header)}) but found {len(fields)}; quote fields "
              "that contain the delimiter."
          )
        elif fields:
          yield start, dict(zip(header, fields))
        start = reader.line_num + 1
    except csv.Error as e:
      what = "header" if start == 1 else "row"
      reason = str(e).replace("\t", "\\t")
      raise ValueError(
          f"{path}:{start}: unreadable {what} ({reason}); a quoted field "
          "ends with a quote followed by the delimiter or the line end, and "
          'a quote inside it is written twice ("").'
      ) from e


def _tfrecord_records(path, compressed):
  import tensorflow as tf  # Heavy; only for TFRecord shards.

  dataset = tf.data.TFRecordDataset(
      path, compression_type="GZIP" if compressed else ""
  )
  number = 0
  try:
    for serialized in dataset.as_numpy_iterator():
      number += 1
      yield number, _example_record(path, number, serialized)
  except tf.errors.DataLossError as e:
    raise ValueError(
        f"{path}: record {number + 1}: the file is not a readable TFRecord "
        f"file ({e.message.splitlines()[0]})."
    ) from e


def _example_record(path, number, serialized):
  """A tf.train.Example as {feature: value}; a BadRecord if unreadable."""
  import tensorflow as tf

  try:
    example = tf.train.Example.FromString(serialized)
  except Exception:  # noqa: BLE001 - protobuf's DecodeError is not public.
    return BadRecord(f"{path}:{number}: record is not a tf.train.Example.")
  record = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if kind == "bytes_list":
      try:
        values = [value.decode("utf-8") for value in values]
      except UnicodeDecodeError:
        return BadRecord(
            f"{path}:{number}: feature {name!r} is not valid UTF-8."
        )
    record[name] = values[0] if len(values) == 1 else values
  return record


def tfrecord_rows(path: str, flag: str) -> tuple[list[dict], list[int], list]:
  """(records, record numbers, feature names) of a whole TFRecord shard,
  for the in-memory readers; the first unreadable record is an error."""
  rows, numbers, columns = [], [], {}
  for number, record in iter_records(path, flag):
    if isinstance(record, BadRecord):
      raise record
    rows.append(record)
    numbers.append(number)
    columns.update(dict.fromkeys(record))
  if not rows:
    raise ValueError(f"{flag}={path!r} is empty.")
  return rows, numbers, list(columns)


def iter_examples(
    path: str, flag: str, columns: Columns, *, with_record: bool = False
) -> Iterator[tuple]:
  """(line, (text, pair, label)) of each example of one shard, or (line,
  BadRecord) for one that cannot be used; pair and label None when not read.

  The values are checked as the in-memory readers check them. With
  `with_record`, the record read (a dict) comes third.

  Raises:
    ValueError: for a shard that cannot be read further, or a column that
      the CSV header does not have.
  """
  names = [
      (columns.text, "--text_column", True),
      (columns.text_pair, "--text_pair_column", True),
      (columns.label, "--label_column", False),
  ]
  names = [(n, f, t) for n, f, t in names if n]
  for line, record in iter_records(path, flag):
    if isinstance(record, BadRecord):
      yield (line, record, record) if with_record else (line, record)
      continue
    if "__header__" in record and line == 0:
      header = record["__header__"]
      for name, name_flag, _ in names:
        if name not in header:
          raise ValueError(
              f"{name_flag}={name!r} is not a column of {path}; columns "
              f"are: {', '.join(header)}."
          )
      continue
    values = {}
    try:
      for name, name_flag, as_text in names:
        values[name] = readers.column_values(
            [record], [line], (name,), name, path, name_flag, as_text=as_text
        )[0]
    except ValueError as e:
      bad = BadRecord(str(e))
      yield (line, bad, record) if with_record else (line, bad)
      continue
    example = (
        values[columns.text],
        values.get(columns.text_pair),
        values.get(columns.label),
    )
    yield (line, example, record) if with_record else (line, example)


def read_examples(
    spec: str,
    *,
    text_column: str,
    text_pair_column: Optional[str],
    label_column: Optional[str],
    flag: str,
) -> readers.Examples:
  """Reads every shard a file flag names into memory, in sorted order.

  Each shard is read by `readers.read_file` (the same strict checks); the
  examples of several shards are concatenated and remember their shard, so
  messages name the shard and its line.
  """
  paths = expand(spec, flag)
  parts = [
      readers.read_file(
          path,
          text_column=text_column,
          text_pair_column=text_pair_column,
          label_column=label_column,
          flag=flag,
      )
      for path in paths
  ]
  if len(parts) == 1:
    return parts[0]
  texts, pairs, labels, lines, rows, shard_of = [], [], [], [], [], []
  for part in parts:
    texts += part.texts
    pairs += part.text_pairs or []
    labels += part.labels or []
    lines += part.line_numbers
    rows += part.rows
    shard_of += [part.source] * len(part)
  return readers.Examples(
      spec,
      texts,
      pairs if text_pair_column else None,
      labels if label_column else None,
      lines,
      rows,
      shard_of=shard_of,
  )
