r"""Every reader against Python's own csv and json on adversarial text.

The corpus holds every character `str.splitlines()` breaks at (U+0085,
U+2028, U+2029, \v, \f, \x1c-\x1e) and the ones CSV quotes for ("\r", "\n",
tabs, quotes, commas), alone, inside and at the ends of texts, with emoji,
Thai, CJK, long words, empty texts and one 100,000-character text. Files are
written by csv.writer and json.dumps in several dialects; each reader must
return what csv.reader and json.loads return, at the line where each record
starts.
"""

import csv
import io
import itertools
import json

import pytest

from tf_finetune import config as config_lib
from tf_finetune.data import readers
from tf_finetune.tasks import question_answering as qa
from tf_finetune.tasks import token_classification as tc
from tf_finetune.tasks import translation

# Where str.splitlines() breaks a line and Python's csv and editors do not.
SPLITLINES_ONLY_BREAKS = [
    "\x85",
    "\u2028",
    "\u2029",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
]


def _csv_keeps_nul() -> bool:
  """Whether this Python's csv writes and reads NUL (3.11 and later)."""
  out = io.StringIO()
  csv.writer(out).writerow(["a\x00b"])
  try:
    return next(csv.reader(io.StringIO(out.getvalue()))) == ["a\x00b"]
  except csv.Error:
    return False


OTHER_CHARACTERS = ["\r", "\r\n", "\n", "\t", '"', ",", "\ufffd"] + (
    ["\x00"] if _csv_keeps_nul() else []
)
LONG_TEXT = ("a long review. " * 6_667)[:100_000]


def _corpus() -> list[str]:
  texts = []
  for char in SPLITLINES_ONLY_BREAKS + OTHER_CHARACTERS:
    texts += [f"before{char}after", char, f"{char}edge{char}", char * 3]
  texts += [
      "".join(SPLITLINES_ONLY_BREAKS + OTHER_CHARACTERS),
      "family \U0001f469\u200d\U0001f469\u200d\U0001f467 emoji",
      "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",  # Thai, no spaces.
      "\u4e2d\u6587\u53e5\u5b50\uff0c\u5168\u89d2\u9017\u53f7\u3002",
      "\u00e9" * 150,  # One 300-byte word.
      "x" * 300,
      "",
      " ",
      '""',
      "\ufeffa byte-order mark inside",
      LONG_TEXT,
  ]
  return texts


CORPUS = _corpus()
LABELS = ["fresh", "rotten", "\u0e14\u0e35", "a,b", 'say "x"', "l\u2028m"]


def _rows() -> list[dict]:
  return [
      {
          "text": text,
          "pair": CORPUS[-1 - i],
          "label": LABELS[i % len(LABELS)],
      }
      for i, text in enumerate(CORPUS)
  ]


def _csv_reference(path, delimiter):
  """Python's csv: rows as dicts and the line each row starts on."""
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


DIALECTS = [
    (suffix, quoting, terminator, encoding)
    for suffix, quoting, terminator, encoding in itertools.product(
        [".csv", ".tsv"],
        [csv.QUOTE_MINIMAL, csv.QUOTE_ALL],
        ["\r\n", "\n"],
        ["utf-8", "utf-8-sig"],
    )
    # csv.writer leaves a lone "\r" unquoted when lines end at "\n" and only
    # some fields are quoted; csv.reader itself cannot read that file back.
    if not (quoting == csv.QUOTE_MINIMAL and terminator == "\n")
]


@pytest.mark.parametrize("suffix,quoting,terminator,encoding", DIALECTS)
def test_delimited_files_read_as_pythons_csv_reads_them(
    tmp_path, suffix, quoting, terminator, encoding
):
  delimiter = "\t" if suffix == ".tsv" else ","
  path = str(tmp_path / f"corpus{suffix}")
  rows = _rows()
  with open(path, "w", encoding=encoding, newline="") as f:
    writer = csv.DictWriter(
        f,
        fieldnames=list(rows[0]),
        delimiter=delimiter,
        quoting=quoting,
        lineterminator=terminator,
    )
    writer.writeheader()
    for i, row in enumerate(rows):
      writer.writerow(row)
      if i % 7 == 3:
        f.write(terminator)  # A blank line between records.
  reference, reference_lines = _csv_reference(path, delimiter)
  assert reference == rows  # The file is one Python's csv reads back.

  examples = readers.read_file(
      path, text_column="text", text_pair_column="pair", label_column="label"
  )
  assert examples.texts == [row["text"] for row in reference]
  assert examples.text_pairs == [row["pair"] for row in reference]
  assert examples.labels == [row["label"] for row in reference]
  assert examples.line_numbers == reference_lines
  assert examples.rows == reference
  # The records really span lines: line numbers are not row indexes.
  assert reference_lines[-1] > len(rows) + 1


@pytest.mark.parametrize(
    "ensure_ascii,terminator", itertools.product([False, True], ["\n", "\r\n"])
)
def test_jsonl_files_read_as_pythons_json_reads_them(
    tmp_path, ensure_ascii, terminator
):
  path = tmp_path / "corpus.jsonl"
  rows = _rows()
  with open(path, "w", encoding="utf-8", newline="") as f:
    for i, row in enumerate(rows):
      f.write(json.dumps(row, ensure_ascii=ensure_ascii) + terminator)
      if i % 7 == 3:
        f.write(terminator)  # Blank lines are skipped.
  # Python's json, one value per line of a file opened in text mode.
  reference, reference_lines = [], []
  with open(path, encoding="utf-8", newline="") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        reference.append(json.loads(line))
        reference_lines.append(number)
  assert reference == rows

  examples = readers.read_file(
      str(path),
      text_column="text",
      text_pair_column="pair",
      label_column="label",
  )
  assert examples.texts == [row["text"] for row in reference]
  assert examples.text_pairs == [row["pair"] for row in reference]
  assert examples.labels == [row["label"] for row in reference]
  assert examples.line_numbers == reference_lines


def _one_line_texts() -> list[str]:
  """Corpus texts that fit on one line of a plain text file."""
  return [
      text
      for text in CORPUS
      if "\n" not in text and not text.endswith("\r") and text.strip()
  ]


@pytest.mark.parametrize(
    "terminator,final,encoding",
    itertools.product(["\n", "\r\n"], [True, False], ["utf-8", "utf-8-sig"]),
)
def test_line_aligned_translations_keep_every_other_character(
    tmp_path, terminator, final, encoding
):
  sources = _one_line_texts()
  targets = [f"[{text}]" for text in reversed(sources)]
  paths = []
  for name, lines in (("train.src", sources), ("train.tgt", targets)):
    path = tmp_path / name
    content = terminator.join(lines) + (terminator if final else "")
    path.write_bytes(content.encode(encoding))
    paths.append(str(path))
  examples = translation.read_line_aligned(
      paths[0], paths[1], flag="--train_file"
  )
  assert examples.texts == sources
  assert examples.labels == targets
  assert examples.line_numbers == list(range(1, len(sources) + 1))


def test_line_aligned_empty_line_is_named_by_its_line_feed_count(tmp_path):
  path = tmp_path / "train.src"
  path.write_text(
      "a\u2028b\x85c\nd\x0ce\x1cf\r\n\r\ng\n", encoding="utf-8", newline=""
  )
  with pytest.raises(ValueError, match=r"train.src:3: empty line"):
    translation.read_lines(str(path), "--train_file")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_parallel_records_keep_every_character(tmp_path, suffix):
  pairs = [
      {"source": text, "target": f"<{text}>"} for text in CORPUS if text.strip()
  ]
  path = str(tmp_path / f"parallel{suffix}")
  if suffix == ".jsonl":
    with open(path, "w", encoding="utf-8", newline="") as f:
      for pair in pairs:
        f.write(json.dumps(pair, ensure_ascii=False) + "\n")
  else:
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(
          f,
          fieldnames=["source", "target"],
          delimiter="\t" if suffix == ".tsv" else ",",
      )
      writer.writeheader()
      writer.writerows(pairs)
  examples = translation.read_parallel_records(
      path, flag="--train_file", source_column="source", target_column="target"
  )
  assert examples.texts == [pair["source"] for pair in pairs]
  assert examples.labels == [pair["target"] for pair in pairs]


# Words that a CoNLL line may hold: no space, tab, "\r" or "\n", not blank.
CONLL_WORDS = [
    f"w{char}x" for char in SPLITLINES_ONLY_BREAKS + ["\u00a0", "\x00"]
] + [
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\u0e20\u0e32\u0e29\u0e32",
    "\u4e2d\u6587",
    "\u00e9" * 150,
    '"',
    ",",
]


@pytest.mark.parametrize(
    "terminator,encoding",
    itertools.product(["\n", "\r\n", "\r"], ["utf-8", "utf-8-sig"]),
)
def test_conll_words_keep_every_character(tmp_path, terminator, encoding):
  tags = ["B-LOC", "I-LOC", "O"]
  sentences = [CONLL_WORDS[:5], CONLL_WORDS[5:9], CONLL_WORDS[9:]]
  lines, starts = ["-DOCSTART- -X- O O", ""], []
  for sentence in sentences:
    starts.append(len(lines) + 1)
    for i, word in enumerate(sentence):
      lines.append(f"{word} NN\t{tags[i % 3]}")
    lines.append("")
  path = tmp_path / "words.conll"
  path.write_bytes(terminator.join(lines).encode(encoding))
  words, tag_lists, first_lines = tc.read_conll(str(path), scheme="IOB2")
  assert words == sentences
  assert tag_lists == [
      [tags[i % 3] for i in range(len(sentence))] for sentence in sentences
  ]
  assert first_lines == starts


def test_conll_error_names_the_line_an_editor_shows(tmp_path):
  path = tmp_path / "bad.conll"
  path.write_text(
      "EU\u2028x B-ORG\rrejects\x85 O\r\n\nGerman\x0c\n",
      encoding="utf-8",
      newline="",
  )
  with pytest.raises(
      ValueError, match=r"bad.conll:4: expected a word and its tag"
  ):
    tc.read_conll(str(path))


def _squad_document() -> dict:
  paragraphs = []
  for i, context in enumerate(text for text in CORPUS if text.strip()):
    answer = context[len(context) // 3 : len(context) // 3 + 4]
    paragraphs.append(
        {
            "context": context,
            "qas": [
                {
                    "id": f"q{i}",
                    "question": f"What is at {i}?\u2028",
                    "answers": [
                        {"text": answer, "answer_start": len(context) // 3}
                    ],
                }
            ],
        }
    )
  return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def _question_task():
  return qa.QuestionAnswering(config_lib.task_config(task="question_answering"))


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_squad_json_reads_as_pythons_json(tmp_path, ensure_ascii):
  document = _squad_document()
  path = tmp_path / "questions.json"
  path.write_text(
      json.dumps(document, ensure_ascii=ensure_ascii, indent=1),
      encoding="utf-8",
  )
  examples = _question_task().read_file(
      str(path), "--train_file", with_labels=True
  )
  paragraphs = json.loads(path.read_text(encoding="utf-8"))["data"][0][
      "paragraphs"
  ]
  assert examples.texts == [p["qas"][0]["question"] for p in paragraphs]
  assert examples.text_pairs == [p["context"] for p in paragraphs]
  assert examples.labels == [p["qas"][0]["answers"] for p in paragraphs]


def test_squad_jsonl_questions_read_as_pythons_json(tmp_path):
  paragraphs = _squad_document()["data"][0]["paragraphs"]
  records = [
      {
          "id": p["qas"][0]["id"],
          "question": p["qas"][0]["question"],
          "context": p["context"],
          "answers": p["qas"][0]["answers"],
      }
      for p in paragraphs
  ]
  path = tmp_path / "questions.jsonl"
  path.write_text(
      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
      encoding="utf-8",
  )
  examples = _question_task().read_file(
      str(path), "--train_file", with_labels=True
  )
  assert examples.texts == [r["question"] for r in records]
  assert examples.text_pairs == [r["context"] for r in records]
  assert examples.labels == [r["answers"] for r in records]
  assert examples.line_numbers == list(range(1, len(records) + 1))


def test_squad_json_errors_name_the_line_an_editor_shows(tmp_path):
  broken = tmp_path / "broken.json"
  broken.write_bytes(b'{"data": [\r  {"paragraphs": [}\r]}')
  with pytest.raises(ValueError, match=r"broken.json:2: not valid JSON"):
    _question_task().read_file(str(broken), "--train_file", with_labels=True)
  latin1 = tmp_path / "latin1.json"
  latin1.write_bytes('{"data": [\n"caf\u00e9"]}'.encode("latin-1"))
  with pytest.raises(ValueError, match=r"latin1.json:2: the file is not valid"):
    _question_task().read_file(str(latin1), "--train_file", with_labels=True)
