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
  assert examples.line_numbers == [2, 3] if suffix != ".jsonl" else [1, 2]


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
  with pytest.raises(ValueError, match="expected .csv, .tsv or .jsonl"):
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
