"""One prediction per document read in windows (--long_document=chunks).

The inputs of a batch of documents are [batch, windows, seq_len] with a
CHUNK_MASK [batch, windows] marking each document's real windows (the rest
pads the batch to its longest document). The model gathers the real windows
into one batch of windows for the encoder, so padding windows cost nothing,
runs the head on each, and pools each document's window logits into one row
(their mean or max): the loss, the metrics and the export all see one row
of logits per document.
"""

from __future__ import annotations

import tensorflow as tf

from tf_finetune.models.classifier import TextClassifier
from tf_finetune.text.long_documents import CHUNK_MASK, pool_windows


class ChunkedTextClassifier(TextClassifier):
  """A `TextClassifier` whose inputs may hold several windows per document.

  Inputs with CHUNK_MASK give float32 logits [batch, num_labels] pooled
  over each document's windows by `chunk_pooling` ("mean" or "max");
  inputs without it are one window per row, as for `TextClassifier` (the
  export's serve_token_ids).
  """

  def __init__(self, *args, chunk_pooling: str = "mean", **kwargs):
    super().__init__(*args, **kwargs)
    if chunk_pooling not in ("mean", "max"):
      raise ValueError(
          f"--chunk_pooling={chunk_pooling!r} is not one of mean, max."
      )
    self.chunk_pooling = chunk_pooling

  def call(self, inputs, training=False):
    if CHUNK_MASK not in inputs:
      return super().call(inputs, training=training)
    chunk_mask = inputs[CHUNK_MASK]
    # [windows, 2]: (document, window) of every real window, in order.
    positions = tf.where(chunk_mask > 0)
    windows = {
        name: tf.gather_nd(value, positions)
        for name, value in inputs.items()
        if name != CHUNK_MASK
    }
    logits = super().call(windows, training=training)
    return pool_windows(
        logits, positions[:, 0], tf.shape(chunk_mask)[0], self.chunk_pooling
    )
