"""SentencePiece in the graph, as the model's fast tokenizer runs it.

ALBERT, XLM-RoBERTa, CamemBERT, DeBERTa-v2/v3 and RemBERT ship a
SentencePiece model (`spiece.model`, `sentencepiece.bpe.model`,
`spm.model`), which their Hugging Face fast tokenizers convert into a
`tokenizer.json`. `SentencePiece` runs the model file itself with
tensorflow-text's `SentencepieceTokenizer` (an op TF Serving links) and
reproduces the fast tokenizer around it:

- the normalizers the fast tokenizer applies before the model's own
  character map (ALBERT's quote replacements, NFKD, accent stripping and
  lower-casing; DeBERTa's stripping) run first as TensorFlow ops;
- the character map and the whitespace handling (one "▁" before each
  word, runs of spaces collapsed) are the SentencePiece model's;
- a text that still ends in whitespace gets the trailing "▁" piece the
  fast tokenizer emits when nothing strips it (ALBERT);
- SentencePiece ids become the tokenizer's ids by piece: XLM-RoBERTa's
  fairseq layout shifts every piece by one and moves <unk>, CamemBERT's
  by four.

`spec_from_hf_tokenizer` refuses what it cannot reproduce.
"""

from __future__ import annotations

import base64
import functools
import unicodedata
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tf_finetune.text.bpe import WHITESPACE
from tf_finetune.text.wordpiece import TokenizerNotSupportedError

# The word-start marker of SentencePiece vocabularies.
WORD_START = "\u2581"
# SentencePiece reads a text as a C string, which ends at a NUL character;
# the fast tokenizer reads NUL as an unknown character. A noncharacter
# (never assigned, in no vocabulary) is unknown to the model too.
_NUL_STAND_IN = "\ufdd0"
_UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


class SentencePiece(tf.Module):
  """Raw strings to the ids of a SentencePiece-based fast tokenizer."""

  def __init__(
      self,
      *,
      model_proto: bytes,
      id_map: Sequence[int],
      normalizers: Sequence[Mapping[str, Any]] = (),
      trailing_space_id: Optional[int] = None,
      trailing_space: str = f"[{WHITESPACE}]",
      sort_repeats: bool = False,
      name: Optional[str] = None,
  ):
    """Args:
    model_proto: The SentencePiece model file's bytes.
    id_map: The tokenizer's id of each SentencePiece id.
    normalizers: `tokenizer.json` normalizers to apply first (Replace,
      NFC/NFD/NFKC/NFKD, StripAccents, Lowercase, Strip).
    trailing_space_id: Appended to texts that end in whitespace.
    trailing_space: RE2 pattern of an ending that is whitespace once the
      character map has run (e.g. a zero-width space becomes a space).
    sort_repeats: Order the pieces of a repeated character shortest first
      (see `_sort_repeats`); for unigram models.
    """
    super().__init__(name=name)
    for step in normalizers:
      _check_normalizer(step)
    self.normalizers = [dict(step) for step in normalizers]
    self.trailing_space_id = trailing_space_id
    self.trailing_space = trailing_space
    self.vocab_size = len(id_map)
    self._model = tf_text.SentencepieceTokenizer(
        model=model_proto, out_type=tf.int32
    )
    self._id_map = tf.constant(list(id_map), tf.int32)
    self._repeat_units = None
    if sort_repeats:
      # Per SentencePiece id: the character a piece repeats ("mm": "m")
      # as a code point, -1 for other pieces; and the piece's length.
      units, lengths = [], []
      for piece in _parse_model(model_proto).pieces:
        text = piece.piece
        repeats = bool(text) and WORD_START not in text and len(set(text)) == 1
        units.append(ord(text[0]) if repeats else -1)
        lengths.append(len(text))
      self._repeat_units = tf.constant(units, tf.int64)
      self._piece_lengths = tf.constant(lengths, tf.int64)

  def normalize(self, texts: tf.Tensor) -> tf.Tensor:
    """The fast tokenizer's normalizers before the character map."""
    for step in self.normalizers:
      kind = step["type"]
      if kind == "Replace":
        pattern = step["pattern"]
        regex = pattern.get("Regex") or _re2_literal(pattern["String"])
        content = step["content"].replace("\\", "\\\\")
        texts = tf.strings.regex_replace(texts, regex, content)
      elif kind in _UNICODE_FORMS:
        texts = tf_text.normalize_utf8(texts, kind)
      elif kind == "StripAccents":  # Every combining mark (Mn, Mc, Me).
        texts = tf.strings.regex_replace(texts, r"\p{M}", "")
      elif kind == "Lowercase":
        texts = tf.strings.lower(texts, encoding="utf-8")
      else:  # Strip
        if step.get("strip_left", True):
          texts = tf.strings.regex_replace(texts, f"^[{WHITESPACE}]+", "")
        if step.get("strip_right", True):
          texts = tf.strings.regex_replace(texts, f"[{WHITESPACE}]+$", "")
    return texts

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 RaggedTensor [batch, (tokens)] of the tokenizer's ids."""
    texts = self.normalize(
        tf.strings.regex_replace(texts, "\x00", _NUL_STAND_IN)
    )
    pieces = self._model.tokenize(texts)
    if self._repeat_units is not None:
      pieces = self._sort_repeats(pieces)
    ids = pieces.with_flat_values(tf.gather(self._id_map, pieces.flat_values))
    if self.trailing_space_id is None:
      return ids
    ends_in_space = tf.strings.regex_full_match(
        texts, f"(?s).*{self.trailing_space}"
    )
    trailing = tf.RaggedTensor.from_row_lengths(
        tf.fill(
            [tf.reduce_sum(tf.cast(ends_in_space, tf.int32))],
            self.trailing_space_id,
        ),
        tf.cast(ends_in_space, tf.int64),
    )
    return tf.concat([ids, trailing], axis=1)

  def _sort_repeats(self, pieces: tf.RaggedTensor) -> tf.RaggedTensor:
    """Puts each run of pieces of one repeated character shortest first.

    "Hmmm" with pieces "m" and "mm" splits as "▁H" + "m" + "mm" or as
    "▁H" + "mm" + "m", with equal scores. The fast tokenizer's Viterbi
    keeps, at each end, the piece that starts earliest: "m mm", and "m mm
    mm" for "mmmmm"; the SentencePiece library in tensorflow-text breaks
    such ties in another order ("mm mm m"). Only the order differs, so
    sorting such runs by length gives the fast tokenizer's pieces.
    """
    flat, rows = pieces.flat_values, pieces.value_rowids()
    units = tf.gather(self._repeat_units, flat)
    continues_run = tf.concat(
        [
            [False],
            (units[1:] >= 0)
            & (units[1:] == units[:-1])
            & (rows[1:] == rows[:-1]),
        ],
        axis=0,
    )
    # Runs numbered in order; pieces outside a run are runs of one.
    run = tf.cumsum(1 - tf.cast(continues_run, tf.int64))
    longest = tf.reduce_max(self._piece_lengths) + 1
    key = run * longest + tf.gather(self._piece_lengths, flat)
    return pieces.with_flat_values(
        tf.gather(flat, tf.argsort(key, stable=True))
    )


def _parse_model(model_proto: bytes):
  from sentencepiece import sentencepiece_model_pb2

  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  return proto


def _re2_literal(text: str) -> str:
  return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def _check_normalizer(step: Mapping[str, Any]) -> None:
  kind = step.get("type")
  if kind in ("Replace", "StripAccents", "Lowercase", "Strip"):
    return
  if kind in _UNICODE_FORMS:
    return
  raise TokenizerNotSupportedError(
      f"The SentencePiece tokenizer's normalizer {kind} is not reproduced "
      "in the graph."
  )


@functools.lru_cache(maxsize=1)
def _control_and_space_characters() -> tuple[str, ...]:
  """Every control, format and separator character (Cc, Cf, Z*)."""
  categories = ("Cc", "Cf", "Zs", "Zl", "Zp")
  return tuple(
      chr(code)
      for code in range(0x110000)
      if unicodedata.category(chr(code)) in categories
  )


def _trailing_space_pattern(normalizer) -> str:
  """RE2 pattern of a text ending that the fast tokenizer's normalizer
  (all of it, character map included) turns into trailing whitespace.

  A character the map turns into a space ends a text in space (a
  zero-width space does); one it deletes (a soft hyphen) leaves the
  ending to the character before it.
  """
  spaces, deleted = [], []
  if normalizer is None:
    return f"[{WHITESPACE}]"
  for char in _control_and_space_characters():
    image = normalizer.normalize_str(f"x{char}x")[1:-1]
    if not image:
      deleted.append(char)
    elif not image.replace(WORD_START, " ").strip():
      spaces.append(char)
  pattern = f"[{WHITESPACE}{_code_points(spaces)}]"
  return pattern + (f"[{_code_points(deleted)}]*" if deleted else "")


def _code_points(chars) -> str:
  """RE2 escapes of characters, for a character class."""
  return "".join(f"\\x{{{ord(c):X}}}" for c in chars)


def _is_space_collapse(step: Mapping[str, Any]) -> bool:
  """Replace(" {2,}", " " or "▁"): what SentencePiece does to spaces."""
  return (
      step.get("type") == "Replace"
      and step.get("pattern", {}).get("Regex") == " {2,}"
      and step.get("content") in (" ", WORD_START)
  )


def spec_from_hf_tokenizer(tokenizer, spec: Mapping[str, Any]) -> dict:
  """`SentencePiece`'s arguments for a SentencePiece-based fast tokenizer.

  Args:
    tokenizer: The `transformers` fast tokenizer (its `vocab_file` is the
      SentencePiece model).
    spec: Its `tokenizer.json`, parsed.

  Raises:
    TokenizerNotSupportedError: for what `SentencePiece` cannot reproduce.
  """
  from sentencepiece import sentencepiece_model_pb2

  name = type(tokenizer).__name__
  model_file = getattr(tokenizer, "vocab_file", None)
  if not model_file or not str(model_file).endswith(".model"):
    raise TokenizerNotSupportedError(
        f"{name} came without its SentencePiece model file (e.g. "
        "spiece.model, sentencepiece.bpe.model, spm.model); in-graph "
        "tokenization runs that model."
    )
  with tf.io.gfile.GFile(model_file, "rb") as f:
    model_proto = f.read()
  proto = _parse_model(model_proto)
  normalizer = proto.normalizer_spec
  if not (
      normalizer.add_dummy_prefix
      and normalizer.remove_extra_whitespaces
      and normalizer.escape_whitespaces
  ):
    raise TokenizerNotSupportedError(
        f"{model_file} does not add a dummy prefix, remove extra whitespace "
        "and escape whitespace, as the fast tokenizer's Metaspace does."
    )

  pre_tokenizer = spec.get("pre_tokenizer") or {}
  if pre_tokenizer.get("type") == "Sequence":
    inner = pre_tokenizer.get("pretokenizers", [])
    pre_tokenizer = inner[0] if len(inner) == 1 else {"type": "Sequence"}
  if not (
      pre_tokenizer.get("type") == "Metaspace"
      and pre_tokenizer.get("replacement") == WORD_START
      and pre_tokenizer.get("split", True)
      and pre_tokenizer.get("prepend_scheme", "always") in ("always", "first")
  ):
    raise TokenizerNotSupportedError(
        f"{name}'s pre-tokenizer is {spec.get('pre_tokenizer')}; in-graph "
        "SentencePiece supports a lone Metaspace pre-tokenizer (DeBERTa-v2 "
        "tokenizers with split_by_punct=True split on punctuation first)."
    )

  steps = (spec.get("normalizer") or {}).get("normalizers")
  if steps is None:
    steps = [spec["normalizer"]] if spec.get("normalizer") else []
  kinds = [step.get("type") for step in steps]
  if "Precompiled" in kinds:
    at = kinds.index("Precompiled")
    charsmap = base64.b64decode(steps[at].get("precompiled_charsmap") or "")
    before, after = steps[:at], steps[at + 1 :]
  else:
    charsmap, before, after = b"", steps, []
  if charsmap != normalizer.precompiled_charsmap:
    raise TokenizerNotSupportedError(
        f"{name}'s character map differs from that of {model_file}."
    )
  if not any(
      _is_space_collapse(step) for step in (after if charsmap else steps)
  ):
    raise TokenizerNotSupportedError(
        f"{name} keeps runs of spaces (tabs, newlines, no-break spaces once "
        "its character map has run) as separate '▁' pieces, where its "
        "SentencePiece model collapses them; in-graph SentencePiece needs "
        "the fast tokenizer to collapse them too."
    )
  strips_right = False
  for step in after:
    if step.get("type") == "Strip":
      strips_right = strips_right or step.get("strip_right", True)
    elif not _is_space_collapse(step):
      raise TokenizerNotSupportedError(
          f"{name} normalizes with {step.get('type')} after the character "
          "map; in-graph SentencePiece supports stripping and collapsing "
          "spaces there."
      )

  vocab = tokenizer.get_vocab()
  model = spec.get("model") or {}
  if model.get("type") == "Unigram":
    unk_id = model.get("unk_id")
  else:
    unk_id = vocab.get(model.get("unk_token"))
  if unk_id is None:
    unk_id = tokenizer.unk_token_id
  pieces = sentencepiece_model_pb2.ModelProto.SentencePiece
  emitted = (pieces.NORMAL, pieces.USER_DEFINED, pieces.BYTE)
  id_map = []
  for piece in proto.pieces:
    if piece.type == pieces.UNKNOWN:
      id_map.append(unk_id)
    elif piece.piece in vocab:
      id_map.append(vocab[piece.piece])
    elif piece.type in emitted:
      raise TokenizerNotSupportedError(
          f"The piece {piece.piece!r} of {model_file} is not in {name}'s "
          "vocabulary; the two do not belong together."
      )
    else:  # Control and unused pieces are never emitted.
      id_map.append(unk_id)
  return {
      "model_proto": model_proto,
      "id_map": id_map,
      "normalizers": before,
      "trailing_space_id": (
          None if strips_right else vocab.get(WORD_START, unk_id)
      ),
      "trailing_space": _trailing_space_pattern(
          tokenizer.backend_tokenizer.normalizer
      ),
      "sort_repeats": model.get("type") == "Unigram",
  }
