"""In-graph WordPiece against the Hugging Face tokenizer: a fast sample of
scripts/tokenizer_parity.py, and its normalization on every code point."""

import importlib.util
import os

import pytest
import tensorflow as tf
from tokenizers import normalizers, pre_tokenizers

from tf_finetune.models import backbone
from tf_finetune.text import wordpiece
from tf_finetune.text import words as words_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parity_script():
  path = os.path.join(REPO, "scripts", "tokenizer_parity.py")
  spec = importlib.util.spec_from_file_location("tokenizer_parity", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def parity():
  return _parity_script()


def _sample(parity):
  texts = parity.adversarial_texts(long_chars=5_000)
  # The texts holding every code point come first after the 7 short ones;
  # the per-code-point test below covers those.
  first = next(i for i, text in enumerate(texts) if text.startswith("Word"))
  return texts[:7] + texts[first:-4:8] + texts[-4:]


@pytest.mark.parametrize("lower_case", [True, False])
def test_trained_tokenizers_match_on_a_sample(parity, tmp_path, lower_case):
  texts = _sample(parity)
  tokenizer = parity.train_wordpiece(
      texts, lower_case=lower_case, directory=str(tmp_path)
  )
  differing = parity.compare(
      parity.hf_tokenize(tokenizer), parity.graph_tokenizer(tokenizer), texts
  )
  assert not differing, [texts[i][:80] for i, _, _ in differing[:3]]


def test_the_test_tokenizer_matches_on_a_sample(parity, tiny_bert_dir):
  texts = _sample(parity)
  tokenizer = backbone.load_tokenizer(tiny_bert_dir)
  differing = parity.compare(
      parity.hf_tokenize(tokenizer), parity.graph_tokenizer(tokenizer), texts
  )
  assert not differing, [texts[i][:80] for i, _, _ in differing[:3]]


def _normalized_words(texts, lower_case):
  """BERT's normalized words: (the tokenizer's, the graph's) per text."""
  hf = normalizers.BertNormalizer(
      clean_text=True,
      handle_chinese_chars=True,
      strip_accents=lower_case,
      lowercase=lower_case,
  )
  pre = pre_tokenizers.BertPreTokenizer()
  expected = [
      [word for word, _ in pre.pre_tokenize_str(hf.normalize_str(text))]
      for text in texts
  ]
  graph = wordpiece.WordPiece(vocab=["[UNK]"], lower_case=lower_case)
  words = words_lib.split_into_pieces(
      tf.constant(texts), strip_accents=lower_case
  )
  normalized = words.with_flat_values(graph.normalize_words(words.flat_values))
  got = [[w.decode() for w in row if w] for row in normalized.to_list()]
  return expected, got


@pytest.mark.parametrize("lower_case", [True, False])
def test_normalization_differs_only_on_known_characters(lower_case):
  # Every code point of planes 0 and 1 and samples of the others, in a
  # word, and after and before a combining mark that accent stripping keeps
  # (U+1D16D, class 226; U+1D165, class 216): NFD reorders a mark of a
  # lower, respectively higher, class ahead of it.
  points = [
      chr(c)
      for c in [*range(0x20000), *range(0x20000, 0x110000, 61)]
      if not 0xD800 <= c <= 0xDFFF
  ]
  texts = [
      " ".join(
          f"x{c}Y a\U0001d16d{c} a{c}\U0001d165" for c in points[i : i + 128]
      )
      for i in range(0, len(points), 128)
  ]
  expected, got = _normalized_words(texts, lower_case)
  known = wordpiece.code_points(wordpiece.UNCASED_DIVERGENCES)
  for text, want, have in zip(texts, expected, got):
    for want_word, have_word in zip(want, have):
      if want_word != have_word:
        assert lower_case and known & set(map(ord, want_word + have_word)), (
            want_word,
            have_word,
        )
    assert len(want) == len(have), text[:100]


def test_known_divergences_survive_normalization():
  # The refusal in `WordPiece` relies on both sides keeping these
  # characters: a word holding one is [UNK] on both sides.
  known = wordpiece.code_points(wordpiece.UNCASED_DIVERGENCES)
  assert not known & wordpiece.code_points(words_lib.NONSPACING_MARKS)
  assert not known & wordpiece.code_points(words_lib.REMOVED)
