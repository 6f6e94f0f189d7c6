"""The export: raw question and context in, the answer span out."""

from __future__ import annotations

import tensorflow as tf

from tf_finetune import serving
from tf_finetune.text.tokenization import TextEncoder, pad_inputs
from tf_finetune.tasks.question_answering.postprocess import (
    answers_from_spans,
    best_spans,
)
from tf_finetune.tasks.question_answering.windows import (
    make_windows,
    tokenize_context,
)


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

  def __init__(
      self,
      model,
      encoder: TextEncoder,
      config,
      *,
      null_score_threshold: float,
      **kwargs,
  ):
    super().__init__(model, encoder, **kwargs)
    self.doc_stride = config.doc_stride
    self.max_question_length = config.max_question_length
    self.n_best_size = config.n_best_size
    self.max_answer_length = config.max_answer_length
    self.allow_no_answer = config.allow_no_answer
    self.null_score_threshold = float(null_score_threshold)
    threshold = tf.constant(self.null_score_threshold, tf.float32)
    self.get_null_score_threshold = tf.function(
        lambda: threshold, input_signature=[]
    )

  def serve_ids(self, input_ids, attention_mask, token_type_ids):
    logits = self.logits(input_ids, attention_mask, token_type_ids)
    return {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}

  def serve(self, question, context):
    encoder = self.encoder
    tokens, token_starts, token_ends = tokenize_context(encoder, context)
    windows = make_windows(
        encoder.tokenize(question),
        tokens,
        max_seq_length=encoder.max_seq_length,
        doc_stride=self.doc_stride,
        max_question_length=self.max_question_length,
        cls_id=encoder.cls_id,
        sep_id=encoder.sep_id,
    )
    logits = self.serve_ids(
        **pad_inputs(
            windows["input_ids"], windows["token_type_ids"], encoder.pad_id
        )
    )
    spans = best_spans(
        logits["start_logits"],
        logits["end_logits"],
        window_example=windows["example"],
        window_start=windows["start"],
        window_length=windows["length"],
        window_offset=windows["offset"],
        num_examples=tf.size(context),
        n_best_size=self.n_best_size,
        max_answer_length=self.max_answer_length,
    )
    answers = answers_from_spans(
        spans,
        context,
        token_starts,
        token_ends,
        allow_no_answer=self.allow_no_answer,
        null_score_threshold=self.null_score_threshold,
    )
    return {
        "answer": answers["answer"],
        "start": answers["start"],
        "end": answers["end"],
        "score": spans["score"],
        "null_score": spans["null_score"],
    }
