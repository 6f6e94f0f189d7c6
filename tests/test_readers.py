import csv
import json

import pytest

from conftest import write_rows
from tf_finetune.data import labels, readers

ROWS = [
    {"text": "good film", "label": "positive"},
    {"text": "bad film", "label": "negative"},
]


def _read(path, **kwargs):
  options = dict(
      text_column="text", text_pair_column=None, label_column="label"
  )
  options.update(kwargs)
  return readers.read_file(str(path), **options)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_reads_each_format(tmp_path, suffix):
  path = write_rows(str(tmp_path / f"data{suffix}"), ROWS)
  examples = _read(path)
  assert examples.texts == ["good film", "bad film"]
  assert examples.labels == ["positive", "negative"]
  # A JSONL file has no header line.
  expected_lines = [1, 2] if suffix == ".jsonl" else [2, 3]
  assert examples.line_numbers == expected_lines


def test_reads_sentence_pairs(tmp_path):
  path = write_rows(
      str(tmp_path / "pairs.csv"),
      [{"a": "x y", "b": "z", "label": 1}, {"a": "q", "b": "r s", "label": 0}],
  )
  examples = _read(path, text_column="a", text_pair_column="b")
  assert examples.text_pairs == ["z", "r s"]
  assert examples.labels == ["1", "0"]


def test_integer_and_float_labels_are_the_same_label(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text(
      '{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n'
      '{"text": "c", "label": "1"}\n{"text": "d", "label": 0}\n'
  )
  assert _read(path).labels == ["1", "1", "1", "0"]


def test_missing_file(tmp_path):
  with pytest.raises(
      ValueError, match=r"--train_file='.*nope.csv' does not " "exist"
  ):
    _read(tmp_path / "nope.csv")


def test_unknown_extension(tmp_path):
  path = tmp_path / "data.xlsx"
  path.write_text("x")
  with pytest.raises(
      ValueError, match="expected .csv, .tsv, .jsonl or .tfrecord"
  ):
    _read(path)


def test_missing_column_lists_the_columns(tmp_path):
  path = write_rows(str(tmp_path / "data.csv"), ROWS)
  with pytest.raises(
      ValueError,
      match=r"--label_column='sentiment' is not a "
      r"column of .*data.csv; columns are: text, label",
  ):
    _read(path, label_column="sentiment")


def test_empty_file(tmp_path):
  path = tmp_path / "empty.csv"
  path.write_text("")
  with pytest.raises(ValueError, match="is empty"):
    _read(path)


def test_header_without_rows(tmp_path):
  path = tmp_path / "header.csv"
  path.write_text("text,label\n")
  with pytest.raises(ValueError, match="has a header but no examples"):
    _read(path)


def test_ragged_csv_row_names_the_line(tmp_path):
  path = tmp_path / "ragged.csv"
  path.write_text("text,label\ngood,positive\nbad,negative,extra\n")
  with pytest.raises(ValueError, match=r"ragged.csv:3: expected 2 fields"):
    _read(path)


def test_invalid_json_names_the_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
    _read(path)


def test_non_utf8_file_names_the_line(tmp_path):
  path = tmp_path / "latin1.csv"
  path.write_bytes(
      "text,label\nok,positive\ncaf\u00e9,negative\n".encode("latin-1")
  )
  with pytest.raises(
      ValueError, match=r"latin1.csv:3: the file is not valid " "UTF-8"
  ):
    _read(path)


def test_missing_value_in_jsonl_names_the_line(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
  with pytest.raises(
      ValueError,
      match=r"data.jsonl:2: the " r"--label_column='label' value is missing",
  ):
    _read(path)


def test_label_vocab_sorts_integers_numerically():
  assert labels.infer_label_vocab(["10", "2", "1", "2"], "x") == [
      "1",
      "2",
      "10",
  ]
  assert labels.infer_label_vocab(["pos", "neg"], "x") == ["neg", "pos"]


def test_single_class_is_refused():
  with pytest.raises(ValueError, match="single class"):
    labels.infer_label_vocab(["pos", "pos"], "train.csv")


def test_label_vocab_round_trip(tmp_path):
  labels.write_label_vocab(["neg", "pos"], str(tmp_path))
  assert labels.read_label_vocab(str(tmp_path)) == ["neg", "pos"]


def test_unseen_label_names_file_and_line(tmp_path):
  path = write_rows(
      str(tmp_path / "test.csv"), ROWS + [{"text": "meh", "label": "neutral"}]
  )
  with pytest.raises(
      ValueError,
      match=r"test.csv:4: label 'neutral' .* never "
      r"seen in training; the model knows: negative, positive",
  ):
    readers.check_labels_known(
        _read(path), ["negative", "positive"], "--test_file"
    )


# Real-world text: line breaks inside fields, line numbers, odd files.


def test_csv_text_with_next_line_character_is_one_field(tmp_path):
  # U+0085 (NEL), from text scraped off Windows-1252 pages; Python's csv
  # writes and reads it inside the field.
  path = tmp_path / "reviews.csv"
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerow(["caf\u00e9\x85 good", "positive"])
    writer.writerow(['"quoted"\x85\u2028, and more', "negative"])
  examples = _read(path)
  assert examples.texts == [
      "caf\u00e9\x85 good",
      '"quoted"\x85\u2028, and more',
  ]
  assert examples.labels == ["positive", "negative"]
  assert examples.line_numbers == [2, 3]


def test_line_numbers_are_each_records_first_physical_line(tmp_path):
  path = tmp_path / "lines.csv"
  path.write_bytes(
      (
          "text,label\r\n"  # 1
          "a\u2028b\x0cc,pos\r\n"  # 2: U+2028 and \f are text
          '"two\r\nlines",neg\n'  # 3-4
          "\n"  # 5: a blank line
          '"lone\rcarriage\x85return",pos\r'  # 6-7: "\r" ends a line
          "last,neg"  # 8: no final line break
      ).encode("utf-8")
  )
  examples = _read(path)
  assert examples.texts == [
      "a\u2028b\x0cc",
      "two\r\nlines",
      "lone\rcarriage\x85return",
      "last",
  ]
  assert examples.line_numbers == [2, 3, 6, 8]


def test_ragged_row_after_multi_line_fields_names_its_first_line(tmp_path):
  path = tmp_path / "ragged.csv"
  path.write_text(
      'text,label\n"a\nb",pos\nc\x85d,neg\n"e\nf",neg,extra\n',
      encoding="utf-8",
      newline="",
  )
  with pytest.raises(
      ValueError,
      match=r"ragged.csv:5: expected 2 fields \(text, label\) but found 3",
  ):
    _read(path)


def test_unclosed_quote_names_the_line_it_opens(tmp_path):
  path = tmp_path / "unclosed.csv"
  path.write_text('text,label\ngood,pos\n"bad,neg\nmore,pos\n')
  with pytest.raises(
      ValueError,
      match=r"unclosed.csv:3: unreadable row \(unexpected end of data on "
      r"line 4\); a quoted field ends with a quote",
  ):
    _read(path)


def test_text_after_a_closing_quote_is_an_error(tmp_path):
  # Python's csv outside strict mode would silently read "ab c".
  path = tmp_path / "after.tsv"
  path.write_text('text\tlabel\n"ab" c\tpos\n')
  with pytest.raises(
      ValueError, match=r"after.tsv:2: unreadable row \('\\t' expected"
  ):
    _read(path)


def test_bom_crlf_and_missing_final_newline(tmp_path):
  for suffix, content in (
      (".csv", 'text,label\r\n"x, y",pos\r\nz,neg'),
      (".tsv", "text\tlabel\r\nx, y\tpos\r\nz\tneg"),
      (
          ".jsonl",
          '{"text": "x, y", "label": "pos"}\r\n{"text": "z", '
          '"label": "neg"}',
      ),
  ):
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(content.encode("utf-8-sig"))
    examples = _read(path)
    assert examples.texts == ["x, y", "z"], suffix
    assert examples.labels == ["pos", "neg"], suffix
    assert list(examples.rows[0]) == ["text", "label"], suffix


def test_fields_longer_than_csvs_default_limit(tmp_path):
  long_text = "word " * 60_000  # 300,000 characters; csv's default: 131,072.
  path = write_rows(
      str(tmp_path / "long.csv"), [{"text": long_text, "label": "pos"}] * 2
  )
  limit = csv.field_size_limit()
  assert _read(path).texts == [long_text, long_text]
  assert csv.field_size_limit() == limit  # The process-wide limit is back.


def test_jsonl_line_separators_inside_strings_and_blank_lines(tmp_path):
  path = tmp_path / "data.jsonl"
  records = [
      {"text": "a\u2028b\u2029c\x85d", "label": "pos"},
      {"text": "e", "label": "neg"},
  ]
  path.write_text(
      json.dumps(records[0], ensure_ascii=False)
      + "\r\n\n   \n"
      + json.dumps(records[1], ensure_ascii=False)
      + "\n",
      encoding="utf-8",
      newline="",
  )
  examples = _read(path)
  assert examples.rows == records
  assert examples.line_numbers == [1, 4]


def test_jsonl_error_line_counts_carriage_returns(tmp_path):
  path = tmp_path / "bad.jsonl"
  # A lone "\r" is JSON whitespace inside the first record, and a line break
  # to an editor: the broken record starts on line 3.
  path.write_text(
      '{"text": "a",\r"label": "x"}\n{"text": \u2028}\n',
      encoding="utf-8",
      newline="",
  )
  with pytest.raises(
      ValueError,
      match=r"bad.jsonl:3: not valid JSON \(Expecting value at column 10\)",
  ):
    _read(path)


def test_non_utf8_line_counts_every_line_break(tmp_path):
  path = tmp_path / "mac.csv"
  path.write_bytes("text,label\rok,pos\r\ncaf\u00e9,neg\r".encode("latin-1"))
  with pytest.raises(ValueError, match=r"mac.csv:3: the file is not valid"):
    _read(path)


def test_position_counts_lines_as_csv_does():
  text = "ab\r\ncd\ref\ngh\u2028\x85ij"
  assert readers.position(text, text.index("c")) == (2, 1)
  assert readers.position(text, text.index("\n")) == (1, 4)
  assert readers.position(text, text.index("e")) == (3, 1)
  assert readers.position(text, text.index("j")) == (4, 6)
  assert readers.position(text, text.index("e"), universal_newlines=False) == (
      2,
      4,
  )


def test_text_lines_end_at_line_feeds_only():
  text = "a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh\ri\r\nj\n\nk"
  assert readers.text_lines(text) == [
      "a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh\ri",
      "j",
      "",
      "k",
  ]
  assert readers.text_lines(text, universal_newlines=True) == [
      "a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh",
      "i",
      "j",
      "",
      "k",
  ]
  assert readers.text_lines("x\r\n") == ["x"]
  assert readers.text_lines("x\r", universal_newlines=True) == ["x"]
  assert readers.text_lines("") == []
