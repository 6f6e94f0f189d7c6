"""In-graph tokenization and packing that reproduce the model's own tokenizer.

One `TextEncoder` serves both the training pipeline (inside `tf.data`) and the
exported SavedModel (inside its serving signature), so the ids a model is
trained on and the ids it is served with are the same by construction. It is
built from the Hugging Face tokenizer that ships with the checkpoint and is
checked against it on sample texts: `check_matches_tokenizer` refuses a model
whose tokenizer it does not reproduce exactly.

Sub-word tokenizers live beside it (`wordpiece.WordPiece`); this module
packs their ids into model inputs with the model's special tokens and
truncation rule.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from tf_finetune.text.wordpiece import (
    TokenizerNotSupportedError,
    WordPiece,
    spec_from_hf_tokenizer,
)

# Texts the export check always includes: accents, CJK, punctuation runs,
# control characters, an empty string and a word too long to split.
TRICKY_TEXTS = (
    "Hello, World! It's a wonderful day.",
    "naïve café résumé — Ünïcödé",
    "The movie's plot was 12345 unbelievably   bad!!",
    "中文 text and 日本語",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp",
    "",
    "supercalifragilisticexpialidocious" * 4,
    "e-mail: someone@example.com, cost $3.50 (50%)",
    "Wait for it… 9 ½ Weeks, İstanbul, Ångström, ﬁne",
)


class TextEncoder(tf.Module):
  """Raw strings to packed BERT inputs: [CLS] a [SEP] (b [SEP]).

  Truncation follows the Hugging Face "longest_first" rule exactly: with a
  budget of B tokens for two segments of lengths a <= b, the shorter keeps
  min(a, B // 2) and the longer the rest (ties give the extra token to the
  second segment).
  """

  def __init__(
      self,
      *,
      vocab: Sequence[str],
      lower_case: bool,
      max_seq_length: int,
      cls_token: str = "[CLS]",
      sep_token: str = "[SEP]",
      pad_token: str = "[PAD]",
      unk_token: str = "[UNK]",
      name: Optional[str] = None,
  ):
    super().__init__(name=name)
    vocab = list(vocab)
    index = {token: i for i, token in enumerate(vocab)}
    for token in (cls_token, sep_token, pad_token, unk_token):
      if token not in index:
        raise TokenizerNotSupportedError(
            f"Special token {token!r} is not in the vocabulary."
        )
    self.vocab_size = len(vocab)
    self.lower_case = lower_case
    self.max_seq_length = max_seq_length
    self.cls_id = index[cls_token]
    self.sep_id = index[sep_token]
    self.pad_id = index[pad_token]
    self._tokenizer = WordPiece(
        vocab=vocab, lower_case=lower_case, unk_token=unk_token
    )

  @classmethod
  def from_hf_tokenizer(cls, tokenizer, max_seq_length: int) -> TextEncoder:
    """Builds the encoder from a `transformers` fast BERT-style tokenizer."""
    spec = spec_from_hf_tokenizer(tokenizer)
    limit = getattr(tokenizer, "model_max_length", None) or max_seq_length
    if max_seq_length > limit:
      raise ValueError(
          f"--max_seq_length={max_seq_length} exceeds the "
          f"model's maximum of {limit} tokens."
      )
    return cls(
        vocab=spec["vocab"],
        lower_case=spec["lower_case"],
        max_seq_length=max_seq_length,
        cls_token=tokenizer.cls_token,
        sep_token=tokenizer.sep_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
    )

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 RaggedTensor [batch, (tokens)] of WordPiece ids, no specials."""
    return self._tokenizer.tokenize(texts)

  def pack(
      self, first: tf.RaggedTensor, second: Optional[tf.RaggedTensor] = None
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Truncates and joins segments with [CLS]/[SEP].

    Args:
      first: int32 RaggedTensor [batch, (a)] of token ids.
      second: Optional int32 RaggedTensor [batch, (b)].

    Returns:
      (input_ids, token_type_ids), int32 RaggedTensors [batch, (length)] with
      length <= max_seq_length.
    """
    batch = first.nrows()
    cls = tf.fill([batch, 1], tf.constant(self.cls_id, tf.int32))
    sep = tf.fill([batch, 1], tf.constant(self.sep_id, tf.int32))
    if second is None:
      first = _keep_first(first, self.max_seq_length - 2)
      input_ids = tf.concat([cls, first, sep], axis=1)
      return input_ids, tf.zeros_like(input_ids)
    # Two segments share max_seq_length - 3 tokens ([CLS], [SEP], [SEP]).
    budget = self.max_seq_length - 3
    length_a = tf.cast(first.row_lengths(), tf.int32)
    length_b = tf.cast(second.row_lengths(), tf.int32)
    first_is_shorter = length_a <= length_b
    shorter = tf.minimum(
        tf.where(first_is_shorter, length_a, length_b), budget // 2
    )
    keep_a = tf.where(
        first_is_shorter, shorter, tf.minimum(length_a, budget - shorter)
    )
    keep_b = tf.where(
        first_is_shorter, tf.minimum(length_b, budget - shorter), shorter
    )
    first = _keep_first(first, keep_a)
    second = _keep_first(second, keep_b)
    segment_a = tf.concat([cls, first, sep], axis=1)
    segment_b = tf.concat([second, sep], axis=1)
    input_ids = tf.concat([segment_a, segment_b], axis=1)
    type_ids = tf.concat(
        [tf.zeros_like(segment_a), tf.ones_like(segment_b)], axis=1
    )
    return input_ids, type_ids

  def encode_ragged(
      self, texts: tf.Tensor, text_pairs: Optional[tf.Tensor] = None
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    second = None if text_pairs is None else self.tokenize(text_pairs)
    return self.pack(self.tokenize(texts), second)

  def encode(
      self, texts: tf.Tensor, text_pairs: Optional[tf.Tensor] = None
  ) -> dict[str, tf.Tensor]:
    """Raw strings to model inputs padded to the longest in the batch.

    Args:
      texts: string Tensor [batch].
      text_pairs: Optional string Tensor [batch].

    Returns:
      Dict of int32 Tensors [batch, seq_len]: input_ids, attention_mask,
      token_type_ids.
    """
    input_ids, type_ids = self.encode_ragged(texts, text_pairs)
    return pad_inputs(input_ids, type_ids, self.pad_id)


def _keep_first(ids: tf.RaggedTensor, limit) -> tf.RaggedTensor:
  """Keeps the first `limit` tokens of each row (`limit` scalar or [batch])."""
  positions = tf.ragged.range(tf.cast(ids.row_lengths(), tf.int32))
  limit = tf.convert_to_tensor(limit, tf.int32)
  if limit.shape.rank == 1:
    limit = limit[:, tf.newaxis]
  return tf.ragged.boolean_mask(ids, positions < limit)


def pad_inputs(
    input_ids: tf.RaggedTensor, type_ids: tf.RaggedTensor, pad_id: int
) -> dict[str, tf.Tensor]:
  return {
      "input_ids": input_ids.to_tensor(default_value=pad_id),
      "attention_mask": tf.ones_like(input_ids).to_tensor(default_value=0),
      "token_type_ids": type_ids.to_tensor(default_value=0),
  }


def check_matches_tokenizer(
    encoder: TextEncoder,
    tokenizer,
    texts: Sequence[str],
    text_pairs: Optional[Sequence[str]] = None,
) -> None:
  """Raises ValueError unless `encoder` gives `tokenizer`'s ids on `texts`."""
  texts = list(texts)
  pairs = None if text_pairs is None else list(text_pairs)
  if pairs is None:
    expected = tokenizer(
        texts, truncation=True, max_length=encoder.max_seq_length
    )
  else:
    expected = tokenizer(
        texts,
        pairs,
        truncation="longest_first",
        max_length=encoder.max_seq_length,
    )
  got_ids, got_types = encoder.encode_ragged(
      tf.constant(texts, tf.string),
      None if pairs is None else tf.constant(pairs, tf.string),
  )
  got_ids, got_types = got_ids.to_list(), got_types.to_list()
  for i, text in enumerate(texts):
    want_types = expected.get("token_type_ids", [None] * len(texts))[i]
    want_ids = expected["input_ids"][i]
    if got_ids[i] == want_ids and (
        want_types is None or got_types[i] == want_types
    ):
      continue
    at = next(
        (j for j, (a, b) in enumerate(zip(got_ids[i], want_ids)) if a != b),
        min(len(got_ids[i]), len(want_ids)),
    )
    raise ValueError(
        f"In-graph tokenization differs from the model's tokenizer on text "
        f"{text[:80]!r} at token {at}: expected ids {want_ids[at:at + 5]}, "
        f"got {got_ids[i][at:at + 5]}; refusing to train or export a model "
        "that would be served different ids than it was trained on."
    )
