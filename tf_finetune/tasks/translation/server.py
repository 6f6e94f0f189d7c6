"""The export (tokenization and greedy or beam search in the graph) and the
Python translator `predict --model_dir` runs (any vocabulary).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_finetune import serving
from tf_finetune import config as config_lib
from tf_finetune.tasks.translation.decoding import (
    Decoding,
    generate_ids,
    search_in_graph,
)
from tf_finetune.tasks.translation.model import Seq2SeqModel
from tf_finetune.tasks.translation.reading import prefix_with_space, with_prefix
from tf_finetune.tasks.translation.vocab import strip_generated_rows

TRANSLATION_OUTPUT = "translation"


# Serving.
class TranslationServer(serving.Server):
  """Raw source strings in, translated strings out, all in the graph.

  serving_default: text (string [batch]) -> translation (string [batch]).
  Tokenization (the vocabulary's `serving_tokenizer`: SentencePiece,
  WordPiece or byte-level BPE) and the search (greedy or beam, as
  `decoding` says; `search_in_graph`) run in the SavedModel.
  """

  def __init__(
      self,
      seq2seq,
      vocab,
      *,
      source_prefix: str,
      max_source_length: int,
      max_target_length: int,
      decoding: Decoding | None = None,
  ):
    super().__init__(task_name="translation")
    self.decoding = decoding or Decoding()
    self.seq2seq = seq2seq
    self.tokenizer = vocab.serving_tokenizer(max_source_length)
    self.source_prefix = source_prefix
    self.max_source_length = max_source_length
    self.max_target_length = max_target_length
    self.pad_id, self.eos_id = int(vocab.pad_id), int(vocab.eos_id)

  def serve(self, text):
    if self.source_prefix:
      text = tf.strings.join([prefix_with_space(self.source_prefix), text])
    ids = self.tokenizer.encode(text)
    input_ids = ids.to_tensor(self.pad_id)
    attention_mask = tf.sequence_mask(
        ids.row_lengths(), tf.shape(input_ids)[1], tf.int32
    )
    generated = search_in_graph(
        self.seq2seq,
        input_ids,
        attention_mask,
        decoding=self.decoding,
        max_new_tokens=self.max_target_length,
    )
    generated = tf.cast(generated[:, 1:], tf.int32)
    # Keep what comes before the first end-of-sequence, without padding.
    before_end = (
        tf.cumsum(tf.cast(generated == self.eos_id, tf.int32), axis=1) == 0
    )
    keep = tf.logical_and(before_end, generated != self.pad_id)
    pieces = tf.ragged.boolean_mask(generated, keep)
    return {TRANSLATION_OUTPUT: self.tokenizer.detokenize(pieces)}


class PythonTranslator:
  """The serving signature's contract (text -> translation) in Python, for
  `predict --model_dir`: works for every vocabulary."""

  def __init__(
      self,
      model: Seq2SeqModel,
      task: config_lib.TaskConfig,
      batch_size: int = 64,
  ):
    self.model = model
    self.task = task
    self.batch_size = batch_size

  def translate(self, texts: Sequence[str]) -> list[str]:
    vocab = self.model.vocab
    source_ids = vocab.encode(
        [with_prefix(self.task.source_prefix, text) for text in texts],
        self.task.max_source_length,
    )
    generated = generate_ids(
        self.model.seq2seq,
        source_ids,
        batch_size=self.batch_size,
        num_beams=self.task.num_beams,
        max_new_tokens=self.task.max_target_length,
        pad_id=vocab.pad_id,
        jit_compile=self.task.jit_generate,
        no_repeat_ngram_size=self.task.no_repeat_ngram_size,
        length_penalty=self.task.length_penalty,
    )
    return vocab.decode(strip_generated_rows(generated, vocab))

  def serve(self, text):
    texts = [value.decode("utf-8") for value in np.asarray(text).tolist()]
    return {TRANSLATION_OUTPUT: tf.constant(self.translate(texts), tf.string)}
