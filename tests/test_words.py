"""The shared word splitter, against the Hugging Face BERT pre-tokenizer, and
where tasks use it: question answering's offsets and token classification's
serving."""

import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from conftest import make_vocab
from tf_finetune.tasks import question_answering as qa
from tf_finetune.tasks import token_classification
from tf_finetune.text import words
from tf_finetune.text.tokenization import TextEncoder


def _hf_word_spans(texts, strip_accents):
  """Character spans of BERT's words, from a tokenizer that knows no word
  (each word is one [UNK] with the word's offsets into the original text)."""
  tokenizer = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True,
      handle_chinese_chars=True,
      strip_accents=strip_accents,
      lowercase=strip_accents,
  )
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return [
      [tuple(span) for span in encoding.offsets]
      for encoding in tokenizer.encode_batch(texts)
  ]


def _spans(texts, **options):
  _, starts, ends = words.split_words(tf.constant(texts), **options)
  return [list(zip(s, e)) for s, e in zip(starts.to_list(), ends.to_list())]


@pytest.mark.parametrize("strip_accents", [False, True])
def test_every_code_point_splits_as_the_tokenizer(strip_accents):
  # Each character inside a word, at a word's edges and alone: every code
  # point of planes 0 and 1, and samples of the rest (CJK ideographs,
  # tags, private use) to stay fast; scripts/tokenizer_parity.py checks
  # them all.
  points = [
      chr(c)
      for c in [*range(0x20000), *range(0x20000, 0x110000, 61)]
      if not 0xD800 <= c <= 0xDFFF
  ]
  texts = [
      " ".join(f"x{c}Y {c}z{c} {c}" for c in points[start : start + 256])
      for start in range(0, len(points), 256)
  ]
  expected = _hf_word_spans(texts, strip_accents)
  got = _spans(texts, strip_accents=strip_accents)
  differing = [i for i in range(len(texts)) if got[i] != expected[i]]
  assert not differing, texts[differing[0]][:200]


def test_unicode_whitespace_separates_words():
  text = "10\u00a0km,\u2009then\u202f5\u3000mi\u2028end\u1680x"
  got, starts, ends = words.split_words(tf.constant([text]))
  assert [w.decode() for w in got.to_list()[0]] == [
      "10",
      "km",
      ",",
      "then",
      "5",
      "mi",
      "end",
      "x",
  ]
  assert [
      text[s:e] for s, e in zip(starts.to_list()[0], ends.to_list()[0])
  ] == ["10", "km", ",", "then", "5", "mi", "end", "x"]


def test_removed_characters_join_words_and_stay_out_of_spans():
  # Cleaning removes U+FFFD, U+0000, zero-width and bidi characters, and
  # vertical tab (a control character, not a separator here).
  texts = ["\ufffdHello wor\u200bld\x00 \x00 a\x0bb \u202e", "", "\ufffd"]
  got, starts, ends = words.split_words(tf.constant(texts))
  assert starts.to_list() == [[1, 7, 17], [], []]
  assert ends.to_list() == [[6, 13, 20], [], []]
  assert [texts[0][s:e] for s, e in zip([1, 7, 17], [6, 13, 20])] == [
      "Hello",
      "wor\u200bld",
      "a\x0bb",
  ]
  assert _spans(texts) == _hf_word_spans(texts, False)


def test_offsets_are_characters_in_every_row():
  texts = ["😀 ab", "", "中文 x\U00020000y", "é" * 3 + " z"]
  got = _spans(texts)
  assert got == [
      [(0, 1), (2, 4)],
      [],
      [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6)],
      [(0, 3), (4, 5)],
  ]
  assert got == _hf_word_spans(texts, False)


def test_accent_stripping_splits_symbols_that_decompose_to_punctuation():
  text = "a\u2260b \u0301e\u0301"
  assert _spans([text]) == [[(0, 3), (4, 7)]]
  # "≠" is "=" and a combining mark; marks at a word's edges are stripped.
  assert _spans([text], strip_accents=True) == [
      [(0, 1), (1, 2), (2, 3), (5, 6)]
  ]
  assert _spans([text], strip_accents=True) == _hf_word_spans([text], True)


def test_special_tokens_are_words_as_written():
  got, _, _ = words.split_words(
      tf.constant(["a[SEP]b [sep] [SE\u200bP]"]), special_tokens=["[SEP]"]
  )
  assert [w.decode() for w in got.to_list()[0]] == [
      "a",
      "[SEP]",
      "b",
      "[",
      "sep",
      "]",
      "[",
      "SE\u200bP",
      "]",
  ]


def test_a_100000_character_text_splits_quickly():
  text = "ab\u00a0" * 33_333 + "c"
  got, starts, ends = words.split_words(tf.constant([text]))
  assert got.row_lengths().numpy().tolist() == [33_334]
  assert starts.to_list()[0][-1] == 99_999 and ends.to_list()[0][-1] == 100_000


def _encoder():
  return TextEncoder.wordpiece(
      vocab=make_vocab(), lower_case=True, max_seq_length=32
  )


def test_question_answering_spans_split_at_unicode_whitespace():
  # Before, "10\u00a0km" was one word, and an answer "10" took all of it.
  encoder = _encoder()
  context = "It is 10\u00a0km\u2009away, x\u2260y."
  tokens, starts, ends = qa.tokenize_context(encoder, tf.constant([context]))
  starts, ends = starts.to_list()[0], ends.to_list()[0]
  words_of_tokens = [context[s:e] for s, e in zip(starts, ends)]
  assert list(dict.fromkeys(words_of_tokens)) == [
      "It",
      "is",
      "10",
      "km",
      "away",
      ",",
      "x",
      "\u2260",  # "=" once accents are stripped, as uncased BERT has it
      "y",
      ".",
  ]
  assert len(words_of_tokens) == len(tokens.to_list()[0])
  targets = qa.window_targets(
      [[{"text": "10", "answer_start": 6}]],
      [np.array(starts)],
      [np.array(ends)],
      np.array([0]),
      np.array([0]),
      np.array([len(starts)]),
      np.array([0]),
  )
  start, end = targets.tolist()[0]
  assert context[starts[start] : ends[end]] == "10"


class _FirstPieceTagger:
  """Logits that make a token's tag its id modulo the number of tags."""

  def __init__(self, num_tags):
    self.num_tags = num_tags

  def __call__(self, features, training=False):
    del training
    return tf.one_hot(features["input_ids"] % self.num_tags, self.num_tags)


def test_token_classification_serving_tags_unicode_separated_words():
  encoder = _encoder()
  labels = ["A", "B", "C", "O"]
  server = token_classification.TokenClassificationServer(
      _FirstPieceTagger(len(labels)),
      encoder,
      task_name="token_classification",
      label_vocab=labels,
  )
  # U+2E43 is punctuation in today's Unicode but not in the tokenizer's
  # tables, so it is inside a word, as the tokenizer has it in training.
  text = "good\u00a0film\u3000was\u2009dull x\u2e43y a\u2260b"
  out = server.serve(tf.constant([text]))
  served = [w.decode() for w in out["words"].numpy()[0]]
  assert served == [
      "good",
      "film",
      "was",
      "dull",
      "x\u2e43y",
      "a",
      "\u2260",
      "b",
  ]
  starts = out["start"].numpy()[0].tolist()
  ends = out["end"].numpy()[0].tolist()
  assert [text[s:e] for s, e in zip(starts, ends)] == served
  # Each word's tag is that of its first sub-word in training, where each
  # word is tokenized on its own.
  first_ids = [
      pieces[0] if pieces else None
      for pieces in encoder.tokenize(tf.constant(served)).to_list()
  ]
  expected = [labels[i % len(labels)] for i in first_ids]
  assert [t.decode() for t in out["tags"].numpy()[0]] == expected
