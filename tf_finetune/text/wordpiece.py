"""WordPiece in the graph, as the model's own BERT-style tokenizer does it.

`WordPiece` reproduces the Hugging Face `tokenizers` pipeline of BERT's
tokenizers (BertNormalizer, BertPreTokenizer, WordPiece model) id for id:

1. Special tokens ("[SEP]", ...) written in the text are matched first, in
   the raw text, and are their own ids.
2. The text is split into words by the word splitter that question
   answering and token classification use (`words`): Unicode whitespace,
   punctuation and CJK ideographs, as BERT's normalizer and pre-tokenizer
   split text once it is cleaned.
3. Each word is normalized: the characters cleaning removes go; an uncased
   tokenizer then strips accents (NFD, then drops nonspacing marks) and
   lowercases each character on its own (so "Σ" is always "σ", never the
   final "ς").
4. A normalized word of more than `MAX_CHARS_PER_WORD` characters is
   [UNK]; shorter ones are split into vocabulary pieces, greedily longest
   first, by tensorflow-text's `FastWordpieceTokenizer` (whose ops TF
   Serving links); a word with a piece missing from the vocabulary is one
   [UNK].

`spec_from_hf_tokenizer` reads what a fast tokenizer's `tokenizer.json`
says and refuses, naming the setting, what this module cannot reproduce.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tf_finetune.text import words as words_lib

# The Hugging Face WordPiece model's max_input_chars_per_word: a word longer
# than this many characters (code points, counted after normalization) is
# [UNK].
MAX_CHARS_PER_WORD = 100
CONTINUING_SUBWORD_PREFIX = "##"
# The longest vocabulary token FastWordpieceTokenizer accepts, in bytes.
MAX_BYTES_PER_TOKEN = 256
# The special tokens of BERT's tokenizers; those in the vocabulary are
# matched in raw text.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Where TensorFlow's lowercasing and NFD (their ICU versions) and the
# tokenizer's (Rust's) disagree, with each character's images on both sides:
# recent case pairs (Vithkuqi, Garay, U+2C2F, ...) that TensorFlow does not
# lowercase; recent canonical decompositions (Tulu-Tigalari, Gurung Khema,
# Kirat Rai, ...) that the tokenizer does not apply; and combining marks
# added after Unicode 9 (U+07FD, U+1AC0, ...), which the tokenizer's NFD
# does not reorder. None of them is a nonspacing mark in the tokenizer's
# table, so both sides keep them: with none of them in an uncased
# vocabulary, a word holding one is [UNK] on both sides, and `WordPiece`
# refuses an uncased vocabulary that holds one.
UNCASED_DIVERGENCES = (
    "019B 0264 07FD 0897-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA 1715 "
    "1ABF-1ACE 1C89-1C8A 1DF6-1DFA 2C2F 2C5F A7C0-A7C1 A7CB-A7CD A7D0-A7D1 "
    "A7D6-A7DC A82C 10570-1057A 1057C-1058A 1058C-10592 10594-10595 "
    "10597-105A1 105A3-105B1 105B3-105B9 105BB-105BC 105C9 105D2 105DA "
    "105E4 10D24-10D27 10D50-10D65 10D69-10D6D 10D70-10D85 10EAB-10EAC "
    "10EFD-10EFF 10F46-10F50 10F82-10F85 11070 1133B 11382-11385 1138B "
    "1138E 11390-11391 113B8 113BB 113C2 113C5 113C7-113C9 113CE-113D0 "
    "1145E 11839-1183A 11930 11935 11938 1193D-1193E 11943 119E0 11A34 "
    "11A47 11A99 11D42 11D44-11D45 11D97 11F41-11F42 1611E-16129 1612F "
    "16D63 16D67-16D6A 16FF0-16FF1 1E08F 1E130-1E136 1E2AE 1E2EC-1E2EF "
    "1E4EC-1E4EF 1E5EE-1E5EF"
)


class TokenizerNotSupportedError(ValueError):
  """The model's tokenizer cannot be reproduced in the graph."""


def code_points(ranges: str) -> set[int]:
  """The code points of space-separated hex code points and ranges."""
  points = set()
  for item in ranges.split():
    first, _, last = item.partition("-")
    points.update(range(int(first, 16), int(last or first, 16) + 1))
  return points


class WordPiece(tf.Module):
  """Raw strings to WordPiece ids (no special tokens added)."""

  def __init__(
      self,
      *,
      vocab: Sequence[str],
      lower_case: bool,
      unk_token: str = "[UNK]",
      special_tokens: Optional[Sequence[str]] = None,
      name: Optional[str] = None,
  ):
    """Builds the tokenizer.

    Args:
      vocab: The tokens, in id order; pieces that continue a word start with
        "##".
      lower_case: Whether the tokenizer is uncased: it strips accents and
        lowercases (BERT's uncased tokenizers do both).
      unk_token: The token of a word that cannot be split into pieces.
      special_tokens: Tokens matched as written in raw text (default:
        BERT's special tokens that are in the vocabulary).
      name: The module's name.

    Raises:
      TokenizerNotSupportedError: `unk_token` is not in `vocab`, a token is
        longer than `MAX_BYTES_PER_TOKEN`, or an uncased vocabulary holds a
        character that TensorFlow normalizes differently from the tokenizer.
    """
    super().__init__(name=name)
    vocab = list(vocab)
    if unk_token not in vocab:
      raise TokenizerNotSupportedError(
          f"The unknown token {unk_token!r} is not in the vocabulary."
      )
    self.lower_case = lower_case
    self.unk_token = unk_token
    if special_tokens is None:
      special_tokens = SPECIAL_TOKENS
    self.special_tokens = tuple(t for t in special_tokens if t in vocab)
    _check_token_lengths(vocab)
    if lower_case:
      _check_uncased_alphabet(vocab)
    self._removed = f"[{words_lib.char_class(words_lib.REMOVED)}]"
    self._marks = f"[{words_lib.char_class(words_lib.NONSPACING_MARKS)}]"
    # Words over MAX_CHARS_PER_WORD characters become [UNK] below, by
    # character count; the byte limit (4 bytes per character at most) only
    # has to let every shorter word through.
    self._wordpiece = tf_text.FastWordpieceTokenizer(
        vocab=vocab,
        suffix_indicator=CONTINUING_SUBWORD_PREFIX,
        max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
        token_out_type=tf.int32,
        unknown_token=unk_token,
        no_pretokenization=True,
        support_detokenization=False,
    )

  def normalize_words(self, words: tf.Tensor) -> tf.Tensor:
    """Normalizes words of the word splitter as the tokenizer does.

    Args:
      words: string Tensor [num_words].

    Returns:
      string Tensor [num_words]; "" for a word that normalization removes
      (only nonspacing marks, in an uncased tokenizer).
    """
    words = tf.strings.regex_replace(words, self._removed, "")
    if self.lower_case:
      words = tf_text.normalize_utf8(words, "NFD")
      words = tf.strings.regex_replace(words, self._marks, "")
      # One character at a time, as the tokenizer lowercases: ICU's
      # context-sensitive final sigma would give "ς" at a word's end.
      words = tf.strings.regex_replace(words, "Σ", "σ")
      words = tf.strings.lower(words, encoding="utf-8")
    return words

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """Tokenizes raw text.

    Args:
      texts: string Tensor [batch].

    Returns:
      int32 RaggedTensor [batch, (tokens)] of WordPiece ids.
    """
    words = words_lib.split_into_pieces(
        texts,
        strip_accents=self.lower_case,
        special_tokens=self.special_tokens,
    )
    raw = words.flat_values
    normalized = self.normalize_words(raw)
    too_long = (
        tf.strings.length(normalized, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
    )
    # Special tokens and over-long words are each one vocabulary entry.
    is_special = tf.zeros_like(raw, dtype=tf.bool)
    for token in self.special_tokens:
      is_special |= tf.equal(raw, token)
    pieces = self._wordpiece.tokenize(
        tf.where(
            is_special, raw, tf.where(too_long, self.unk_token, normalized)
        )
    )
    return tf.RaggedTensor.from_row_splits(
        pieces, words.row_splits, validate=False
    ).merge_dims(1, 2)


def _check_token_lengths(vocab: Sequence[str]) -> None:
  prefix = CONTINUING_SUBWORD_PREFIX
  for token in vocab:
    piece = token[len(prefix) :] if token.startswith(prefix) else token
    size = len(piece.encode("utf-8"))
    if size > MAX_BYTES_PER_TOKEN:
      raise TokenizerNotSupportedError(
          f"The vocabulary's token {token[:24]!r}... is {size} bytes long; "
          "tensorflow-text's FastWordpieceTokenizer holds tokens of at most "
          f"{MAX_BYTES_PER_TOKEN} bytes (not counting {prefix!r})."
      )


def _check_uncased_alphabet(vocab: Sequence[str]) -> None:
  prefix = CONTINUING_SUBWORD_PREFIX
  alphabet = {
      ord(char)
      for token in vocab
      for char in (token[len(prefix) :] if token.startswith(prefix) else token)
  }
  clashes = sorted(alphabet & code_points(UNCASED_DIVERGENCES))
  if clashes:
    shown = ", ".join(f"U+{c:04X} {chr(c)!r}" for c in clashes[:5])
    raise TokenizerNotSupportedError(
        f"The uncased vocabulary holds {shown}"
        f"{' and more' if len(clashes) > 5 else ''}: TensorFlow lowercases "
        "or decomposes these characters differently from the tokenizer, so "
        "in-graph tokenization would not give the tokenizer's ids."
    )


def spec_from_hf_tokenizer(tokenizer) -> dict[str, Any]:
  """The vocabulary and casing of a `transformers` fast WordPiece tokenizer.

  Args:
    tokenizer: A `transformers` fast tokenizer.

  Returns:
    {"vocab": [tokens in id order], "lower_case": bool}: what `WordPiece`
    needs to give the tokenizer's ids.

  Raises:
    TokenizerNotSupportedError: for a tokenizer `WordPiece` cannot
      reproduce, naming the setting.
  """
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise TokenizerNotSupportedError(
        f"{type(tokenizer).__name__} is not a fast tokenizer; in-graph "
        "tokenization needs a tokenizer.json or vocab.txt."
    )
  spec = json.loads(backend.to_str())
  model = spec.get("model") or {}
  if model.get("type") != "WordPiece":
    raise TokenizerNotSupportedError(
        f"The model's tokenizer is {model.get('type')}-based; in-graph "
        "tokenization supports WordPiece (BERT, DistilBERT, ELECTRA, MiniLM) "
        "tokenizers."
    )
  normalizer = spec.get("normalizer") or {}
  lower_case = _check_normalizer(normalizer)
  pre_tokenizer = (spec.get("pre_tokenizer") or {}).get("type")
  if pre_tokenizer != "BertPreTokenizer":
    raise TokenizerNotSupportedError(
        f"The tokenizer's pre-tokenizer is {pre_tokenizer}; in-graph "
        "tokenization splits words as BertPreTokenizer does."
    )
  for key, expected in (
      ("continuing_subword_prefix", CONTINUING_SUBWORD_PREFIX),
      ("max_input_chars_per_word", MAX_CHARS_PER_WORD),
  ):
    if model.get(key, expected) != expected:
      raise TokenizerNotSupportedError(
          f"The tokenizer's WordPiece {key} is {model.get(key)!r}; in-graph "
          f"tokenization uses BERT's {expected!r}."
      )
  vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
  ids = [i for _, i in vocab]
  if ids != list(range(len(ids))):
    raise TokenizerNotSupportedError("The tokenizer's ids are not 0..N-1.")
  tokens = [token for token, _ in vocab]
  special_tokens = _check_added_tokens(
      spec.get("added_tokens") or [], tokens, lower_case
  )
  return {
      "vocab": tokens,
      "lower_case": lower_case,
      "special_tokens": special_tokens,
  }


def _check_normalizer(normalizer: dict[str, Any]) -> bool:
  """BERT's normalizer's settings; returns whether it is uncased."""
  if normalizer.get("type") != "BertNormalizer":
    raise TokenizerNotSupportedError(
        f"The tokenizer's normalizer is {normalizer.get('type')}; in-graph "
        "tokenization normalizes text as BertNormalizer does."
    )
  for key in ("clean_text", "handle_chinese_chars"):
    if not normalizer.get(key, True):
      raise TokenizerNotSupportedError(
          f"The tokenizer's BertNormalizer has {key}=false; in-graph "
          f"tokenization always does BERT's {key} (true)."
      )
  lower_case = bool(normalizer.get("lowercase", True))
  strip_accents = normalizer.get("strip_accents")
  if strip_accents is not None and strip_accents != lower_case:
    raise TokenizerNotSupportedError(
        f"The tokenizer has lowercase={lower_case} but strip_accents="
        f"{strip_accents}; in-graph tokenization strips accents exactly "
        "when it lowercases."
    )
  return lower_case


def _check_added_tokens(
    added: Sequence[dict[str, Any]], vocab: Sequence[str], lower_case: bool
) -> tuple[str, ...]:
  """The special tokens matched in raw text, as the tokenizer matches them.

  BERT's special tokens in the vocabulary must all be added tokens. A family's
  other special tokens (MPNet's <s>, <mask>) are matched when the tokenizer
  matches them as written (or on normalized text they survive unchanged);
  one it matches with stripped whitespace around it (MPNet's <mask>) is
  read as plain text, the one place the graph differs, and only for text
  that spells it out.

  Raises:
    TokenizerNotSupportedError: an added token that is not special, or a
      BERT special token the tokenizer does not match.
  """
  expected = {t for t in SPECIAL_TOKENS if t in vocab}
  missing = expected - {token.get("content") for token in added}
  if missing:
    raise TokenizerNotSupportedError(
        f"The tokenizer does not match {', '.join(sorted(missing))} in "
        "text; in-graph tokenization matches every one of BERT's special "
        "tokens in the vocabulary."
    )
  matched = []
  for token in added:
    content = token.get("content")
    if not token.get("special"):
      raise TokenizerNotSupportedError(
          f"The tokenizer has the added token {content!r}, which is not a "
          "special token; in-graph tokenization matches special tokens only."
      )
    stripped = any(
        token.get(key) for key in ("single_word", "lstrip", "rstrip")
    )
    changed = (
        token.get("normalized") and lower_case and (content != content.lower())
    )
    if content in expected and stripped:
      raise TokenizerNotSupportedError(
          f"The tokenizer matches {content!r} with the whitespace around "
          "it; in-graph tokenization matches BERT's special tokens as "
          "written."
      )
    # A token matched on normalized text that normalization changes ("[UNK]"
    # lowercased) never matches: both sides read it as plain text.
    if not (stripped or changed):
      matched.append(content)
  return tuple(matched)
