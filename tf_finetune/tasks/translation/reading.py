"""Reading parallel text: line-aligned files, CSV/TSV/JSONL, TFDS."""

from __future__ import annotations

import os
from typing import Optional

from tf_finetune.data import readers

# TFDS translation data sets whose source and target are features named by
# language code.
TFDS_FEATURE_HINT = (
    "wmt14_translate/de-en, wmt_t2t_translate/de-en: "
    "--source_language=en --target_language=de"
)


# Reading.
def decode_utf8(path: str, flag: str) -> str:
  """The text of a plain UTF-8 file; errors count lines as `read_lines`."""
  return readers.read_text(path, flag, universal_newlines=False)


def read_lines(path: str, flag: str) -> list[str]:
  r"""The lines of a plain UTF-8 text file, one sentence each.

  A line ends at "\n" (or "\r\n"); any other character, such as U+2028 or
  U+0085 inside a verse, is part of its sentence, so a source file and its
  translations align line by line as `wc -l` and `sed` count them (see
  `readers.text_lines`).

  Raises:
    ValueError: for a missing, empty or non-UTF-8 file or an empty line,
      naming the file and line.
  """
  lines = readers.text_lines(decode_utf8(path, flag))
  if not lines:
    raise ValueError(f"{flag}={path!r} is empty.")
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      raise ValueError(
          f"{path}:{number}: empty line; {flag} needs one "
          "sentence on every line."
      )
  return lines


def is_plain_text(path: str) -> bool:
  """Whether `path` is not a CSV, TSV or JSONL file (by its extension)."""
  return os.path.splitext(path)[1].lower() not in readers.SUFFIX_FORMATS


def read_line_aligned(
    source_path: str,
    target_path: Optional[str],
    *,
    flag: str,
    source_column: str = "source",
    target_column: str = "target",
) -> readers.Examples:
  """Reads a source file and (optionally) its line-aligned translations."""
  sources = read_lines(source_path, flag)
  targets = None
  if target_path:
    target_flag = flag.replace("_file", "_target_file")
    targets = read_lines(target_path, target_flag)
    if len(targets) != len(sources):
      raise ValueError(
          f"{flag}={source_path!r} has {len(sources)} lines but "
          f"{target_flag}={target_path!r} has {len(targets)}; line-aligned "
          "files need one translation per source line."
      )
  rows = [{source_column: source} for source in sources]
  if targets is not None:
    for row, target in zip(rows, targets):
      row[target_column] = target
  return readers.Examples(
      source_path,
      sources,
      None,
      targets,
      list(range(1, len(sources) + 1)),
      rows,
  )


def read_parallel_records(
    path: str, *, flag: str, source_column: str, target_column: Optional[str]
) -> readers.Examples:
  """Reads sources (and targets) from the columns of a CSV/TSV/JSONL file."""
  rows, lines, columns = readers.read_records(path, flag)
  if not rows:
    raise ValueError(f"{flag}={path!r} has a header but no examples.")
  found = {}
  for name, column_flag in (
      (source_column, "--source_column"),
      (target_column, "--target_column"),
  ):
    if name is None:
      continue
    values = readers.column_values(
        rows, lines, columns, name, path, column_flag, as_text=True
    )
    for value, line in zip(values, lines):
      if not value.strip():
        raise ValueError(
            f"{path}:{line}: the {column_flag}={name!r} value "
            "is empty; every example needs a sentence there."
        )
    found[name] = values
  return readers.Examples(
      path, found[source_column], None, found.get(target_column), lines, rows
  )


def read_tfds_translation(
    name: str,
    split: str,
    *,
    data_dir: Optional[str],
    source_language: str,
    target_language: str,
    with_targets: bool = True,
) -> readers.Examples:
  """Reads a TFDS split whose translation feature is keyed by language."""
  import tensorflow_datasets as tfds  # Heavy; only when TFDS is used.

  dataset, info = tfds.load(
      name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False
  )
  languages = list(info.features.keys())
  for flag, language in (
      ("--source_language", source_language),
      ("--target_language", target_language),
  ):
    if language not in languages:
      raise ValueError(
          f"{flag}={language!r} is not a language of {name}; "
          f"it has: {', '.join(languages)}."
      )
  sources, targets, rows = [], [], []
  for record in tfds.as_numpy(dataset):
    sources.append(record[source_language].decode("utf-8"))
    targets.append(record[target_language].decode("utf-8"))
    rows.append({"source": sources[-1], "target": targets[-1]})
  if not sources:
    raise ValueError(f"--tfds_name={name!r} split {split!r} is empty.")
  return readers.Examples(
      f"{name}[{split}]",
      sources,
      None,
      targets if with_targets else None,
      list(range(1, len(sources) + 1)),
      rows,
  )


def prefix_with_space(prefix: str) -> str:
  """The prefix ending in one space ("translate English to German: ").

  Flag files strip trailing spaces, so the space is put back here.
  """
  return prefix if not prefix or prefix.endswith(" ") else prefix + " "


def with_prefix(prefix: str, text: str) -> str:
  return prefix_with_space(prefix) + text
