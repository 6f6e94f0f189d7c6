"""Extractive question answering: the span of a context that answers a question.

Reads SQuAD JSON files (v1.1, and v2.0 with `is_impossible` questions),
JSONL files with a question, a context and SQuAD-style answers per line
(`{"text": [...], "answer_start": [...]}` or a list of `{"text",
"answer_start"}` objects), and the TFDS `squad/v1.1` and `squad/v2.0` data
sets. CSV/TSV files (a question and a context column) are read for
prediction only: they cannot hold answers.

Windows. The model reads `[CLS] question [SEP] context window [SEP]`. The
question keeps at most `--max_question_length` tokens (and at most half the
sequence); a context longer than the rest is read in windows of B =
max_seq_length - question - 3 tokens, window j starting at token
j x min(doc_stride, B), until one window reaches the context's end (the BERT
SQuAD recipe: with B = 100 and a stride of 64, a 230-token context gives
windows [0, 100), [64, 164), [128, 228), [192, 230)).

Offsets. Contexts are split into words the way BERT's basic tokenizer does
(whitespace; every punctuation mark and CJK character a word), each with its
character offsets into the original string, and each word into WordPiece
tokens; a token's character span is its word's. An answer's character span
becomes the first token of the first word it touches and the last token of
the last word it touches. A window that does not hold the whole answer, and
an unanswerable question, point both targets at [CLS] (position 0).

Post-processing, the same TensorFlow code for evaluation and serving: per
window the `--n_best_size` best starts and ends inside the context are
paired (end >= start, at most `--max_answer_length` tokens); the pair with
the highest start + end logit over all windows of an example wins, and is
mapped back to character offsets of the original context. With
`--allow_no_answer` (SQuAD v2.0) the no-answer score is the lowest
start[CLS] + end[CLS] over the windows, and the answer is empty when it
beats the best span's score by more than `--null_score_threshold` (chosen
on validation data for the best F1 unless given, saved in task_state.json
and in the export).

Metrics are those of the official SQuAD evaluation script: exact match and
F1 in percent, answers normalized (lowercase, punctuation and the articles
a/an/the removed, whitespace collapsed), the best over the gold answers; an
unanswerable question's gold answer is the empty string; with v2.0 data
also the HasAns/NoAns breakdown.

The export takes raw `question` and `context` strings and returns the
`answer` text, its `score`, its character offsets `start` and `end` (-1 and
an empty answer when the model answers nothing) and the `null_score`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import string
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras
from absl import logging

from tf_finetune import io_utils, serving
from tf_finetune.data import pipeline, readers
from tf_finetune.models.classifier import INPUT_NAMES
from tf_finetune.tasks import encoder as encoder_lib
from tf_finetune.text import words as words_lib
from tf_finetune.text.tokenization import TextEncoder, pad_inputs

# The head's two outputs per token.
LABEL_VOCAB = ("start", "end")
ANSWERS_KEY = "answers"
ID_KEY = "id"
# Scores of positions that cannot start or end an answer.
_IMPOSSIBLE = -1e30
# Examples tokenized and windowed per call.
_CHUNK = 1024


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
def tokenize_context(encoder: TextEncoder, contexts: tf.Tensor
                     ) -> tuple[tf.RaggedTensor, tf.RaggedTensor,
                                tf.RaggedTensor]:
  """Tokens of each context with their character spans.

  Args:
    encoder: The model's tokenizer.
    contexts: string Tensor [batch].

  Returns:
    (token ids, character starts, character ends), int32 RaggedTensors
    [batch, (tokens)]; a token's span is its word's.
  """
  words, char_starts, char_ends = words_lib.split_words(contexts)
  pieces = tf.RaggedTensor.from_row_splits(
      encoder.tokenize(words.flat_values), words.row_splits)
  tokens = pieces.merge_dims(1, 2)
  per_word = pieces.row_lengths(axis=2).flat_values
  token_starts = tokens.with_flat_values(
      tf.repeat(char_starts.flat_values, per_word))
  token_ends = tokens.with_flat_values(
      tf.repeat(char_ends.flat_values, per_word))
  return tokens, token_starts, token_ends


def question_budget(max_seq_length: int, max_question_length: int) -> int:
  """Question tokens kept: the flag's, and at most half the sequence."""
  return max(1, min(max_question_length, (max_seq_length - 3) // 2))


def make_windows(question_ids: tf.RaggedTensor, context_ids: tf.RaggedTensor,
                 *, max_seq_length: int, doc_stride: int,
                 max_question_length: int, cls_id: int,
                 sep_id: int) -> dict[str, Any]:
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
  question_ids = question_ids[:, :question_budget(max_seq_length,
                                                  max_question_length)]
  question_length = tf.cast(question_ids.row_lengths(), tf.int32)
  context_length = tf.cast(context_ids.row_lengths(), tf.int32)
  budget = max_seq_length - question_length - 3
  stride = tf.minimum(doc_stride, budget)
  # Windows after the first cover the rest, `stride` tokens at a time:
  # 230 tokens, budget 100, stride 64: 1 + ceil(130 / 64) = 4 windows.
  num_windows = 1 + (tf.maximum(context_length - budget, 0) + stride - 1
                     ) // stride
  example = tf.repeat(tf.range(tf.size(num_windows)), num_windows)
  index = tf.ragged.range(num_windows).flat_values
  start = index * tf.gather(stride, example)
  length = tf.minimum(tf.gather(budget, example),
                      tf.gather(context_length, example) - start)
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
      "token_type_ids": tf.concat([tf.zeros_like(segment_a),
                                   tf.ones_like(segment_b)], axis=1),
      "example": example, "start": start, "length": length,
      "offset": tf.gather(question_length, example) + 2,
  }


def best_spans(start_logits, end_logits, *, window_example, window_start,
               window_length, window_offset, num_examples, n_best_size: int,
               max_answer_length: int) -> dict[str, tf.Tensor]:
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
      positions < offset + window_length[:, tf.newaxis])
  k = tf.minimum(n_best_size, seq_len)
  start_scores, start_positions = tf.math.top_k(
      tf.where(in_context, start_logits, _IMPOSSIBLE), k)
  end_scores, end_positions = tf.math.top_k(
      tf.where(in_context, end_logits, _IMPOSSIBLE), k)
  # Every start candidate with every end candidate: [windows, k, k].
  span_length = (end_positions[:, tf.newaxis, :] -
                 start_positions[:, :, tf.newaxis] + 1)
  valid = ((span_length >= 1) & (span_length <= max_answer_length) &
           (start_scores[:, :, tf.newaxis] > _IMPOSSIBLE / 2) &
           (end_scores[:, tf.newaxis, :] > _IMPOSSIBLE / 2))
  pair_scores = tf.where(
      valid, start_scores[:, :, tf.newaxis] + end_scores[:, tf.newaxis, :],
      _IMPOSSIBLE)
  flat = tf.reshape(pair_scores, [tf.shape(pair_scores)[0], -1])
  best_pair = tf.argmax(flat, axis=1, output_type=tf.int32)
  window_score = tf.reduce_max(flat, axis=1)
  to_context = window_start - window_offset
  window_start_token = tf.gather(start_positions, best_pair // k,
                                 batch_dims=1) + to_context
  window_end_token = tf.gather(end_positions, best_pair % k,
                               batch_dims=1) + to_context
  score = tf.math.unsorted_segment_max(window_score, window_example,
                                       num_examples)
  # The first window reaching the example's best score.
  num_windows = tf.shape(window_example)[0]
  is_best = window_score >= tf.gather(score, window_example)
  chosen = tf.math.unsorted_segment_min(
      tf.where(is_best, tf.range(num_windows), num_windows), window_example,
      num_examples)
  has_span = score > _IMPOSSIBLE / 2
  chosen = tf.where(has_span, chosen, 0)
  start_token = tf.where(has_span, tf.gather(window_start_token, chosen), -1)
  end_token = tf.where(has_span, tf.gather(window_end_token, chosen), -1)
  null_score = tf.math.unsorted_segment_min(
      start_logits[:, 0] + end_logits[:, 0], window_example, num_examples)
  return {"start_token": start_token, "end_token": end_token,
          "score": tf.where(has_span, score, _IMPOSSIBLE),
          "null_score": null_score, "has_span": has_span}


def answers_from_spans(spans: dict[str, tf.Tensor], contexts: tf.Tensor,
                       token_starts: tf.RaggedTensor,
                       token_ends: tf.RaggedTensor, *, allow_no_answer: bool,
                       null_score_threshold: float) -> dict[str, tf.Tensor]:
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
  answer = tf.strings.substr(contexts, tf.maximum(start, 0),
                             tf.maximum(end - start, 0), unit="UTF8_CHAR")
  return {"answer": tf.where(safe, answer, ""), "start": start, "end": end}


# Official SQuAD metrics.
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation and articles, collapse whitespace."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
  """Token-level F1 of normalized answers (1 if both are empty)."""
  predicted = normalize_answer(prediction).split()
  expected = normalize_answer(gold).split()
  if not predicted or not expected:
    return float(predicted == expected)
  common = sum((collections.Counter(predicted) &
                collections.Counter(expected)).values())
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(expected)
  return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[dict]) -> list[str]:
  """The gold answers the official script scores against ("" if none)."""
  texts = [a["text"] for a in answers if normalize_answer(a["text"])]
  return texts or [""]


def squad_scores(predictions: Sequence[str],
                 gold_answers: Sequence[Sequence[dict]]) -> dict:
  """Exact match and F1 in percent, with the HasAns/NoAns breakdown.

  Args:
    predictions: The predicted answer of each question ("" for none).
    gold_answers: Each question's answers (dicts with "text"); [] for an
      unanswerable question.
  """
  exact, f1, has_answer = [], [], []
  for prediction, answers in zip(predictions, gold_answers):
    golds = gold_texts(answers)
    exact.append(max(exact_match_score(prediction, g) for g in golds))
    f1.append(max(f1_score(prediction, g) for g in golds))
    has_answer.append(golds != [""])
  exact, f1 = np.array(exact), np.array(f1)
  has_answer = np.array(has_answer, dtype=bool)
  scores = {"exact_match": 100.0 * float(exact.mean()) if len(exact) else 0.0,
            "f1": 100.0 * float(f1.mean()) if len(f1) else 0.0,
            "total": len(exact)}
  for name, mask in (("HasAns", has_answer), ("NoAns", ~has_answer)):
    if mask.any():
      scores[f"{name}_exact_match"] = 100.0 * float(exact[mask].mean())
      scores[f"{name}_f1"] = 100.0 * float(f1[mask].mean())
      scores[f"{name}_total"] = int(mask.sum())
  return scores


def best_null_threshold(null_minus_span: np.ndarray, f1_answered: np.ndarray,
                        f1_empty: np.ndarray) -> tuple[float, float]:
  """The no-answer threshold with the best mean F1, and that F1 (0-1).

  An example is answered when null score - span score <= threshold.
  Thresholds between consecutive distinct differences are tried; the
  chosen one is the midpoint of the best gap.
  """
  order = np.argsort(null_minus_span, kind="stable")
  diffs = null_minus_span[order]
  total = float(np.sum(f1_empty))
  best_total, best_threshold = total, float(diffs[0]) - 1.0
  for rank, example in enumerate(order):
    total += float(f1_answered[example] - f1_empty[example])
    if rank + 1 < len(order) and diffs[rank + 1] == diffs[rank]:
      continue
    if total > best_total:
      best_total = total
      best_threshold = (float(diffs[rank] + diffs[rank + 1]) / 2
                        if rank + 1 < len(order) else float(diffs[rank]) + 1.0)
  return best_threshold, best_total / len(order)


# Reading.
def _question_error(source: str, qid: Any, message: str) -> ValueError:
  return ValueError(f"{source}: question {qid!r}: {message}")


def _check_answers(source: str, qid: Any, context: str, answers: Any,
                   is_impossible: bool) -> list[dict]:
  """Checked answers: strings that sit at their answer_start."""
  if not isinstance(answers, list):
    raise _question_error(source, qid, f"'answers' must be a list of "
                          f"{{'text', 'answer_start'}} objects, got "
                          f"{answers!r}.")
  checked = []
  for answer in answers:
    if not isinstance(answer, dict) or not isinstance(
        answer.get("text"), str) or not isinstance(
            answer.get("answer_start"), int) or isinstance(
                answer.get("answer_start"), bool):
      raise _question_error(source, qid, f"each answer needs a string 'text' "
                            f"and an integer 'answer_start', got {answer!r}.")
    text, start = answer["text"], answer["answer_start"]
    found = context[start:start + len(text)] if start >= 0 else ""
    if found != text:
      raise _question_error(
          source, qid, f"answer {text!r} is not at answer_start={start} of "
          f"its context (the context has {found!r} there).")
    checked.append({"text": text, "answer_start": start})
  if not checked and not is_impossible:
    raise _question_error(source, qid, "has no answers; an unanswerable "
                          "question needs \"is_impossible\": true (SQuAD "
                          "v2.0).")
  return [] if is_impossible else checked


def _string_field(source: str, qid: Any, record: dict, name: str,
                  where: str) -> str:
  value = record.get(name)
  if not isinstance(value, str):
    raise _question_error(source, qid, f"{where} {name!r} must be a string, "
                          f"got {value!r}.")
  return value


def read_squad_json(path: str, flag: str, *,
                    with_labels: bool = True) -> list[dict]:
  """Questions of a SQuAD JSON file, as rows (id, question, context,
  answers, is_impossible).

  Raises:
    ValueError: naming the file and the question id (or where in the file)
      for malformed JSON, missing fields, or an answer not at its start.
  """
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} does not exist.")
  with open(path, encoding="utf-8-sig") as f:
    try:
      document = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column "
                       f"{e.colno}); expected a SQuAD file "
                       "{\"data\": [...]}.") from None
  data = document.get("data") if isinstance(document, dict) else None
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a SQuAD file, an object whose "
                     "\"data\" is a list of articles with \"paragraphs\".")
  rows = []
  for i, article in enumerate(data):
    paragraphs = article.get("paragraphs") if isinstance(article, dict) \
        else None
    if not isinstance(paragraphs, list):
      raise ValueError(f"{path}: data[{i}] has no \"paragraphs\" list.")
    for j, paragraph in enumerate(paragraphs):
      where = f"data[{i}].paragraphs[{j}]"
      if not isinstance(paragraph, dict) or not isinstance(
          paragraph.get("context"), str) or not isinstance(
              paragraph.get("qas"), list):
        raise ValueError(f"{path}: {where} needs a string \"context\" and a "
                         "\"qas\" list.")
      context = paragraph["context"]
      for k, qa in enumerate(paragraph["qas"]):
        qid = qa.get("id") if isinstance(qa, dict) else None
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
          raise ValueError(f"{path}: {where}.qas[{k}] has no \"id\".")
        row = {ID_KEY: str(qid),
               "question": _string_field(path, qid, qa, "question",
                                         "field"),
               "context": context}
        is_impossible = bool(qa.get("is_impossible", False))
        if with_labels or "answers" in qa:
          row[ANSWERS_KEY] = _check_answers(path, qid, context,
                                            qa.get("answers", []),
                                            is_impossible)
          row["is_impossible"] = is_impossible
        rows.append(row)
  if not rows:
    raise ValueError(f"{flag}={path!r} holds no questions.")
  return rows


def is_squad_json(path: str) -> bool:
  """Whether a .json file is one SQuAD document rather than JSON lines.

  A file that is not valid JSON is SQuAD unless its first line is a JSON
  value (JSON lines), so a broken SQuAD file gets the SQuAD reader's error.
  """
  if not path.lower().endswith(".json") or not os.path.isfile(path):
    return False
  with open(path, encoding="utf-8-sig") as f:
    content = f.read()
  try:
    document = json.loads(content)
  except json.JSONDecodeError:
    try:
      json.loads(content.split("\n", 1)[0])
    except json.JSONDecodeError:
      return True
    return False
  return isinstance(document, dict) and "data" in document


def _record_answers(value: Any) -> Any:
  """SQuAD answers from a record: a list, or HF's {"text", "answer_start"}."""
  if isinstance(value, dict) and isinstance(value.get("text"), list):
    starts = value.get("answer_start", [])
    if not isinstance(starts, list) or len(starts) != len(value["text"]):
      return value
    return [{"text": text, "answer_start": start}
            for text, start in zip(value["text"], starts)]
  return value


def _examples(source: str, rows: list[dict], lines: list[int], *,
              with_labels: bool) -> readers.Examples:
  labels = [row[ANSWERS_KEY] for row in rows] if with_labels else None
  return readers.Examples(source, [row["question"] for row in rows],
                          [row["context"] for row in rows], labels, lines,
                          rows)


class PositionAccuracy(tf_keras.metrics.Metric):
  """How often the most likely start and end positions are the targets."""

  def __init__(self, name="position_accuracy", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.correct = self.add_weight("correct", initializer="zeros")
    self.total = self.add_weight("total", initializer="zeros")

  def update_state(self, y_true, y_pred, sample_weight=None):
    targets = tf.cast(y_true, tf.int32)  # [batch, 2]
    predicted = tf.argmax(y_pred, axis=1, output_type=tf.int32)
    self.correct.assign_add(tf.reduce_sum(tf.cast(predicted == targets,
                                                  tf.float32)))
    self.total.assign_add(tf.cast(tf.size(targets), tf.float32))

  def reset_state(self):
    self.correct.assign(0.0)
    self.total.assign(0.0)

  def result(self):
    return tf.math.divide_no_nan(self.correct, self.total)


def span_loss(labels, logits):
  """Mean of the start and end cross-entropies per window.

  Args:
    labels: int32 [batch, 2] start and end positions.
    logits: float32 [batch, seq_len, 2].

  Returns:
    float32 [batch].
  """
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  start = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 0],
                                                         logits[:, :, 0])
  end = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 1],
                                                       logits[:, :, 1])
  return (start + end) / 2.0


class QuestionAnsweringServer(serving.EncoderServer):
  """Raw question and context in, the answer span out.

  serving_default: question, context (string [batch]) ->
    answer (string [batch]; "" when the model answers nothing), score
    (float32, start + end logit of the span), null_score (float32, the
    no-answer score), start and end (int32 character offsets [start, end)
    of the answer in the context; -1 without an answer).
  serve_token_ids: input_ids, attention_mask, token_type_ids of packed
    windows -> start_logits, end_logits (float32 [batch, seq_len]).
  `get_null_score_threshold()` (not a signature) returns the threshold.
  """

  def __init__(self, model, encoder: TextEncoder, config, *,
               null_score_threshold: float, **kwargs):
    super().__init__(model, encoder, **kwargs)
    self.doc_stride = config.doc_stride
    self.max_question_length = config.max_question_length
    self.n_best_size = config.n_best_size
    self.max_answer_length = config.max_answer_length
    self.allow_no_answer = config.allow_no_answer
    self.null_score_threshold = float(null_score_threshold)
    threshold = tf.constant(self.null_score_threshold, tf.float32)
    self.get_null_score_threshold = tf.function(lambda: threshold,
                                                input_signature=[])

  def serve_ids(self, input_ids, attention_mask, token_type_ids):
    logits = self.logits(input_ids, attention_mask, token_type_ids)
    return {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}

  def serve(self, question, context):
    encoder = self.encoder
    tokens, token_starts, token_ends = tokenize_context(encoder, context)
    windows = make_windows(
        encoder.tokenize(question), tokens,
        max_seq_length=encoder.max_seq_length, doc_stride=self.doc_stride,
        max_question_length=self.max_question_length, cls_id=encoder.cls_id,
        sep_id=encoder.sep_id)
    logits = self.serve_ids(**pad_inputs(windows["input_ids"],
                                         windows["token_type_ids"],
                                         encoder.pad_id))
    spans = best_spans(
        logits["start_logits"], logits["end_logits"],
        window_example=windows["example"], window_start=windows["start"],
        window_length=windows["length"], window_offset=windows["offset"],
        num_examples=tf.size(context), n_best_size=self.n_best_size,
        max_answer_length=self.max_answer_length)
    answers = answers_from_spans(
        spans, context, token_starts, token_ends,
        allow_no_answer=self.allow_no_answer,
        null_score_threshold=self.null_score_threshold)
    return {"answer": answers["answer"], "start": answers["start"],
            "end": answers["end"], "score": spans["score"],
            "null_score": spans["null_score"]}


class QuestionAnswering(encoder_lib.EncoderTask):
  """The span of a context that answers a question."""

  name = "question_answering"
  monitors = ("val_loss", "val_position_accuracy")
  per_token = True
  checked_output = "score"
  input_names = ("question", "context")

  # Reading.
  def resolve_data(self, data):
    # The question and context are the text pair every shared path sees
    # (tokenizer check, export, prediction).
    return dataclasses.replace(data, text_column=self.config.question_column,
                               text_pair_column=self.config.context_column)

  def read(self, data, split, *, path=None, with_labels=True):
    path = path or getattr(data, f"{split}_file")
    flag = f"--{split}_file"
    if path:
      return self.read_file(path, flag, with_labels=with_labels)
    tfds_split = getattr(data, f"tfds_{split}_split")
    if not (data.tfds_name and tfds_split):
      return None
    return self._read_tfds(data, tfds_split, with_labels=with_labels)

  def read_file(self, path: str, flag: str, *,
                with_labels: bool) -> readers.Examples:
    """SQuAD JSON, or JSONL/CSV/TSV records (see the module docstring)."""
    if is_squad_json(path):
      rows = read_squad_json(path, flag, with_labels=with_labels)
      return _examples(path, rows, list(range(1, len(rows) + 1)),
                       with_labels=with_labels)
    records, lines, columns = readers.read_records(path, flag)
    fmt = readers.file_format(path, flag)
    if with_labels and fmt != "jsonl":
      raise ValueError(f"{flag}={path!r}: CSV/TSV files cannot hold SQuAD "
                       "answers; use a SQuAD JSON file or JSONL lines with "
                       "an \"answers\" field.")
    rows = []
    for record, line in zip(records, lines):
      qid = record.get(ID_KEY, line)
      source = f"{path}:{line}"
      row = {ID_KEY: str(qid)}
      for key, column, name in (
          ("question", self.config.question_column, "--question_column"),
          ("context", self.config.context_column, "--context_column")):
        value = record.get(column)
        if not isinstance(value, str):
          raise ValueError(f"{source}: {name}={column!r} must be a string "
                           f"field, got {value!r}; fields are: "
                           f"{', '.join(columns)}.")
        row[key] = value
      if with_labels:
        is_impossible = bool(record.get("is_impossible", False))
        row[ANSWERS_KEY] = _check_answers(
            source, qid, row["context"],
            _record_answers(record.get(ANSWERS_KEY, [])), is_impossible)
        row["is_impossible"] = is_impossible or not row[ANSWERS_KEY]
      rows.append(dict(record, **row))
    return _examples(path, rows, lines, with_labels=with_labels)

  def _read_tfds(self, data, split, *, with_labels):
    import tensorflow_datasets as tfds
    dataset, info = tfds.load(data.tfds_name, split=split,
                              data_dir=data.tfds_data_dir, with_info=True,
                              shuffle_files=False)
    for feature in ("id", "question", "context", "answers"):
      if feature not in info.features:
        raise ValueError(f"--tfds_name={data.tfds_name} has no {feature!r} "
                         "feature; question answering reads SQuAD-style "
                         "data sets (squad/v1.1, squad/v2.0).")
    source = f"{data.tfds_name}[{split}]"
    rows = []
    for record in tfds.as_numpy(dataset):
      qid = record["id"].decode("utf-8")
      context = record["context"].decode("utf-8")
      row = {ID_KEY: qid, "question": record["question"].decode("utf-8"),
             "context": context}
      if with_labels:
        is_impossible = bool(record.get("is_impossible", False))
        answers = [{"text": text.decode("utf-8"), "answer_start": int(start)}
                   for text, start in zip(record["answers"]["text"],
                                          record["answers"]["answer_start"])]
        row[ANSWERS_KEY] = _check_answers(source, qid, context, answers,
                                          is_impossible)
        row["is_impossible"] = is_impossible
      rows.append(row)
    return _examples(source, rows, list(range(1, len(rows) + 1)),
                     with_labels=with_labels)

  def read_prediction_input(self, path, *, text_column, text_pair_column):
    del text_column, text_pair_column  # Questions and contexts.
    return self.read_file(path, "--input_file", with_labels=False)

  # Labels.
  def label_vocab_of(self, examples):
    unanswerable = sum(not answers for answers in examples.labels)
    if unanswerable and not self.config.allow_no_answer:
      raise ValueError(
          f"{examples.source}: {unanswerable} of {len(examples)} questions "
          "are unanswerable (SQuAD v2.0); set --allow_no_answer so the model "
          "learns to answer nothing.")
    return list(LABEL_VOCAB)

  def encode(self, examples, encoder):
    chunks = [self._encode_chunk(examples, encoder, start)
              for start in range(0, len(examples), _CHUNK)]
    offset = np.cumsum([0] + [len(c["contexts"]) for c in chunks[:-1]])
    input_ids = tf.concat([c["input_ids"] for c in chunks], axis=0)
    type_ids = tf.concat([c["token_type_ids"] for c in chunks], axis=0)
    label_ids = None
    if examples.labels is not None:
      label_ids = np.concatenate([c["labels"] for c in chunks]).astype(
          np.int32)
    truncated = sum(c["truncated"] for c in chunks)
    if truncated:
      logging.info("%s: %d of %d questions were longer than %d tokens and "
                   "were cut.", examples.source, truncated, len(examples),
                   question_budget(encoder.max_seq_length,
                                   self.config.max_question_length))
    return QuestionAnsweringFeatures(
        input_ids, type_ids, input_ids.row_lengths().numpy(), label_ids,
        int(truncated), pad_id=encoder.pad_id,
        window_example=np.concatenate(
            [c["example"] + o for c, o in zip(chunks, offset)]),
        window_start=np.concatenate([c["start"] for c in chunks]),
        window_length=np.concatenate([c["length"] for c in chunks]),
        window_offset=np.concatenate([c["offset"] for c in chunks]),
        token_starts=[s for c in chunks for s in c["token_starts"]],
        token_ends=[e for c in chunks for e in c["token_ends"]],
        contexts=[x for c in chunks for x in c["contexts"]])

  def _encode_chunk(self, examples, encoder, start):
    stop = start + _CHUNK
    contexts = examples.text_pairs[start:stop]
    questions = encoder.tokenize(tf.constant(examples.texts[start:stop]))
    tokens, token_starts, token_ends = tokenize_context(
        encoder, tf.constant(contexts))
    windows = make_windows(
        questions, tokens, max_seq_length=encoder.max_seq_length,
        doc_stride=self.config.doc_stride,
        max_question_length=self.config.max_question_length,
        cls_id=encoder.cls_id, sep_id=encoder.sep_id)
    chunk = {name: windows[name].numpy()
             for name in ("example", "start", "length", "offset")}
    chunk.update(
        input_ids=windows["input_ids"], contexts=contexts,
        token_type_ids=windows["token_type_ids"],
        token_starts=[np.array(s, np.int32) for s in token_starts.to_list()],
        token_ends=[np.array(e, np.int32) for e in token_ends.to_list()],
        truncated=int(np.sum(questions.row_lengths().numpy() > question_budget(
            encoder.max_seq_length, self.config.max_question_length))))
    if examples.labels is not None:
      chunk["labels"] = window_targets(
          examples.labels[start:stop], chunk["token_starts"],
          chunk["token_ends"], chunk["example"], chunk["start"],
          chunk["length"], chunk["offset"])
    return chunk

  # The model.
  def loss_fn(self, train):
    return span_loss

  def keras_metrics(self):
    return [PositionAccuracy()]

  # Evaluation.
  def predict(self, model, encoded, *, batch_size):
    """Per example: the best span's answer, offsets, score, null score."""
    dataset, order = pipeline.inference_dataset(
        encoded, batch_size=batch_size, with_labels=False)
    seq_len = int(np.max(encoded.lengths)) if len(encoded) else 1
    logits = np.full((len(encoded), seq_len, 2), _IMPOSSIBLE, np.float32)
    row = 0
    for features in dataset:
      batch = tf.cast(model(features, training=False), tf.float32).numpy()
      logits[order[row:row + len(batch)], :batch.shape[1]] = batch
      row += len(batch)
    spans = best_spans(
        logits[:, :, 0], logits[:, :, 1],
        window_example=encoded.window_example,
        window_start=encoded.window_start,
        window_length=encoded.window_length,
        window_offset=encoded.window_offset,
        num_examples=encoded.num_examples,
        n_best_size=self.config.n_best_size,
        max_answer_length=self.config.max_answer_length)
    lengths = [len(starts) for starts in encoded.token_starts]

    def ragged(rows):
      return tf.RaggedTensor.from_row_lengths(
          np.concatenate(rows + [np.zeros(0, np.int32)]).astype(np.int32),
          np.array(lengths, np.int64))
    answers = answers_from_spans(
        spans, tf.constant(encoded.contexts, tf.string),
        ragged(encoded.token_starts), ragged(encoded.token_ends),
        allow_no_answer=False, null_score_threshold=0.0)
    return {"answer": [a.decode("utf-8") for a in answers["answer"].numpy()],
            "start": answers["start"].numpy(), "end": answers["end"].numpy(),
            "score": spans["score"].numpy(),
            "null_score": spans["null_score"].numpy()}

  @property
  def threshold(self) -> float:
    """The no-answer threshold: given, tuned on validation, or 0."""
    if self.config.null_score_threshold is not None:
      return self.config.null_score_threshold
    return float(self.state.chosen.get("null_score_threshold", 0.0))

  def final_answers(self, outputs: dict) -> list[str]:
    """The answers after the no-answer decision."""
    if not self.config.allow_no_answer:
      return list(outputs["answer"])
    threshold = self.threshold
    return [answer if null - score <= threshold else ""
            for answer, score, null in zip(outputs["answer"],
                                           outputs["score"],
                                           outputs["null_score"])]

  def choose(self, examples, encoded, outputs):
    if not self.config.allow_no_answer:
      return {}
    if self.config.null_score_threshold is not None:
      return {"null_score_threshold": self.config.null_score_threshold}
    golds = [gold_texts(answers) for answers in examples.labels]
    f1_answered = np.array([max(f1_score(a, g) for g in gold)
                            for a, gold in zip(outputs["answer"], golds)])
    f1_empty = np.array([float(gold == [""]) for gold in golds])
    threshold, best_f1 = best_null_threshold(
        np.asarray(outputs["null_score"]) - np.asarray(outputs["score"]),
        f1_answered, f1_empty)
    logging.info("No-answer threshold %.4f: validation F1 %.2f.", threshold,
                 100.0 * best_f1)
    return {"null_score_threshold": threshold}

  def metrics(self, examples, encoded, outputs):
    scores = squad_scores(self.final_answers(outputs), examples.labels)
    scores.update(num_examples=len(examples), num_windows=len(encoded),
                  num_truncated_questions=encoded.num_truncated)
    if self.config.allow_no_answer:
      scores["null_score_threshold"] = self.threshold
    return scores

  def describe(self, metrics):
    line = (f"exact match: {metrics['exact_match']:.2f}  F1: "
            f"{metrics['f1']:.2f}")
    if "NoAns_f1" in metrics and "HasAns_f1" in metrics:
      line += (f"  (HasAns F1 {metrics['HasAns_f1']:.2f}, NoAns F1 "
               f"{metrics['NoAns_f1']:.2f})")
    return line + f"  ({metrics['num_examples']} questions)"

  # Serving and prediction files.
  def server(self, trained):
    return QuestionAnsweringServer(
        trained.model, trained.encoder, self.config,
        null_score_threshold=self.threshold, task_name=self.name,
        label_vocab=self.state.label_vocab, input_names=self.input_names)

  def prediction_rows(self, outputs):
    return [{"answer": answer.decode("utf-8"), "score": float(score),
             "null_score": float(null), "start": int(start),
             "end": int(end)}
            for answer, score, null, start, end in zip(
                outputs["answer"], outputs["score"], outputs["null_score"],
                outputs["start"], outputs["end"])]

  def write_prediction_file(self, path, examples, rows):
    """A .json output is the official predictions file {id: answer}; other
    formats repeat each input row with answer, score and offsets."""
    if not path.lower().endswith(".json"):
      return super().write_prediction_file(path, examples, rows)
    answers = {row[ID_KEY]: prediction["answer"]
               for row, prediction in zip(examples.rows, rows)}
    io_utils.write_text_atomically(
        path, json.dumps(answers, ensure_ascii=False, indent=2) + "\n")
    logging.info("Wrote %d answers to %s.", len(answers), path)


def window_targets(answers: Sequence[Sequence[dict]],
                   token_starts: Sequence[np.ndarray],
                   token_ends: Sequence[np.ndarray], window_example,
                   window_start, window_length, window_offset) -> np.ndarray:
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
    spans.append((int(touching[0]), int(touching[-1])) if len(touching)
                 else None)
  targets = np.zeros((len(window_example), 2), np.int32)
  for w, example in enumerate(window_example):
    span = spans[example]
    if span is None:
      continue
    first, last = span
    start = window_start[w]
    if first >= start and last < start + window_length[w]:
      targets[w] = (window_offset[w] + first - start,
                    window_offset[w] + last - start)
  return targets
