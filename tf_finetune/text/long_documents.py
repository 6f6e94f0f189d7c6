"""Texts longer than one model input: truncation rules and windows.

A text of n sub-word tokens fits a model input of `max_seq_length` tokens
when n <= budget, the budget being `max_seq_length` less the special tokens
(128 - 2 = 126 for BERT's [CLS] a [SEP]). A longer text is either

- truncated: `head` keeps its first `budget` tokens (what the Hugging Face
  tokenizers do), `tail` its last ones, `head_tail` the first
  h = floor(head_share x budget + 1/2) and the last budget - h (Sun et al.,
  2019, "How to Fine-Tune BERT for Text Classification?": 128 + 382 of
  BERT's 510 was best on IMDb and Sogou News); or
- read in windows (chunks): window j holds tokens [j x step, j x step +
  budget) with step = budget - overlap, as the Hugging Face tokenizers'
  overflowing windows (`stride` = overlap), so a text of n tokens takes
  1 + ceil(max(n - budget, 0) / step) windows, the last one possibly
  shorter. At most `max_chunks` windows are read: a document longer than
  they hold, capacity = budget + (max_chunks - 1) x step tokens, is first
  truncated to capacity by the truncation rule.

Everything here runs in the graph on ragged token ids, so the training
pipeline and the exported SavedModel apply the same rule; `reference_windows`
computes the same windows with the model's own Hugging Face tokenizer, and
`TruncationStats` counts what a data set loses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import tensorflow as tf

# The feature that marks a document's real windows in a batch of windows:
# int32 [batch, max_windows], 1 for a window, 0 for padding.
CHUNK_MASK = "chunk_mask"


@dataclasses.dataclass(frozen=True)
class LongDocuments:
  """How a text longer than one model input is read.

  Attributes:
    truncation: "head", "tail" or "head_tail".
    head_share: head_tail: the fraction of the kept tokens from the start.
    chunks: Read long texts in windows instead of truncating them.
    overlap: Tokens a window repeats from the one before (chunks).
    max_chunks: Most windows per text (chunks).
    pooling: How window logits become one: "mean" or "max" (chunks).
  """

  truncation: str = "head"
  head_share: float = 0.25
  chunks: bool = False
  overlap: int = 0
  max_chunks: int = 8
  pooling: str = "mean"

  @classmethod
  def from_settings(cls, settings) -> LongDocuments:
    """From a task's `LongDocumentSettings` (the default for settings
    without them: a task registered without its own)."""
    if not hasattr(settings, "long_document"):
      return cls()
    return cls(
        # Unset (a recipe's choice not made yet, e.g. streamed data): head.
        truncation=settings.truncation or "head",
        head_share=settings.head_share,
        chunks=settings.chunks,
        overlap=settings.chunk_stride,
        max_chunks=settings.max_chunks,
        pooling=settings.chunk_pooling,
    )

  @property
  def is_default(self) -> bool:
    """Head truncation, as the Hugging Face tokenizers truncate."""
    return self.truncation == "head" and not self.chunks

  def head_tokens(self, budget: int) -> int:
    """Tokens kept from the start out of `budget` kept tokens."""
    if self.truncation == "head":
      return budget
    if self.truncation == "tail":
      return 0
    return min(budget, math.floor(self.head_share * budget + 0.5))

  def step(self, budget: int) -> int:
    """Tokens between the starts of two windows."""
    return budget - self.overlap

  def capacity(self, budget: int) -> int:
    """Most tokens of one text the model reads."""
    if not self.chunks:
      return budget
    return budget + (self.max_chunks - 1) * self.step(budget)

  def check_budget(self, budget: int, max_seq_length: int) -> None:
    """Raises ValueError unless windows advance by at least one token."""
    if self.chunks and self.step(budget) < 1:
      raise ValueError(
          f"--chunk_stride={self.overlap} must be smaller than the {budget} "
          f"tokens a window holds (--max_seq_length={max_seq_length} less "
          f"{max_seq_length - budget} special tokens)."
      )

  def num_windows(self, lengths: np.ndarray, budget: int) -> np.ndarray:
    """Windows a text of each of `lengths` tokens takes, before max_chunks."""
    lengths = np.asarray(lengths, np.int64)
    if not self.chunks:
      return np.ones_like(lengths)
    step = self.step(budget)
    return 1 + (np.maximum(lengths - budget, 0) + step - 1) // step


# The Hugging Face tokenizers' rule: keep the first tokens.
HEAD_TRUNCATION = LongDocuments()


def keep(
    ids: tf.RaggedTensor, budget: int, long_documents: LongDocuments
) -> tf.RaggedTensor:
  """At most `budget` tokens of each row, by the truncation rule.

  Args:
    ids: int32 RaggedTensor [batch, (length)] of token ids.
    budget: Tokens kept of a longer row.
    long_documents: The rule (`truncation`, `head_share`).

  Returns:
    int32 RaggedTensor [batch, (min(length, budget))]: the first h and the
    last budget - h tokens of each longer row, in order.
  """
  head = long_documents.head_tokens(budget)
  tail = budget - head
  positions = tf.ragged.range(tf.cast(ids.row_lengths(), tf.int32))
  lengths = tf.cast(ids.row_lengths(), tf.int32)[:, tf.newaxis]
  kept = (positions < head) | (positions >= lengths - tail)
  return tf.ragged.boolean_mask(ids, kept)


def windows(
    ids: tf.RaggedTensor, budget: int, long_documents: LongDocuments
) -> tf.RaggedTensor:
  """Splits each row into windows of at most `budget` tokens.

  Rows longer than `capacity(budget)` are first cut to it by the truncation
  rule; window j of a row then holds its tokens [j x step, j x step +
  budget).

  Args:
    ids: int32 RaggedTensor [batch, (length)] of token ids.
    budget: Tokens per window.
    long_documents: overlap, max_chunks and the truncation rule.

  Returns:
    int32 RaggedTensor [batch, (windows), (tokens)]; every row has at least
    one window (an empty text, one empty window).
  """
  step = long_documents.step(budget)
  ids = keep(ids, long_documents.capacity(budget), long_documents)
  lengths = tf.cast(ids.row_lengths(), tf.int32)
  counts = 1 + (tf.maximum(lengths - budget, 0) + step - 1) // step
  window_index = tf.ragged.range(counts)  # [batch, (windows)]
  starts = window_index.flat_values * step
  row_of_window = tf.cast(window_index.value_rowids(), tf.int32)
  ends = tf.minimum(starts + budget, tf.gather(lengths, row_of_window))
  offsets = tf.gather(tf.cast(ids.row_starts(), tf.int32), row_of_window)
  positions = tf.ragged.range(starts + offsets, ends + offsets)
  tokens = positions.with_flat_values(
      tf.gather(ids.flat_values, positions.flat_values)
  )
  return tf.RaggedTensor.from_row_lengths(tokens, tf.cast(counts, tf.int64))


def pool_windows(
    logits: tf.Tensor,
    document: tf.Tensor,
    num_documents: tf.Tensor,
    pooling: str,
) -> tf.Tensor:
  """One row of logits per document from those of its windows.

  Args:
    logits: float32 [windows, outputs].
    document: int [windows], the document of each window (each document
      has at least one).
    num_documents: scalar int.
    pooling: "mean" or "max" over a document's windows.

  Returns:
    float32 [num_documents, outputs].
  """
  document = tf.cast(document, tf.int32)
  num_documents = tf.cast(num_documents, tf.int32)
  if pooling == "max":
    return tf.math.unsorted_segment_max(logits, document, num_documents)
  if pooling != "mean":
    raise ValueError(f"--chunk_pooling={pooling!r} is not one of mean, max.")
  total = tf.math.unsorted_segment_sum(logits, document, num_documents)
  count = tf.math.unsorted_segment_sum(
      tf.ones_like(document, logits.dtype), document, num_documents
  )
  return total / tf.maximum(count, 1.0)[:, tf.newaxis]


@dataclasses.dataclass(frozen=True)
class TruncationStats:
  """What a set of texts loses to the model's input size.

  Attributes:
    num_texts: Texts (or pairs) in the set.
    num_truncated: Those with tokens the model does not read.
    tokens: Sub-word tokens of all texts, special tokens excluded.
    tokens_lost: Those the model does not read.
    windows_mean: Windows per text (chunks; None when truncating).
    windows_max: The most windows of one text (chunks).
  """

  num_texts: int
  num_truncated: int
  tokens: int
  tokens_lost: int
  windows_mean: Optional[float] = None
  windows_max: Optional[int] = None

  @property
  def lost_share(self) -> float:
    return self.tokens_lost / self.tokens if self.tokens else 0.0

  def describe(
      self, source: str, long_documents: LongDocuments, max_seq_length: int
  ) -> str:
    """One log line."""
    share = 100.0 * self.num_truncated / max(self.num_texts, 1)
    lost = (
        f"losing {self.tokens_lost} of {self.tokens} tokens "
        f"({100.0 * self.lost_share:.1f}%)"
    )
    if self.windows_mean is None:
      return (
          f"{source}: {self.num_truncated} of {self.num_texts} examples "
          f"({share:.1f}%) were longer than --max_seq_length="
          f"{max_seq_length} tokens and were truncated (--truncation="
          f"{long_documents.truncation}), {lost}."
      )
    return (
        f"{source}: windows of --max_seq_length={max_seq_length} tokens "
        f"per document: mean {self.windows_mean:.2f}, max "
        f"{self.windows_max}; {self.num_truncated} of {self.num_texts} "
        f"documents ({share:.1f}%) needed more than --max_chunks="
        f"{long_documents.max_chunks} and were truncated (--truncation="
        f"{long_documents.truncation}), {lost}."
    )


def truncation_stats(
    lengths: np.ndarray, budget: int, long_documents: LongDocuments
) -> TruncationStats:
  """Counts what texts of `lengths` tokens lose with `budget` per input.

  Args:
    lengths: int [num_texts] sub-word tokens of each text (of both texts of
      a pair: their longest-first truncation keeps min(length, budget) too).
    budget: Tokens per model input less the special tokens.
    long_documents: The truncation rule, or windows.
  """
  lengths = np.asarray(lengths, np.int64)
  kept = np.minimum(lengths, long_documents.capacity(budget))
  stats = dict(
      num_texts=int(len(lengths)),
      num_truncated=int(np.sum(kept < lengths)),
      tokens=int(lengths.sum()),
      tokens_lost=int((lengths - kept).sum()),
  )
  if long_documents.chunks:
    counts = np.minimum(
        long_documents.num_windows(lengths, budget), long_documents.max_chunks
    )
    stats.update(
        windows_mean=float(counts.mean()) if len(counts) else 0.0,
        windows_max=int(counts.max()) if len(counts) else 0,
    )
  return TruncationStats(**stats)


def reference_windows(
    tokenizer, texts, max_seq_length: int, long_documents: LongDocuments
) -> list[list[tuple[list[int], list[int]]]]:
  """The windows of `texts` as the model's own fast tokenizer makes them.

  The Hugging Face tokenizer truncates (tokenizers' `Encoding.truncate`,
  from the right or the left, and `Encoding.merge` of a head and a tail),
  splits into overflowing windows with `stride` = overlap, and adds its
  special tokens with its post-processor: an independent computation of
  what `windows` and `keep` do in the graph.

  Returns:
    Per text, its windows as (input_ids, token_type_ids); one window when
    truncating.
  """
  import tokenizers

  backend = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
  backend.no_truncation()
  backend.no_padding()
  budget = max_seq_length - backend.num_special_tokens_to_add(False)
  capacity = long_documents.capacity(budget)
  head = long_documents.head_tokens(capacity)
  found = []
  for text in texts:

    def encode(length, direction, text=text):
      encoding = backend.encode(text, add_special_tokens=False)
      encoding.truncate(length, direction=direction)
      return encoding

    encoding = backend.encode(text, add_special_tokens=False)
    if len(encoding.ids) > capacity:
      parts = []
      if head:
        parts.append(encode(head, "right"))
      if capacity - head:
        parts.append(encode(capacity - head, "left"))
      encoding = tokenizers.Encoding.merge(parts, growing_offsets=True)
    pieces = [encoding]
    if long_documents.chunks:
      encoding.truncate(budget, stride=long_documents.overlap)
      pieces += encoding.overflowing
    packed = [backend.post_process(piece) for piece in pieces]
    found.append([(piece.ids, piece.type_ids) for piece in packed])
  return found
