"""From start and end logits to answer spans and their text, the same
TensorFlow code in evaluation and in the export.
"""

from __future__ import annotations

import tensorflow as tf

# Scores of positions that cannot start or end an answer.
IMPOSSIBLE_SCORE = -1e30


def best_spans(
    start_logits,
    end_logits,
    *,
    window_example,
    window_start,
    window_length,
    window_offset,
    num_examples,
    n_best_size: int,
    max_answer_length: int,
) -> dict[str, tf.Tensor]:
  """The best answer span of each example over all its windows.

  Args:
    start_logits, end_logits: float32 [windows, seq_len].
    window_example, window_start, window_length, window_offset: int32
      [windows] (see `QuestionAnsweringFeatures`).
    num_examples: Examples the windows belong to.
    n_best_size: Start and end candidates per window.
    max_answer_length: Longest answer in tokens.

  Returns:
    int32 [examples] `start_token` and `end_token` (context token indices;
    -1 where no span fits), float32 [examples] `score` (start + end logit of
    the span) and `null_score` (the lowest start + end logit of [CLS] over
    the example's windows), bool [examples] `has_span`.
  """
  start_logits = tf.cast(start_logits, tf.float32)
  end_logits = tf.cast(end_logits, tf.float32)
  seq_len = tf.shape(start_logits)[1]
  positions = tf.range(seq_len)[tf.newaxis, :]
  offset = window_offset[:, tf.newaxis]
  in_context = (positions >= offset) & (
      positions < offset + window_length[:, tf.newaxis]
  )
  k = tf.minimum(n_best_size, seq_len)
  start_scores, start_positions = tf.math.top_k(
      tf.where(in_context, start_logits, IMPOSSIBLE_SCORE), k
  )
  end_scores, end_positions = tf.math.top_k(
      tf.where(in_context, end_logits, IMPOSSIBLE_SCORE), k
  )
  # Every start candidate with every end candidate: [windows, k, k].
  span_length = (
      end_positions[:, tf.newaxis, :] - start_positions[:, :, tf.newaxis] + 1
  )
  valid = (
      (span_length >= 1)
      & (span_length <= max_answer_length)
      & (start_scores[:, :, tf.newaxis] > IMPOSSIBLE_SCORE / 2)
      & (end_scores[:, tf.newaxis, :] > IMPOSSIBLE_SCORE / 2)
  )
  pair_scores = tf.where(
      valid,
      start_scores[:, :, tf.newaxis] + end_scores[:, tf.newaxis, :],
      IMPOSSIBLE_SCORE,
  )
  flat = tf.reshape(pair_scores, [tf.shape(pair_scores)[0], -1])
  best_pair = tf.argmax(flat, axis=1, output_type=tf.int32)
  window_score = tf.reduce_max(flat, axis=1)
  to_context = window_start - window_offset
  window_start_token = (
      tf.gather(start_positions, best_pair // k, batch_dims=1) + to_context
  )
  window_end_token = (
      tf.gather(end_positions, best_pair % k, batch_dims=1) + to_context
  )
  score = tf.math.unsorted_segment_max(
      window_score, window_example, num_examples
  )
  # The first window reaching the example's best score.
  num_windows = tf.shape(window_example)[0]
  is_best = window_score >= tf.gather(score, window_example)
  chosen = tf.math.unsorted_segment_min(
      tf.where(is_best, tf.range(num_windows), num_windows),
      window_example,
      num_examples,
  )
  has_span = score > IMPOSSIBLE_SCORE / 2
  chosen = tf.where(has_span, chosen, 0)
  start_token = tf.where(has_span, tf.gather(window_start_token, chosen), -1)
  end_token = tf.where(has_span, tf.gather(window_end_token, chosen), -1)
  null_score = tf.math.unsorted_segment_min(
      start_logits[:, 0] + end_logits[:, 0], window_example, num_examples
  )
  return {
      "start_token": start_token,
      "end_token": end_token,
      "score": tf.where(has_span, score, IMPOSSIBLE_SCORE),
      "null_score": null_score,
      "has_span": has_span,
  }


def answers_from_spans(
    spans: dict[str, tf.Tensor],
    contexts: tf.Tensor,
    token_starts: tf.RaggedTensor,
    token_ends: tf.RaggedTensor,
    *,
    allow_no_answer: bool,
    null_score_threshold: float,
) -> dict[str, tf.Tensor]:
  """Answer text and character offsets [start, end) of each example's span.

  With `allow_no_answer`, the answer is empty (offsets -1) when the
  no-answer score exceeds the span's by more than the threshold; without a
  span that fits, always.
  """
  answered = spans["has_span"]
  if allow_no_answer:
    answered &= (spans["null_score"] - spans["score"]) <= null_score_threshold
  first = tf.cast(token_starts.row_splits[:-1], tf.int32)
  start_index = first + tf.maximum(spans["start_token"], 0)
  end_index = first + tf.maximum(spans["end_token"], 0)
  safe = answered & (tf.cast(token_starts.row_lengths(), tf.int32) > 0)
  # Gathering from an empty tensor fails even where the result is unused.
  padded_starts = tf.concat([token_starts.flat_values, [0]], axis=0)
  padded_ends = tf.concat([token_ends.flat_values, [0]], axis=0)
  start = tf.where(safe, tf.gather(padded_starts, start_index), -1)
  end = tf.where(safe, tf.gather(padded_ends, end_index), -1)
  answer = tf.strings.substr(
      contexts,
      tf.maximum(start, 0),
      tf.maximum(end - start, 0),
      unit="UTF8_CHAR",
  )
  return {"answer": tf.where(safe, answer, ""), "start": start, "end": end}
