"""WordPiece in the graph, as the model's own BERT-style tokenizer does it.

`WordPiece` normalizes text the way the Hugging Face BERT normalizer and
pre-tokenizer do, then splits words into vocabulary pieces with
tensorflow-text's `FastBertTokenizer` (a fast in-graph WordPiece whose ops
TF Serving links). `spec_from_hf_tokenizer` reads what a fast tokenizer's
`tokenizer.json` says and refuses what this module cannot reproduce.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

# Words longer than this become [UNK], as in BERT's WordPiece.
MAX_CHARS_PER_WORD = 100


class TokenizerNotSupportedError(ValueError):
  """The model's tokenizer cannot be reproduced in the graph."""


class WordPiece(tf.Module):
  """Raw strings to WordPiece ids (no special tokens)."""

  def __init__(
      self,
      *,
      vocab: Sequence[str],
      lower_case: bool,
      unk_token: str = "[UNK]",
      name: Optional[str] = None,
  ):
    super().__init__(name=name)
    self.lower_case = lower_case
    # FastBertTokenizer's own lower_case_nfd_strip_accents normalizer also
    # applies compatibility mappings ("…" -> "...", "½" -> "1⁄2") that BERT's
    # tokenizer does not, so uncased normalization is done here, BERT's way:
    # NFD, drop combining marks (accents), lowercase.
    self._tokenizer = tf_text.FastBertTokenizer(
        vocab=list(vocab),
        token_out_type=tf.int32,
        unknown_token=unk_token,
        max_bytes_per_word=MAX_CHARS_PER_WORD,
    )

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 RaggedTensor [batch, (tokens)] of WordPiece ids."""
    if self.lower_case:
      texts = tf_text.normalize_utf8(texts, "NFD")
      texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
      texts = tf.strings.lower(texts, encoding="utf-8")
    return self._tokenizer.tokenize(texts)


def spec_from_hf_tokenizer(tokenizer) -> dict[str, Any]:
  """The vocabulary and normalization of a `transformers` fast WordPiece
  tokenizer: {"vocab": [...], "lower_case": bool}.

  Raises:
    TokenizerNotSupportedError: for what `WordPiece` cannot reproduce.
  """
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise TokenizerNotSupportedError(
        f"{type(tokenizer).__name__} is not a fast tokenizer; in-graph "
        "tokenization needs a tokenizer.json or vocab.txt."
    )
  spec = json.loads(backend.to_str())
  model = spec.get("model", {})
  if model.get("type") != "WordPiece":
    raise TokenizerNotSupportedError(
        f"The model's tokenizer is {model.get('type')}-based; in-graph "
        "tokenization supports WordPiece (BERT, DistilBERT, ELECTRA, MiniLM) "
        "tokenizers."
    )
  normalizer = spec.get("normalizer") or {}
  lower_case = bool(normalizer.get("lowercase", False))
  strip_accents = normalizer.get("strip_accents")
  if strip_accents is not None and strip_accents != lower_case:
    raise TokenizerNotSupportedError(
        f"The tokenizer lowercases={lower_case} but strip_accents="
        f"{strip_accents}; in-graph tokenization needs both equal."
    )
  vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
  ids = [i for _, i in vocab]
  if ids != list(range(len(ids))):
    raise TokenizerNotSupportedError("The tokenizer's ids are not 0..N-1.")
  return {"vocab": [token for token, _ in vocab], "lower_case": lower_case}
