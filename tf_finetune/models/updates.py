"""The update every model's `train_step` ends with: gradients summed across
replicas, sparse embedding rows merged, the global norm logged, applied.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def deduplicated(gradient):
  """Sums the rows of a sparse gradient that share an index.

  An embedding lookup's gradient has one row per token, so a token seen
  twice appears twice. Keras clips by global norm before it merges such
  rows, and the norm of unmerged rows is not the gradient's norm (it came
  out about 20% off on a tiny BERT); merging first makes the clipped update,
  and the logged grad_norm, those of the true gradient.
  """
  if not isinstance(gradient, tf.IndexedSlices):
    return gradient
  indices, positions = tf.unique(gradient.indices)
  values = tf.math.unsorted_segment_sum(
      gradient.values, positions, tf.shape(indices)[0]
  )
  return tf.IndexedSlices(values, indices, gradient.dense_shape)


def apply_update(
    optimizer, gradients: Sequence, variables: Sequence, grad_norm
) -> None:
  """Applies this replica's `gradients` (None for an unused variable) as
  the global batch's update.

  Each replica's gradients are already its share of the global mean, so
  replicas sum them here (dense: sparse ones of different row counts cannot
  go through one collective), and the optimizer is told not to aggregate
  again. `grad_norm` (a metric) records the global norm before clipping,
  the one the optimizer clips by.
  """
  pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
  gradients = [g for g, _ in pairs]
  if tf.distribute.get_strategy().num_replicas_in_sync > 1:
    gradients = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM,
        [tf.convert_to_tensor(g) for g in gradients],
    )
  gradients = [deduplicated(g) for g in gradients]
  grad_norm.update_state(tf.linalg.global_norm(gradients))
  optimizer.apply_gradients(
      zip(gradients, [v for _, v in pairs]), skip_gradients_aggregation=True
  )
