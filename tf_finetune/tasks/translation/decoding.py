"""Generation (greedy and beam search) and corpus BLEU and chrF."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


# Generation and metrics.
def generate_ids(
    seq2seq,
    source_ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    num_beams: int,
    max_new_tokens: int,
    pad_id: int,
    jit_compile: bool = False,
    no_repeat_ngram_size: int = 0,
) -> list[np.ndarray]:
  """Generated target ids of every source, in input order.

  Sources are batched by length (less padding) and the order restored.
  `no_repeat_ngram_size` > 0 forbids repeating any n-gram of that size
  within a translation (stops the loops of undertrained models).
  """
  options = {}
  if no_repeat_ngram_size:
    options["no_repeat_ngram_size"] = no_repeat_ngram_size
  order = np.argsort([len(ids) for ids in source_ids], kind="stable")
  outputs: list = [None] * len(source_ids)
  generate = seq2seq.generate
  if jit_compile:
    # One compiled function per model, reused across calls.
    generate = getattr(seq2seq, "_xla_generate", None)
    if generate is None:
      generate = tf.function(seq2seq.generate, jit_compile=True)
      seq2seq._xla_generate = generate
  for start in range(0, len(order), batch_size):
    rows = order[start : start + batch_size]
    longest = max(len(source_ids[i]) for i in rows)
    num_rows = len(rows)
    if jit_compile:
      # Every distinct shape is compiled anew (about 30 s on 2 CPU cores):
      # full batches (the last one padded with copies of its first row) and
      # lengths rounded up to multiples of 32 keep the shapes few.
      longest = -(-longest // 32) * 32
      num_rows = batch_size
    batch = np.full((num_rows, longest), pad_id, np.int32)
    mask = np.zeros_like(batch)
    for row in range(num_rows):
      i = rows[row] if row < len(rows) else rows[0]
      batch[row, : len(source_ids[i])] = source_ids[i]
      mask[row, : len(source_ids[i])] = 1
    generated = generate(
        input_ids=tf.constant(batch),
        attention_mask=tf.constant(mask),
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=False,
        **options,
    )
    generated = np.asarray(generated)
    for row, i in enumerate(rows):
      outputs[i] = generated[row, 1:]  # Drops the decoder start token.
  return outputs


def translation_metrics(
    hypotheses: Sequence[str], references: Sequence[str]
) -> dict:
  """Corpus BLEU and chrF (sacreBLEU's defaults) of detokenized texts."""
  import sacrebleu

  bleu = sacrebleu.metrics.BLEU()
  chrf = sacrebleu.metrics.CHRF()
  bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
  chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
  return {
      "num_examples": len(references),
      "bleu": round(float(bleu_score.score), 4),
      "chrf": round(float(chrf_score.score), 4),
      "bleu_precisions": [round(float(p), 4) for p in bleu_score.precisions],
      "brevity_penalty": round(float(bleu_score.bp), 4),
      "empty_translations": sum(1 for text in hypotheses if not text.strip()),
      "bleu_signature": str(bleu.get_signature()),
      "chrf_signature": str(chrf.get_signature()),
  }
