"""Token ids back to text in the graph, as a Hugging Face tokenizer's
`decode(ids, skip_special_tokens=True)` does it.

The generated ids of a translator become text inside its SavedModel. This
module reproduces the `tokenizer.json` decoders of the three tokenizer types
that `tokenization` reads raw text with:

- WordPiece (BERT): the first piece as it is; a later piece that starts
  with "##" loses it and joins the piece before, any other gets a space in
  front; with the decoder's `cleanup`, each piece then loses the space
  before punctuation and English contractions (" ." -> ".", " 's" -> "'s").
- Byte-level BPE (GPT-2, RoBERTa, BART): the pieces' characters are GPT-2's
  stand-ins for bytes; joined and mapped back, the bytes are read as UTF-8
  (invalid sequences become U+FFFD, as Rust's `from_utf8_lossy` does).
- Metaspace (SentencePiece, T5): "▁" is a space; the first piece loses the
  one the pre-tokenizer put in front of the text.

Special tokens are dropped first. Where the tokenizer cleans up
tokenization spaces (`clean_up_tokenization_spaces`), the joined text is
cleaned as `transformers` does. `check_matches_decode` compares with the
tokenizer's own `decode` before a SavedModel is written.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.text import bpe
from tf_finetune.text.tokenization import tokenizer_json
from tf_finetune.text.wordpiece import TokenizerNotSupportedError

WORDPIECE, BYTE_LEVEL, METASPACE = "WordPiece", "ByteLevel", "Metaspace"
WORD_START = "\u2581"

# The `tokenizers` WordPiece decoder's cleanup of each piece, in order.
PIECE_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
# `transformers`' clean_up_tokenization of the whole text: the same, in the
# same order, without the decoder's " do not" -> " don't".
TEXT_CLEANUP = tuple(pair for pair in PIECE_CLEANUP if pair[0] != " do not")


def _replace_all(texts: tf.Tensor, replacements) -> tf.Tensor:
  """Literal replacements, each over the whole string, left to right."""
  for old, new in replacements:
    texts = tf.strings.regex_replace(texts, _literal(old), new)
  return texts


def _literal(text: str) -> str:
  return "".join(c if c.isalnum() or c == " " else "\\" + c for c in text)


def decoder_kind(tokenizer) -> tuple[str, dict]:
  """(WORDPIECE, BYTE_LEVEL or METASPACE, the decoder's settings).

  Raises:
    TokenizerNotSupportedError: for other decoders, naming them.
  """
  decoder = tokenizer_json(tokenizer).get("decoder") or {}
  steps = (
      decoder.get("decoders", [])
      if decoder.get("type") == "Sequence"
      else [decoder]
  )
  kinds = [step.get("type") for step in steps]
  if kinds == [WORDPIECE] and decoder.get("prefix", "##") == "##":
    return WORDPIECE, {"cleanup": bool(decoder.get("cleanup", True))}
  if kinds == [BYTE_LEVEL]:
    return BYTE_LEVEL, {}
  if kinds == [METASPACE] and decoder.get("replacement") == WORD_START:
    return METASPACE, {
        "strip_first": decoder.get("prepend_scheme", "always") != "never"
        and decoder.get("add_prefix_space", True)
    }
  raise TokenizerNotSupportedError(
      f"{type(tokenizer).__name__} decodes with {' + '.join(map(str, kinds))}"
      "; in-graph decoding supports WordPiece, ByteLevel and Metaspace "
      "decoders."
  )


class Detokenizer(tf.Module):
  """Generated ids to text, in the graph."""

  def __init__(
      self,
      *,
      tokens: Sequence[str],
      special_ids: Sequence[int],
      kind: str,
      cleanup_pieces: bool = False,
      strip_first: bool = False,
      clean_up_spaces: bool = False,
      name: str | None = None,
  ):
    """Builds the detokenizer.

    Args:
      tokens: Each id's token, in id order.
      special_ids: Ids dropped before decoding ([CLS], [SEP], [PAD], ...).
      kind: WORDPIECE, BYTE_LEVEL or METASPACE.
      cleanup_pieces: WordPiece's per-piece cleanup.
      strip_first: Metaspace: the first piece loses its leading space.
      clean_up_spaces: The tokenizer's `clean_up_tokenization_spaces`.
      name: The module's name.
    """
    super().__init__(name=name)
    self.kind = kind
    self.cleanup_pieces = cleanup_pieces
    self.strip_first = strip_first
    self.clean_up_spaces = clean_up_spaces
    self._tokens = tf.constant(list(tokens), tf.string)
    keep = np.ones(len(tokens), bool)
    keep[[i for i in special_ids if 0 <= i < len(tokens)]] = False
    self._keep = tf.constant(keep)
    if kind == BYTE_LEVEL:
      symbols = bpe.byte_symbols()
      self._bytes = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(symbols),
              tf.constant([bytes([b]) for b in range(256)], tf.string),
          ),
          default_value=b"",
      )

  @classmethod
  def from_hf_tokenizer(cls, tokenizer) -> Detokenizer:
    """Decodes as `tokenizer.decode(ids, skip_special_tokens=True)`."""
    kind, settings = decoder_kind(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return cls(
        tokens=[token if token is not None else "" for token in tokens],
        special_ids=tokenizer.all_special_ids,
        kind=kind,
        cleanup_pieces=settings.get("cleanup", False),
        strip_first=settings.get("strip_first", False),
        clean_up_spaces=bool(
            getattr(tokenizer, "clean_up_tokenization_spaces", False)
        ),
    )

  def detokenize(self, ids: tf.RaggedTensor) -> tf.Tensor:
    """Texts (string [batch]) of int RaggedTensor ids [batch, (tokens)]."""
    ids = tf.cast(ids, tf.int32)
    size = tf.shape(self._tokens, out_type=tf.int32)[0]
    in_vocab = tf.logical_and(ids >= 0, ids < size)
    ids = tf.ragged.boolean_mask(ids, in_vocab)
    ids = tf.ragged.boolean_mask(
        ids, tf.ragged.map_flat_values(tf.gather, self._keep, ids)
    )
    pieces = tf.ragged.map_flat_values(tf.gather, self._tokens, ids)
    positions = tf.ragged.range(pieces.row_lengths())
    first = positions == 0
    if self.kind == WORDPIECE:
      values = pieces.flat_values
      continues = tf.strings.regex_full_match(values, r"##(?s:.*)")
      later = tf.logical_not(first.flat_values)
      values = tf.where(
          tf.logical_and(later, continues),
          tf.strings.regex_replace(values, "^##", "", replace_global=False),
          tf.where(later, tf.strings.join([" ", values]), values),
      )
      if self.cleanup_pieces:
        values = _replace_all(values, PIECE_CLEANUP)
      texts = tf.strings.reduce_join(pieces.with_flat_values(values), axis=1)
    elif self.kind == METASPACE:
      values = tf.strings.regex_replace(pieces.flat_values, WORD_START, " ")
      if self.strip_first:
        values = tf.where(
            first.flat_values,
            tf.strings.regex_replace(values, "^ ", "", replace_global=False),
            values,
        )
      texts = tf.strings.reduce_join(pieces.with_flat_values(values), axis=1)
    else:
      symbols = tf.strings.unicode_split(
          tf.strings.reduce_join(pieces, axis=1), "UTF-8"
      )
      raw = tf.strings.reduce_join(
          tf.ragged.map_flat_values(self._bytes.lookup, symbols), axis=1
      )
      texts = tf.strings.unicode_transcode(
          raw,
          input_encoding="UTF-8",
          output_encoding="UTF-8",
          errors="replace",
          replacement_char=0xFFFD,
      )
    if self.clean_up_spaces:
      texts = _replace_all(texts, TEXT_CLEANUP)
    return texts


def check_matches_decode(
    detokenizer: Detokenizer, tokenizer, rows: Sequence[Sequence[int]]
) -> None:
  """Raises ValueError unless `detokenizer` gives `tokenizer.decode`'s
  texts for every row of ids."""
  rows = [list(row) for row in rows]
  expected = tokenizer.batch_decode(rows, skip_special_tokens=True)
  got = [
      text.decode("utf-8")
      for text in detokenizer.detokenize(
          tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1)
      ).numpy()
  ]
  for row, want, have in zip(rows, expected, got):
    if want != have:
      raise ValueError(
          f"In-graph decoding of ids {row[:12]} gives {have[:80]!r} but the "
          f"model's tokenizer gives {want[:80]!r}; refusing to export a "
          "server that would write other translations."
      )
