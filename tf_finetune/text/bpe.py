r"""Byte-level BPE in the graph, as RoBERTa's (GPT-2's) tokenizer does it.

`ByteLevelBPE` reproduces a Hugging Face `ByteLevel` pre-tokenizer with a
BPE model, using only TensorFlow and tensorflow-text ops (regex splits,
string joins, hash tables), which TF Serving links:

1. Pre-tokens. GPT-2's pattern splits text into
   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
   RE2 has no look-ahead, so whitespace is done first: a run of whitespace
   followed by a word gives up its last character, which joins the word if
   it is a space (" word") and is a pre-token of its own otherwise ("\n");
   a run at the end of the text stays whole. What is left of each word is
   split by the pattern without its whitespace alternatives. `\s` is
   Unicode White_Space, as in the Hugging Face pattern.
2. Bytes. Each pre-token's UTF-8 bytes become GPT-2's printable stand-ins
   (a space is "Ġ").
3. Merges. Per pre-token, the adjacent pair with the lowest merge rank is
   merged wherever it occurs (left to right, without overlap), until no
   pair has a rank: the order in which Hugging Face's BPE applies merges.
   Distinct pre-tokens of a batch are merged once each.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf

from tf_finetune.text.wordpiece import TokenizerNotSupportedError

# Unicode White_Space: what `\s` matches in the Hugging Face tokenizers'
# regex engine (RE2's own `\s` is ASCII only).
WHITESPACE = (
    r"\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}"
    r"\x{205F}\x{3000}"
)
# GPT-2's pre-token pattern less its whitespace alternatives.
WORD_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
    rf"| ?[^{WHITESPACE}\p{{L}}\p{{N}}]+"
)
# A merge rank that no pair has.
_NO_RANK = 2**31 - 1


def byte_symbols() -> list[str]:
  """GPT-2's printable stand-in for each byte value 0..255.

  Bytes that are printable Latin-1 characters stand for themselves; the
  others (controls, space, soft hyphen, ...) take the characters from
  U+0100 on, in byte order: the space, byte 32, is the 33rd such byte and
  becomes U+0120 "Ġ".
  """
  printable = (
      list(range(ord("!"), ord("~") + 1))
      + list(range(ord("¡"), ord("¬") + 1))
      + list(range(ord("®"), ord("ÿ") + 1))
  )
  symbols, shifted = [], 0
  for byte in range(256):
    if byte in printable:
      symbols.append(chr(byte))
    else:
      symbols.append(chr(256 + shifted))
      shifted += 1
  return symbols


class ByteLevelBPE(tf.Module):
  """Raw strings to byte-level BPE ids (no special tokens)."""

  def __init__(
      self,
      *,
      vocab: Mapping[str, int],
      merges: Sequence[tuple[str, str]],
      add_prefix_space: bool = False,
      name: Optional[str] = None,
  ):
    super().__init__(name=name)
    missing = [s for s in byte_symbols() if s not in vocab]
    if missing:
      raise TokenizerNotSupportedError(
          f"The byte-level BPE vocabulary lacks {len(missing)} of the 256 "
          f"byte symbols (e.g. {missing[0]!r}); every text must be "
          "representable."
      )
    self.add_prefix_space = add_prefix_space
    self.vocab_size = len(vocab)
    self._bytes = _table([bytes([b]) for b in range(256)], byte_symbols(), "")
    self._ranks = _table(
        [f"{left} {right}" for left, right in merges],
        list(range(len(merges))),
        _NO_RANK,
    )
    self._ids = _table(list(vocab), list(vocab.values()), -1)

  def pre_tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """string RaggedTensor [batch, (pre-tokens)] of the texts [batch]."""
    if self.add_prefix_space:
      texts = tf.strings.regex_replace(texts, r"^([^ ])", r" \1")
    runs = _split_around(texts, f"[{WHITESPACE}]+")
    flat, rows = runs.flat_values, runs.value_rowids()
    is_space = tf.strings.regex_full_match(flat, f"[{WHITESPACE}]+")
    # A whitespace run with a word after it (the next piece of its row).
    same_row_next = tf.concat([rows[1:] == rows[:-1], [False]], axis=0)
    followed = tf.logical_and(is_space, same_row_next)
    length = tf.strings.length(flat, unit="UTF8_CHAR")
    head = tf.strings.substr(
        flat, tf.zeros_like(length), length - 1, "UTF8_CHAR"
    )
    last = tf.strings.substr(
        flat, length - 1, tf.ones_like(length), "UTF8_CHAR"
    )
    gives_space = tf.logical_and(followed, tf.equal(last, " "))
    takes_space = tf.concat([[False], gives_space[:-1]], axis=0)
    first = tf.where(
        followed,
        head,
        tf.where(takes_space, tf.strings.join([" ", flat]), flat),
    )
    alone = tf.where(
        tf.logical_and(followed, tf.logical_not(gives_space)), last, ""
    )
    pieces = tf.reshape(tf.stack([first, alone], axis=1), [-1])
    piece_rows = tf.repeat(rows, 2)
    keep = tf.not_equal(pieces, "")
    chunks = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(pieces, keep),
        tf.boolean_mask(piece_rows, keep),
        nrows=runs.nrows(),
    )
    words = _split_around(chunks.flat_values, WORD_PATTERN)
    return chunks.with_flat_values(words).merge_dims(1, 2)

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 RaggedTensor [batch, (tokens)] of BPE ids."""
    words = self.pre_tokenize(texts)
    distinct, index = tf.unique(words.flat_values)
    symbols = self._bytes.lookup(tf.strings.bytes_split(distinct))
    pieces = self._merge(symbols)
    ids = tf.cast(self._ids.lookup(pieces), tf.int32)
    per_word = tf.gather(ids, index)
    return words.with_flat_values(per_word).merge_dims(1, 2)

  def _merge(self, symbols: tf.RaggedTensor) -> tf.RaggedTensor:
    """Applies the merges to each row of symbols [words, (symbols)]."""
    num_words = symbols.nrows()

    def merge_best_pairs(values, rows, _):
      pair_rows = rows[:-1]
      ranks = self._ranks.lookup(
          tf.strings.join([values[:-1], values[1:]], separator=" ")
      )
      ranks = tf.where(rows[1:] == pair_rows, ranks, _NO_RANK)
      best = tf.math.unsorted_segment_min(ranks, pair_rows, num_words)
      candidate = tf.logical_and(
          ranks == tf.gather(best, pair_rows), ranks < _NO_RANK
      )
      # Occurrences of a word's best pair can overlap only as a run of one
      # symbol repeated ("a a a"): take every other one, from the left.
      # run: how many non-candidates precede a position (and it), so the
      # candidates of one run share it, with the run's opener first.
      is_candidate = tf.cast(candidate, tf.int64)
      run = tf.cumsum(1 - is_candidate)
      position = tf.range(tf.size(run, out_type=tf.int64))
      opener = tf.math.unsorted_segment_min(position, run, tf.size(run) + 1)
      opener = tf.where(
          run == 0, tf.constant(-1, tf.int64), tf.gather(opener, run)
      )
      merge = tf.logical_and(candidate, (position - opener - 1) % 2 == 0)
      merged = tf.where(
          merge, tf.strings.join([values[:-1], values[1:]]), values[:-1]
      )
      merged = tf.concat([merged, values[-1:]], axis=0)
      keep = tf.concat([[True], tf.logical_not(merge)], axis=0)
      return (
          tf.boolean_mask(merged, keep),
          tf.boolean_mask(rows, keep),
          tf.reduce_any(merge),
      )

    values, rows, _ = tf.while_loop(
        lambda values, rows, changed: changed,
        merge_best_pairs,
        (
            symbols.flat_values,
            symbols.value_rowids(),
            tf.size(symbols.flat_values) > 0,
        ),
        shape_invariants=(
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape([]),
        ),
    )
    return tf.RaggedTensor.from_value_rowids(values, rows, nrows=num_words)


def _split_around(texts: tf.Tensor, pattern: str) -> tf.RaggedTensor:
  """Splits texts [n] into the matches of `pattern` and the text between.

  tensorflow-text's regex_split stops at a NUL character; this marks each
  match's ends with the byte 0xFF, which no UTF-8 text holds, and splits
  on it.
  """
  marked = tf.strings.regex_replace(texts, pattern, b"\xff\\0\xff")
  pieces = tf.strings.split(marked, sep=b"\xff")
  return tf.ragged.boolean_mask(pieces, tf.not_equal(pieces, ""))


def _table(keys, values, default) -> tf.lookup.StaticHashTable:
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(keys, tf.string), tf.constant(values)
      ),
      default_value=default,
  )


def spec_from_hf_tokenizer(spec: Mapping[str, Any]) -> dict[str, Any]:
  """`ByteLevelBPE`'s arguments from a fast tokenizer's `tokenizer.json`.

  Raises:
    TokenizerNotSupportedError: for what `ByteLevelBPE` cannot reproduce.
  """
  model = spec.get("model") or {}
  pre_tokenizer = spec.get("pre_tokenizer") or {}
  if pre_tokenizer.get("type") == "Sequence":
    inner = pre_tokenizer.get("pretokenizers", [])
    pre_tokenizer = inner[0] if len(inner) == 1 else {"type": "Sequence"}
  if pre_tokenizer.get("type") != "ByteLevel" or not pre_tokenizer.get(
      "use_regex", True
  ):
    raise TokenizerNotSupportedError(
        "The BPE tokenizer's pre-tokenizer is "
        f"{pre_tokenizer.get('type')}; in-graph BPE supports the byte-level "
        "one with GPT-2's pattern (RoBERTa, GPT-2, DeBERTa)."
    )
  if spec.get("normalizer"):
    raise TokenizerNotSupportedError(
        f"The byte-level BPE tokenizer normalizes text "
        f"({spec['normalizer'].get('type')}); in-graph BPE supports "
        "tokenizers without a normalizer (RoBERTa, GPT-2, DeBERTa)."
    )
  unsupported = {
      option: model.get(option)
      for option in (
          "dropout",
          "continuing_subword_prefix",
          "end_of_word_suffix",
          "byte_fallback",
          "ignore_merges",
      )
      if model.get(option)
  }
  if unsupported:
    raise TokenizerNotSupportedError(
        f"The BPE model sets {unsupported}; in-graph BPE supports plain "
        "byte-level merges."
    )
  merges = [
      tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
      for merge in model.get("merges", [])
  ]
  return {
      "vocab": dict(model.get("vocab", {})),
      "merges": merges,
      "add_prefix_space": bool(pre_tokenizer.get("add_prefix_space", False)),
  }
