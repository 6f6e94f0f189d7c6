"""Dynamic masking for masked-language-model training, inside tf.data.

BERT's recipe (Devlin et al., 2019): a fraction of the tokens (15%) is chosen
as prediction targets; of those, 80% are replaced by the mask token, 10% by a
random token and 10% are left unchanged. Special tokens ([CLS], [SEP], [UNK],
...) and padding are never chosen. The masks are drawn in the input pipeline
for every batch, from seeds that `tf.data.Dataset.random` gives each batch
afresh each epoch, so every epoch masks each text differently (RoBERTa's
dynamic masking, Liu et al., 2019).

With whole-word masking a word is chosen as a whole: every WordPiece piece
of a chosen word becomes a target (a piece starting with "##" belongs to the
word before it); each target is then replaced 80/10/10 on its own, as in
BERT's released whole-word-masking data.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

# The label of a position that is not a prediction target (the value
# `transformers` losses ignore).
IGNORED = -100
# Of the chosen tokens: the share replaced by the mask token, and the share
# replaced by a random token; the rest stay as they are.
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1


class Masker(tf.Module):
  """Chooses and replaces prediction targets in batches of token ids.

  Call it on a batch: (features, token_ids, seed) -> (features, labels),
  where `token_ids` are the batch's ids with `IGNORED` on padding (the
  pipeline's targets before masking), `features["input_ids"]` gets the
  replaced ids, and `labels` holds the original id on each chosen position
  and `IGNORED` elsewhere.
  """

  def __init__(
      self,
      *,
      mask_id: int,
      special_ids: Sequence[int],
      vocab_size: int,
      probability: float = 0.15,
      continuation_ids: Optional[Sequence[int]] = None,
      name: Optional[str] = None,
  ):
    """Builds the masker.

    Args:
      mask_id: The mask token's id.
      special_ids: Ids never chosen (the tokenizer's special tokens).
      vocab_size: Ids run from 0 to vocab_size - 1; random replacements are
        drawn from those that are not special.
      probability: The fraction of tokens (or words) chosen.
      continuation_ids: For whole-word masking, the ids of the pieces that
        continue a word ("##ing"); None masks token by token.
      name: The module's name.
    """
    super().__init__(name=name)
    special = set(int(i) for i in special_ids) | {mask_id}
    self.mask_id = mask_id
    self.probability = probability
    self.whole_word = continuation_ids is not None
    self._special = tf.constant(
        [i in special for i in range(vocab_size)], tf.bool
    )
    self._replacements = tf.constant(
        [i for i in range(vocab_size) if i not in special], tf.int32
    )
    continuing = set(continuation_ids or ())
    self._continues = tf.constant(
        [i in continuing for i in range(vocab_size)], tf.bool
    )

  def choose(self, token_ids: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """bool Tensor [batch, seq_len]: the positions chosen as targets.

    Args:
      token_ids: int32 Tensor [batch, seq_len], `IGNORED` on padding.
      seed: int Tensor [2], the stateless seed of this batch.
    """
    is_padding = token_ids == IGNORED
    ids = tf.where(is_padding, 0, token_ids)
    maskable = ~is_padding & ~tf.gather(self._special, ids)
    draws = tf.random.stateless_uniform(tf.shape(ids), seed)
    if self.whole_word:
      # Each token takes the draw of its word's first piece: word k of a row
      # starts at the k-th position that does not continue a word (1, 2, ...
      # after [CLS] at 0), so a word is chosen or left whole.
      starts = ~tf.gather(self._continues, ids) | ~maskable
      word = tf.math.cumsum(tf.cast(starts, tf.int32), axis=1) - 1
      start_positions = tf.where(
          starts, tf.range(tf.shape(ids)[1])[tf.newaxis, :], tf.shape(ids)[1]
      )
      # Position of the k-th word start of each row (sorted ascending).
      start_positions = tf.sort(start_positions, axis=1)
      first_piece = tf.minimum(
          tf.gather(start_positions, tf.maximum(word, 0), batch_dims=1),
          tf.shape(ids)[1] - 1,
      )
      draws = tf.gather(draws, first_piece, batch_dims=1)
    return maskable & (draws < self.probability)

  def __call__(
      self,
      features: dict[str, tf.Tensor],
      token_ids: tf.Tensor,
      seed: tf.Tensor,
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(seed, 3)
    chosen = self.choose(token_ids, seeds[0])
    share = tf.random.stateless_uniform(tf.shape(token_ids), seeds[1])
    replacements = tf.gather(
        self._replacements,
        tf.random.stateless_uniform(
            tf.shape(token_ids),
            seeds[2],
            maxval=tf.shape(self._replacements)[0],
            dtype=tf.int32,
        ),
    )
    input_ids = features["input_ids"]
    input_ids = tf.where(
        chosen & (share < MASK_SHARE),
        tf.constant(self.mask_id, input_ids.dtype),
        tf.where(
            chosen & (share < MASK_SHARE + RANDOM_SHARE),
            replacements,
            input_ids,
        ),
    )
    labels = tf.where(chosen, token_ids, IGNORED)
    return {**features, "input_ids": input_ids}, labels


def masked_batches(
    dataset: tf.data.Dataset,
    masker: Masker,
    *,
    seed: int,
    fresh_each_epoch: bool,
) -> tf.data.Dataset:
  """Masks each (features, token_ids) batch of `dataset`.

  Args:
    dataset: Batches of (features, token_ids) (see `Masker`).
    masker: Chooses and replaces the targets.
    seed: Seeds the masks.
    fresh_each_epoch: New masks on every pass over `dataset` (training);
      else the same masks every pass (validation, so that epochs compare).

  Returns:
    Batches of (features, labels); the cardinality and options of
    `dataset` are kept.
  """
  seeds = tf.data.Dataset.random(
      seed=seed, rerandomize_each_iteration=fresh_each_epoch
  ).batch(2)
  masked = tf.data.Dataset.zip((dataset, seeds)).map(
      lambda batch, batch_seed: masker(*batch, batch_seed),
      num_parallel_calls=tf.data.AUTOTUNE,
  )
  return masked.prefetch(tf.data.AUTOTUNE)
