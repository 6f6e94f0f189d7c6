"""Windows: a question and a long context as model inputs, and each
window's answer targets (see the package docstring).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.data import pipeline
from tf_finetune.text import words as words_lib
from tf_finetune.text.tokenization import TextEncoder


@dataclasses.dataclass(frozen=True)
class QuestionAnsweringFeatures(pipeline.EncodedExamples):
  """Windows of question-context pairs: one model input per window.

  The inherited fields hold one row per window; these map windows back to
  their examples.

  Attributes:
    window_example: int32 [num_windows] example of each window.
    window_start: int32 [num_windows] the window's first context token.
    window_length: int32 [num_windows] context tokens in the window.
    window_offset: int32 [num_windows] position of the window's first
      context token in its input (question tokens + 2).
    token_starts: Per example, int32 [tokens] character start of each
      context token.
    token_ends: Per example, int32 [tokens] character end of each token.
    contexts: The contexts, for the answers' text.
  """

  window_example: Optional[np.ndarray] = None
  window_start: Optional[np.ndarray] = None
  window_length: Optional[np.ndarray] = None
  window_offset: Optional[np.ndarray] = None
  token_starts: Optional[list] = None
  token_ends: Optional[list] = None
  contexts: Optional[list] = None

  @property
  def num_examples(self) -> int:
    return len(self.contexts)


# Windows and offsets, in TensorFlow (training, evaluation and serving).
def tokenize_context(
    encoder: TextEncoder, contexts: tf.Tensor
) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
  """Tokens of each context with their character spans.

  Args:
    encoder: The model's tokenizer.
    contexts: string Tensor [batch].

  Returns:
    (token ids, character starts, character ends), int32 RaggedTensors
    [batch, (tokens)]; a token's span is its word's.
  """
  # The tokenizer's own words, so that a word's pieces are the pieces the
  # tokenizer gives it in running text.
  words, char_starts, char_ends = words_lib.split_words(
      contexts, strip_accents=encoder.lower_case
  )
  pieces = tf.RaggedTensor.from_row_splits(
      encoder.tokenize(words.flat_values), words.row_splits
  )
  tokens = pieces.merge_dims(1, 2)
  per_word = pieces.row_lengths(axis=2).flat_values
  token_starts = tokens.with_flat_values(
      tf.repeat(char_starts.flat_values, per_word)
  )
  token_ends = tokens.with_flat_values(
      tf.repeat(char_ends.flat_values, per_word)
  )
  return tokens, token_starts, token_ends


def question_budget(max_seq_length: int, max_question_length: int) -> int:
  """Question tokens kept: the flag's, and at most half the sequence."""
  return max(1, min(max_question_length, (max_seq_length - 3) // 2))


def make_windows(
    question_ids: tf.RaggedTensor,
    context_ids: tf.RaggedTensor,
    *,
    max_seq_length: int,
    doc_stride: int,
    max_question_length: int,
    cls_id: int,
    sep_id: int,
) -> dict[str, Any]:
  """Packs each question with each window of its context.

  Args:
    question_ids: int32 RaggedTensor [batch, (question tokens)].
    context_ids: int32 RaggedTensor [batch, (context tokens)].
    max_seq_length: Tokens per window input, [CLS] and [SEP]s included.
    doc_stride: Tokens from one window's start to the next's.
    max_question_length: Question tokens kept (see `question_budget`).
    cls_id, sep_id: The special tokens.

  Returns:
    input_ids and token_type_ids (int32 RaggedTensors [windows, (length)]),
    and int32 [windows] Tensors: example, start, length, offset (see
    `QuestionAnsweringFeatures`).
  """
  question_ids = question_ids[
      :, : question_budget(max_seq_length, max_question_length)
  ]
  question_length = tf.cast(question_ids.row_lengths(), tf.int32)
  context_length = tf.cast(context_ids.row_lengths(), tf.int32)
  budget = max_seq_length - question_length - 3
  stride = tf.minimum(doc_stride, budget)
  # Windows after the first cover the rest, `stride` tokens at a time:
  # 230 tokens, budget 100, stride 64: 1 + ceil(130 / 64) = 4 windows.
  num_windows = (
      1 + (tf.maximum(context_length - budget, 0) + stride - 1) // stride
  )
  example = tf.repeat(tf.range(tf.size(num_windows)), num_windows)
  index = tf.ragged.range(num_windows).flat_values
  start = index * tf.gather(stride, example)
  length = tf.minimum(
      tf.gather(budget, example), tf.gather(context_length, example) - start
  )
  first = tf.gather(tf.cast(context_ids.row_splits[:-1], tf.int32), example)
  positions = tf.ragged.range(first + start, first + start + length)
  window_ids = tf.gather(context_ids.flat_values, positions)
  questions = tf.gather(question_ids, example)
  num = tf.size(example)
  cls = tf.fill([num, 1], tf.constant(cls_id, tf.int32))
  sep = tf.fill([num, 1], tf.constant(sep_id, tf.int32))
  segment_a = tf.concat([cls, questions, sep], axis=1)
  segment_b = tf.concat([window_ids, sep], axis=1)
  return {
      "input_ids": tf.concat([segment_a, segment_b], axis=1),
      "token_type_ids": tf.concat(
          [tf.zeros_like(segment_a), tf.ones_like(segment_b)], axis=1
      ),
      "example": example,
      "start": start,
      "length": length,
      "offset": tf.gather(question_length, example) + 2,
  }


def window_targets(
    answers: Sequence[Sequence[dict]],
    token_starts: Sequence[np.ndarray],
    token_ends: Sequence[np.ndarray],
    window_example,
    window_start,
    window_length,
    window_offset,
) -> np.ndarray:
  """int32 [windows, 2] start and end positions of each window's answer.

  The first answer of each example is the target; a window that does not
  hold all of it, and an unanswerable question, point at [CLS] (0).
  """
  spans = []
  for answer_list, starts, ends in zip(answers, token_starts, token_ends):
    if not answer_list:
      spans.append(None)
      continue
    begin = answer_list[0]["answer_start"]
    finish = begin + len(answer_list[0]["text"])
    # First token ending after the answer begins, last one starting before
    # it ends.
    touching = np.nonzero((ends > begin) & (starts < finish))[0]
    spans.append(
        (int(touching[0]), int(touching[-1])) if len(touching) else None
    )
  targets = np.zeros((len(window_example), 2), np.int32)
  for w, example in enumerate(window_example):
    span = spans[example]
    if span is None:
      continue
    first, last = span
    start = window_start[w]
    if first >= start and last < start + window_length[w]:
      targets[w] = (
          window_offset[w] + first - start,
          window_offset[w] + last - start,
      )
  return targets
