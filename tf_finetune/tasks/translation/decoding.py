"""Generation (greedy and beam search, in Python and in the graph) and
corpus BLEU and chrF."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import transformers


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
    length_penalty: float = 1.0,
) -> list[np.ndarray]:
  """Generated target ids of every source, in input order, by `transformers`'
  `generate`.

  Sources are batched by length (less padding) and the order restored.
  `no_repeat_ngram_size` > 0 forbids repeating any n-gram of that size
  within a translation (stops the loops of undertrained models);
  `length_penalty` is beam search's (see `Decoding`).
  """
  options = Decoding(
      num_beams=num_beams,
      length_penalty=length_penalty,
      no_repeat_ngram_size=no_repeat_ngram_size,
  ).generate_options()
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
        **options,
    )
    generated = np.asarray(generated)
    for row, i in enumerate(rows):
      outputs[i] = generated[row, 1:]  # Drops the decoder start token.
  return outputs


# The search's settings, and searching in the graph (the SavedModel).
@dataclasses.dataclass(frozen=True)
class Decoding:
  """How a translation is searched for.

  Attributes:
    num_beams: 1 decodes greedily; more keep that many hypotheses.
    length_penalty: Beam search ranks finished hypotheses by log-probability
      / length ** length_penalty: above 0 favours longer translations, below
      0 shorter ones (transformers' convention; greedy ignores it).
    no_repeat_ngram_size: Above 0, no n-gram of this size occurs twice in a
      translation.
  """

  num_beams: int = 1
  length_penalty: float = 1.0
  no_repeat_ngram_size: int = 0

  @classmethod
  def of(cls, settings) -> Decoding:
    """The decoding a run's translation settings ask for."""
    return cls(
        num_beams=settings.num_beams,
        length_penalty=settings.length_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
    )

  def generate_options(self) -> dict:
    """These settings as `transformers` `generate` keyword arguments."""
    options = {"num_beams": self.num_beams, "do_sample": False}
    if self.num_beams > 1:
      options["length_penalty"] = self.length_penalty
    if self.no_repeat_ngram_size:
      options["no_repeat_ngram_size"] = self.no_repeat_ngram_size
    return options


# transformers marks hypotheses that cannot be chosen with this score.
_EXCLUDED = -1.0e9


def repeated_ngram_tokens(
    sequences: tf.Tensor, length, ngram_size: int, vocab_size
) -> tf.Tensor:
  """Which next tokens would repeat an n-gram, in the graph.

  The next token t is banned for a row when its last ngram_size - 1 tokens
  followed by t already occur in the row's first `length` tokens (decoder
  start token included, as `transformers` counts).

  Args:
    sequences: int32 [rows, max_length] tokens, valid up to `length`.
    length: int32 scalar, the tokens written so far.
    ngram_size: n >= 1.
    vocab_size: The number of token ids.

  Returns:
    bool [rows, vocab_size], True for banned tokens.
  """
  rows = tf.shape(sequences)[0]
  # The n-grams starting at 0 .. length - n; none before n tokens.
  num_ngrams = tf.maximum(length - ngram_size + 1, 0)
  last = sequences[:, tf.maximum(length - ngram_size + 1, 0) : length]
  matches = tf.ones([rows, num_ngrams], tf.bool)
  for offset in range(ngram_size - 1):
    matches &= (
        sequences[:, offset : offset + num_ngrams]
        == last[:, offset : offset + 1]
    )
  followers = sequences[:, ngram_size - 1 : ngram_size - 1 + num_ngrams]
  row_ids = tf.broadcast_to(tf.range(rows)[:, None], tf.shape(followers))
  indices = tf.stack([row_ids, followers], axis=-1)
  banned = tf.scatter_nd(
      tf.reshape(indices, [-1, 2]),
      tf.reshape(tf.cast(matches, tf.int32), [-1]),
      tf.stack([rows, vocab_size]),
  )
  return banned > 0


class _Decoder:
  """One decoder step of any `transformers` TF encoder-decoder, with its
  key/value cache.

  Works in a `tf.while_loop` with an unknown batch size: the cache grows by
  one position a step. The model is called with the arguments every
  encoder-decoder takes (T5, BART, Marian, `TFEncoderDecoderModel`), not
  through `prepare_inputs_for_generation`, which for some decoders (BERT)
  needs a static batch size. The cache must keep its batch on axis 0 (not
  so for a GPT-2 decoder).
  """

  def __init__(
      self,
      seq2seq,
      input_ids,
      attention_mask,
      *,
      copies: int,
      max_new_tokens: int,
      no_repeat_ngram_size: int,
  ):
    self.seq2seq = seq2seq
    config = seq2seq.generation_config
    _check_rules_apply(config, type(seq2seq).__name__)
    self.no_repeat_ngram_size = no_repeat_ngram_size
    eos = config.eos_token_id
    self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    self.pad_id = config.pad_token_id
    if self.pad_id is None:
      self.pad_id = self.eos_ids[0]
    start = config.decoder_start_token_id
    if start is None:
      start = seq2seq.config.decoder_start_token_id
    self.start_id = start if start is not None else config.bos_token_id
    # The model's own generation rules, as `generate` applies them (e.g.
    # Marian never writes its pad token, BART ends at the length limit).
    self.banned_ids = [ids[0] for ids in config.bad_words_ids or []]
    self.min_length = config.min_length or 0
    self.forced_first_id = config.forced_bos_token_id
    self.forced_last_id = config.forced_eos_token_id
    self.max_length = max_new_tokens + 1
    encoded = seq2seq.get_encoder()(
        input_ids=input_ids, attention_mask=attention_mask, return_dict=True
    )
    # Each source repeated for its `copies` hypotheses (rows b * copies ..).
    self.encoder_outputs = transformers.modeling_tf_outputs.TFBaseModelOutput(
        last_hidden_state=tf.repeat(encoded.last_hidden_state, copies, axis=0)
    )
    self.attention_mask = tf.repeat(attention_mask, copies, axis=0)

  def is_end(self, tokens: tf.Tensor) -> tf.Tensor:
    ends = tf.zeros_like(tokens, tf.bool)
    for eos in self.eos_ids:
      ends |= tokens == eos
    return ends

  def step(self, sequences, length, cache):
    """(float32 [rows, vocab] next-token logits, the cache)."""
    written = sequences[:, :length]
    outputs = self.seq2seq(
        input_ids=None,
        attention_mask=self.attention_mask,
        decoder_input_ids=written if cache is None else written[:, -1:],
        decoder_attention_mask=tf.ones_like(written),
        encoder_outputs=self.encoder_outputs,
        past_key_values=cache,
        use_cache=True,
        return_dict=True,
        training=False,
    )
    return tf.cast(outputs.logits[:, -1], tf.float32), outputs.past_key_values

  def process(self, sequences, scores, length):
    """Generation rules on [rows, vocab] scores, in `generate`'s order: a
    banned token scores -inf, a forced one 0 and all others -inf."""
    token_ids = tf.range(tf.shape(scores)[1])[None, :]
    if self.no_repeat_ngram_size:
      banned = repeated_ngram_tokens(
          sequences, length, self.no_repeat_ngram_size, tf.shape(scores)[1]
      )
      scores = tf.where(banned, -float("inf"), scores)
    for token in self.banned_ids:
      scores = tf.where(token_ids == token, -float("inf"), scores)
    if self.min_length > 0 and self.eos_ids:
      too_short = (length < self.min_length) & self.is_end(token_ids)
      scores = tf.where(too_short, -float("inf"), scores)
    for forced, at_length in (
        (self.forced_first_id, 1),
        (self.forced_last_id, self.max_length - 1),
    ):
      if forced is not None:
        only = tf.where(token_ids == forced, 0.0, -float("inf"))
        scores = tf.where(
            length == at_length, tf.broadcast_to(only, tf.shape(scores)), scores
        )
    return scores


def _check_rules_apply(config, model_name: str) -> None:
  """Refuses generation rules the graph search does not apply."""
  unsupported = {
      "repetition_penalty": config.repetition_penalty not in (None, 1.0),
      "bad_words_ids": any(len(ids) > 1 for ids in config.bad_words_ids or []),
      "suppress_tokens": bool(config.suppress_tokens),
      "begin_suppress_tokens": bool(config.begin_suppress_tokens),
      "forced_decoder_ids": bool(getattr(config, "forced_decoder_ids", None)),
  }
  for name, used in unsupported.items():
    if used:
      raise ValueError(
          f"{model_name}'s generation config sets {name}="
          f"{getattr(config, name)!r}, which the exported search does not "
          "apply (it applies bad_words_ids of one token, min_length, "
          "forced_bos_token_id and forced_eos_token_id); translate with "
          "predict --model_dir instead."
      )


def _loop(condition, body, state: dict, max_steps):
  """tf.while_loop over a dict whose "cache" grows along its time axis."""
  invariants = {
      name: tf.nest.map_structure(
          lambda tensor: tf.TensorShape(
              [None] * (tensor.shape.rank - 1) + tensor.shape[-1:]
          ),
          value,
      )
      if name == "cache"
      else tf.nest.map_structure(lambda tensor: tensor.shape, value)
      for name, value in state.items()
  }
  return tf.while_loop(
      lambda state: condition(**state),
      lambda state: (body(**state),),
      (state,),
      shape_invariants=(invariants,),
      maximum_iterations=max_steps,
  )[0]


def search_in_graph(
    seq2seq,
    input_ids: tf.Tensor,
    attention_mask: tf.Tensor,
    *,
    decoding: Decoding,
    max_new_tokens: int,
) -> tf.Tensor:
  """Greedy or beam search as `transformers`' `generate` does it, in a graph
  that takes any batch size.

  `generate`'s own beam search cannot be traced with an unknown batch size
  (it broadcasts to static shapes) and its n-gram ban runs eagerly only;
  this re-implements both searches with the same rules (scores, length
  penalty, stopping), so a SavedModel translates as `generate` does.

  Args:
    seq2seq: A `transformers` TF encoder-decoder.
    input_ids: int32 [batch, source_len] source ids, padded.
    attention_mask: int32 [batch, source_len], 1 on real tokens.
    decoding: Beams, length penalty, n-gram ban.
    max_new_tokens: Most tokens generated per translation.

  Returns:
    int32 [batch, 1 + generated]: the decoder start token, then the
    translation; pad ids follow the end-of-sequence token.
  """
  beams = decoding.num_beams
  decoder = _Decoder(
      seq2seq,
      input_ids,
      tf.cast(attention_mask, tf.int32),
      copies=beams,
      max_new_tokens=max_new_tokens,
      no_repeat_ngram_size=decoding.no_repeat_ngram_size,
  )
  batch = tf.shape(input_ids)[0]
  max_length = decoder.max_length
  if beams == 1:
    return _greedy(decoder, batch, max_length)
  return _beam_search(
      decoder, batch, max_length, beams, decoding.length_penalty
  )


def _greedy(decoder: _Decoder, batch, max_length: int) -> tf.Tensor:
  sequences = tf.concat(
      [
          tf.fill([batch, 1], decoder.start_id),
          tf.fill([batch, max_length - 1], decoder.pad_id),
      ],
      axis=1,
  )

  def body(length, sequences, finished, cache):
    logits, cache = decoder.step(sequences, length, cache)
    logits = decoder.process(sequences, logits, length)
    tokens = tf.argmax(logits, axis=-1, output_type=tf.int32)
    tokens = tf.where(finished, decoder.pad_id, tokens)
    finished |= decoder.is_end(tokens)
    sequences = tf.tensor_scatter_nd_update(
        sequences,
        tf.stack([tf.range(batch), tf.fill([batch], length)], axis=1),
        tokens,
    )
    return dict(
        length=length + 1, sequences=sequences, finished=finished, cache=cache
    )

  def condition(length, sequences, finished, cache):
    del sequences, cache
    return (length < max_length) & ~tf.reduce_all(finished)

  # The first step makes the cache the loop then carries.
  state = body(tf.constant(1), sequences, tf.zeros([batch], tf.bool), None)
  state = _loop(condition, body, state, max_length - 1)
  return state["sequences"][:, : state["length"]]


def _beam_search(
    decoder: _Decoder, batch, max_length: int, beams: int, length_penalty
) -> tf.Tensor:
  """Beam search with `transformers`' rules: 2 x beams candidates a step,
  finished ones scored by log-probability / generated length ** penalty."""
  early_stopping = decoder.seq2seq.generation_config.early_stopping
  candidates = 2 * beams

  def flat(tensor):  # [batch, beams, ...] -> [batch * beams, ...]
    return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))

  def pick(tensor, indices):  # along the beam axis, per source
    return tf.gather(tensor, indices, axis=1, batch_dims=1)

  def body(
      length, running, running_scores, finished_seqs, scores, finished, cache
  ):
    logits, cache = decoder.step(flat(running), length, cache)
    log_probs = decoder.process(
        flat(running), tf.nn.log_softmax(logits), length
    )
    vocab_size = tf.shape(log_probs)[-1]
    log_probs = tf.reshape(log_probs, [batch, beams, -1])
    totals = tf.reshape(
        log_probs + running_scores[:, :, None], [batch, beams * vocab_size]
    )
    top_scores, top_indices = tf.math.top_k(totals, k=candidates)
    from_beam = top_indices // vocab_size
    tokens = top_indices % vocab_size
    top_seqs = tf.tensor_scatter_nd_update(
        tf.transpose(pick(running, from_beam), [2, 0, 1]),
        [[length]],
        tokens[None],
    )
    top_seqs = tf.transpose(top_seqs, [1, 2, 0])
    ends = decoder.is_end(tokens)
    # Only the best `beams` candidates may finish; ending ones never run on.
    just_finished = ends & (tf.range(candidates) < beams)[None, :]
    running_candidates = top_scores + tf.cast(ends, tf.float32) * _EXCLUDED
    next_running = tf.math.top_k(running_candidates, k=beams)[1]
    new_running = pick(top_seqs, next_running)
    new_running_scores = pick(running_candidates, next_running)
    normalized = top_scores / (tf.cast(length, tf.float32) ** length_penalty)
    full = tf.reduce_all(finished, axis=1, keepdims=True) & (
        early_stopping is True
    )
    normalized += tf.cast(~just_finished | full, tf.float32) * _EXCLUDED
    merged_scores = tf.concat([scores, normalized], axis=1)
    best = tf.math.top_k(merged_scores, k=beams)[1]
    new_finished_seqs = pick(tf.concat([finished_seqs, top_seqs], axis=1), best)
    new_scores = pick(merged_scores, best)
    new_finished = pick(tf.concat([finished, just_finished], axis=1), best)
    # Rows b * beams + beam of the cache follow their hypotheses.
    parents = pick(from_beam, next_running) + tf.range(batch)[:, None] * beams
    cache = tf.nest.map_structure(
        lambda tensor: tf.gather(tensor, tf.reshape(parents, [-1]), axis=0),
        cache,
    )
    return dict(
        length=length + 1,
        running=new_running,
        running_scores=new_running_scores,
        finished_seqs=new_finished_seqs,
        scores=new_scores,
        finished=new_finished,
        cache=cache,
    )

  def condition(
      length, running, running_scores, finished_seqs, scores, finished, cache
  ):
    del running, finished_seqs, cache
    generated = length - 1
    if early_stopping == "never" and length_penalty > 0.0:
      generated = max_length - 1
    best_running = running_scores[:, :1] / (
        tf.cast(generated, tf.float32) ** length_penalty
    )
    worst_finished = tf.where(
        finished, tf.reduce_min(scores, axis=1, keepdims=True), _EXCLUDED
    )
    can_improve = tf.reduce_any(best_running > worst_finished)
    open_beams = ~(tf.reduce_all(finished) & (early_stopping is True))
    return (length < max_length) & open_beams & can_improve

  start = tf.concat(
      [
          tf.fill([batch, beams, 1], decoder.start_id),
          tf.fill([batch, beams, max_length - 1], decoder.pad_id),
      ],
      axis=2,
  )
  # Only the first copy of each source starts alive.
  first = tf.constant([0.0] + [_EXCLUDED] * (beams - 1))
  state = body(
      length=tf.constant(1),
      running=start,
      running_scores=tf.tile(first[None], [batch, 1]),
      finished_seqs=tf.fill([batch, beams, max_length], decoder.pad_id),
      scores=tf.fill([batch, beams], _EXCLUDED),
      finished=tf.zeros([batch, beams], tf.bool),
      cache=None,
  )
  state = _loop(condition, body, state, max_length - 1)
  # A source with no finished hypothesis returns its best running one.
  any_finished = tf.reduce_any(state["finished"], axis=1)
  best = tf.where(
      any_finished[:, None],
      state["finished_seqs"][:, 0],
      state["running"][:, 0],
  )
  return best[:, : state["length"]]


def translation_metrics(
    hypotheses: Sequence[str], references: Sequence[str]
) -> dict:
  """Corpus BLEU and chrF (sacreBLEU's defaults) of detokenized texts, and
  BLEU ignoring case ("bleu_lowercase"): what an uncased vocabulary (such
  as an uncased BERT's, warm-started) can reach, since it writes in lower
  case and cased BLEU counts every capital it cannot write as wrong."""
  import sacrebleu

  hypotheses, reference_sets = list(hypotheses), [list(references)]
  bleu = sacrebleu.metrics.BLEU()
  chrf = sacrebleu.metrics.CHRF()
  bleu_score = bleu.corpus_score(hypotheses, reference_sets)
  chrf_score = chrf.corpus_score(hypotheses, reference_sets)
  caseless = sacrebleu.metrics.BLEU(lowercase=True).corpus_score(
      hypotheses, reference_sets
  )
  return {
      "num_examples": len(references),
      "bleu": round(float(bleu_score.score), 4),
      "bleu_lowercase": round(float(caseless.score), 4),
      "chrf": round(float(chrf_score.score), 4),
      "bleu_precisions": [round(float(p), 4) for p in bleu_score.precisions],
      "brevity_penalty": round(float(bleu_score.bp), 4),
      "empty_translations": sum(1 for text in hypotheses if not text.strip()),
      "bleu_signature": str(bleu.get_signature()),
      "chrf_signature": str(chrf.get_signature()),
  }
