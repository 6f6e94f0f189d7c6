"""Translation: an encoder-decoder writes the target text of a source text.

Unlike the other tasks this one does not put a head on an encoder: the model
is a whole `transformers` TF encoder-decoder (`TFAutoModelForSeq2SeqLM`: T5,
Marian, BART families), either pretrained (`--model`) or built from a config
with random weights (`--model_config`) together with a SentencePiece
vocabulary trained on the training sources and targets. The task therefore
owns its model (`owns_model`): it builds, saves, loads and exports it, while
the shared training loop keeps the schedules, AdamW, mixed precision,
callbacks (early stopping, best and final checkpoints, backups, TensorBoard)
and the run summary.

Data: CSV, TSV or JSONL files with `--source_column`/`--target_column`,
plain line-aligned files (`--train_file=train.en --train_target_file=
train.es`), or TFDS translation data sets (`--tfds_name=wmt14_translate/de-en
--source_language=en --target_language=de`).

Training is teacher-forced: the decoder reads the target shifted right by one
(after the decoder start token) and learns to predict each next token; padding
is masked out of the loss and of the token accuracy. Evaluation generates
translations (greedy, or beam search with `--num_beams`) and scores them with
sacreBLEU's corpus BLEU and chrF.

Serving: `serving_default` takes raw source strings `text` (string [batch])
and returns `translation` (string [batch]); SentencePiece tokenization and
greedy generation run in the graph (T5 and from-scratch models only).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from tf_finetune import callbacks, config as config_lib, io_utils, serving
from tf_finetune.data import pipeline, readers
from tf_finetune.tasks import base

# Pads target ids in a batch; never a real token id, so the loss mask is
# simply `labels != LABEL_PADDING` whatever the tokenizer's pad id is.
LABEL_PADDING = -1
SPIECE_FILENAME = "spiece.model"
TRANSLATION_OUTPUT = "translation"
# The built-in from-scratch model (--model_config=default): a small T5, 3+3
# layers of width 256; with an 8,000-piece vocabulary it has about 9.4M
# parameters, small enough to train from scratch on a CPU.
DEFAULT_T5_CONFIG = {
    "model_type": "t5", "d_model": 256, "d_kv": 32, "d_ff": 1024,
    "num_layers": 3, "num_decoder_layers": 3, "num_heads": 8,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.1,
    "feed_forward_proj": "relu", "tie_word_embeddings": True,
}
# TFDS translation data sets whose source and target are features named by
# language code.
TFDS_FEATURE_HINT = ("wmt14_translate/de-en, wmt_t2t_translate/de-en: "
                     "--source_language=en --target_language=de")


# Reading.
def _decode_utf8(path: str, flag: str) -> str:
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} does not exist.")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ValueError(f"{path}:{line}: the file is not valid UTF-8 (byte "
                     f"0x{raw[e.start]:02x}); save it as UTF-8.") from e


def read_lines(path: str, flag: str) -> list[str]:
  """The lines of a plain UTF-8 text file, one sentence each.

  Raises:
    ValueError: for a missing, empty or non-UTF-8 file or an empty line,
      naming the file and line.
  """
  content = _decode_utf8(path, flag)
  lines = content.split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # The final newline ends the last line.
  lines = [line[:-1] if line.endswith("\r") else line for line in lines]
  if not lines:
    raise ValueError(f"{flag}={path!r} is empty.")
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      raise ValueError(f"{path}:{number}: empty line; {flag} needs one "
                       "sentence on every line.")
  return lines


def is_plain_text(path: str) -> bool:
  """Whether `path` is not a CSV, TSV or JSONL file (by its extension)."""
  return os.path.splitext(path)[1].lower() not in readers.SUFFIX_FORMATS


def read_line_aligned(source_path: str, target_path: Optional[str], *,
                      flag: str, source_column: str = "source",
                      target_column: str = "target") -> readers.Examples:
  """Reads a source file and (optionally) its line-aligned translations."""
  sources = read_lines(source_path, flag)
  targets = None
  if target_path:
    target_flag = flag.replace("_file", "_target_file")
    targets = read_lines(target_path, target_flag)
    if len(targets) != len(sources):
      raise ValueError(
          f"{flag}={source_path!r} has {len(sources)} lines but "
          f"{target_flag}={target_path!r} has {len(targets)}; line-aligned "
          "files need one translation per source line.")
  rows = [{source_column: source} for source in sources]
  if targets is not None:
    for row, target in zip(rows, targets):
      row[target_column] = target
  return readers.Examples(source_path, sources, None, targets,
                          list(range(1, len(sources) + 1)), rows)


def read_parallel_records(path: str, *, flag: str, source_column: str,
                          target_column: Optional[str]) -> readers.Examples:
  """Reads sources (and targets) from the columns of a CSV/TSV/JSONL file."""
  rows, lines, columns = readers.read_records(path, flag)
  if not rows:
    raise ValueError(f"{flag}={path!r} has a header but no examples.")
  found = {}
  for name, column_flag in ((source_column, "--source_column"),
                            (target_column, "--target_column")):
    if name is None:
      continue
    values = readers.column_values(rows, lines, columns, name, path,
                                   column_flag, as_text=True)
    for value, line in zip(values, lines):
      if not value.strip():
        raise ValueError(f"{path}:{line}: the {column_flag}={name!r} value "
                         "is empty; every example needs a sentence there.")
    found[name] = values
  return readers.Examples(path, found[source_column], None,
                          found.get(target_column), lines, rows)


def read_tfds_translation(name: str, split: str, *, data_dir: Optional[str],
                          source_language: str, target_language: str,
                          with_targets: bool = True) -> readers.Examples:
  """Reads a TFDS split whose translation feature is keyed by language."""
  import tensorflow_datasets as tfds  # Heavy; only when TFDS is used.

  dataset, info = tfds.load(name, split=split, data_dir=data_dir,
                            with_info=True, shuffle_files=False)
  languages = list(info.features.keys())
  for flag, language in (("--source_language", source_language),
                         ("--target_language", target_language)):
    if language not in languages:
      raise ValueError(f"{flag}={language!r} is not a language of {name}; "
                       f"it has: {', '.join(languages)}.")
  sources, targets, rows = [], [], []
  for record in tfds.as_numpy(dataset):
    sources.append(record[source_language].decode("utf-8"))
    targets.append(record[target_language].decode("utf-8"))
    rows.append({"source": sources[-1], "target": targets[-1]})
  if not sources:
    raise ValueError(f"--tfds_name={name!r} split {split!r} is empty.")
  return readers.Examples(f"{name}[{split}]", sources, None,
                          targets if with_targets else None,
                          list(range(1, len(sources) + 1)), rows)


def prefix_with_space(prefix: str) -> str:
  """The prefix ending in one space ("translate English to German: ").

  Flag files strip trailing spaces, so the space is put back here.
  """
  return prefix if not prefix or prefix.endswith(" ") else prefix + " "


def with_prefix(prefix: str, text: str) -> str:
  return prefix_with_space(prefix) + text


# Vocabularies.
class SentencePieceVocab:
  """A SentencePiece model with T5's ids: pad 0, end-of-sequence 1, unk 2.

  Encodes in Python for training data (the C++ library) and in the graph
  for serving (tensorflow-text), with the same model file.
  """

  in_graph = True

  def __init__(self, model_proto: bytes):
    import sentencepiece
    self.model_proto = model_proto
    self._processor = sentencepiece.SentencePieceProcessor(
        model_proto=model_proto)
    self.pad_id = self._processor.pad_id()
    self.eos_id = self._processor.eos_id()
    self.size = self._processor.get_piece_size()

  @classmethod
  def train(cls, texts: Sequence[str], vocab_size: int, *,
            seed: int = 0) -> "SentencePieceVocab":
    """A unigram SentencePiece model learned from `texts`.

    `vocab_size` is an upper bound: a small corpus gets fewer pieces rather
    than an error.
    """
    import sentencepiece
    model = io.BytesIO()
    # Seeds the sampling of sentences when there are more than
    # input_sentence_size.
    sentencepiece.set_random_generator_seed(seed)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model,
        vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        input_sentence_size=200_000, shuffle_input_sentence=True,
        num_threads=2, minloglevel=2)
    return cls(model.getvalue())

  @classmethod
  def load(cls, directory: str) -> "SentencePieceVocab":
    with open(os.path.join(directory, SPIECE_FILENAME), "rb") as f:
      return cls(f.read())

  def save(self, directory: str) -> None:
    with open(os.path.join(directory, SPIECE_FILENAME), "wb") as f:
      f.write(self.model_proto)

  def encode(self, texts: Sequence[str], max_length: int, *,
             target: bool = False) -> list[list[int]]:
    """Ids of each text, cut to `max_length` - 1, then end-of-sequence."""
    return [ids[:max_length - 1] + [self.eos_id]
            for ids in self._processor.encode(list(texts))]

  def decode(self, rows: Sequence[Sequence[int]]) -> list[str]:
    return self._processor.decode([list(row) for row in rows])

  def graph_tokenizer(self):
    import tensorflow_text
    return tensorflow_text.SentencepieceTokenizer(model=self.model_proto,
                                                  add_eos=True)


class HuggingFaceVocab:
  """A pretrained model's own tokenizer (T5, Marian, BART, ...)."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.pad_id = tokenizer.pad_token_id
    self.eos_id = tokenizer.eos_token_id
    self.size = len(tokenizer)
    self.in_graph = False

  def save(self, directory: str) -> None:
    self.tokenizer.save_pretrained(directory)

  def encode(self, texts: Sequence[str], max_length: int, *,
             target: bool = False) -> list[list[int]]:
    key = "text_target" if target else "text"
    return self.tokenizer(**{key: list(texts)}, max_length=max_length,
                          truncation=True)["input_ids"]

  def decode(self, rows: Sequence[Sequence[int]]) -> list[str]:
    return self.tokenizer.batch_decode([list(row) for row in rows],
                                       skip_special_tokens=True)


def load_vocab(directory: str):
  """The vocabulary a run saved in `directory`."""
  if os.path.isfile(os.path.join(directory, SPIECE_FILENAME)) and not \
      os.path.isfile(os.path.join(directory, "tokenizer_config.json")):
    return SentencePieceVocab.load(directory)
  from tf_finetune.models import backbone as backbone_lib
  return HuggingFaceVocab(backbone_lib.load_tokenizer(directory))


def strip_generated(rows, eos_id: int, pad_id: int) -> list[list[int]]:
  """Generated ids up to (not including) the first end-of-sequence, without
  padding (the decoder start token is the pad token for T5 and Marian)."""
  stripped = []
  for row in rows:
    row = np.asarray(row).tolist()
    if eos_id in row:
      row = row[:row.index(eos_id)]
    stripped.append([token for token in row if token != pad_id])
  return stripped


# Training.
def shift_targets(labels: tf.Tensor, *, decoder_start_id: int,
                  pad_id: int) -> tf.Tensor:
  """Teacher forcing: the decoder's inputs are the targets moved right.

  Args:
    labels: int32 [batch, target_len] target ids padded with LABEL_PADDING.
    decoder_start_id: The first decoder input.
    pad_id: The tokenizer's pad id, replacing LABEL_PADDING.

  Returns:
    int32 [batch, target_len]: decoder_start_id, labels[:, :-1], with
    padding as pad_id. [[5, 6, 1, -1]] -> [[0, 5, 6, 1]] for T5.
  """
  labels = tf.cast(labels, tf.int32)
  start = tf.fill([tf.shape(labels)[0], 1], decoder_start_id)
  shifted = tf.concat([start, labels[:, :-1]], axis=1)
  return tf.where(shifted == LABEL_PADDING, pad_id, shifted)


def masked_token_losses(labels: tf.Tensor, logits: tf.Tensor, *,
                        label_smoothing: float = 0.0
                        ) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-token cross-entropy, zero at padding.

  Args:
    labels: int [batch, target_len], padded with LABEL_PADDING.
    logits: float [batch, target_len, vocab].
    label_smoothing: Mass moved from the true token to all tokens uniformly.

  Returns:
    (losses, mask): float32 [batch, target_len] each; mask is 1 on real
    target tokens.
  """
  logits = tf.cast(logits, tf.float32)
  mask = tf.cast(labels != LABEL_PADDING, tf.float32)
  safe_labels = tf.where(labels == LABEL_PADDING, 0, tf.cast(labels,
                                                              tf.int32))
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  true_log_prob = tf.gather(log_probs, safe_labels, batch_dims=2)
  losses = -true_log_prob
  if label_smoothing:
    # (1 - e) * NLL + e * mean over the vocabulary of -log p: the
    # cross-entropy against targets (1 - e) one-hot + e / vocab.
    losses = ((1.0 - label_smoothing) * losses -
              label_smoothing * tf.reduce_mean(log_probs, axis=-1))
  return losses * mask, mask


class Seq2SeqModel(tf_keras.Model):
  """Wraps a `transformers` TF encoder-decoder for teacher-forced `fit`.

  Batches are (features, labels) from `pipeline`: features hold the source
  `input_ids` and `attention_mask` (int32 [batch, source_len]); labels the
  target ids (int32 [batch, target_len], LABEL_PADDING after the end). The
  logged `loss` and `token_accuracy` are means over real target tokens.

  Attributes:
    seq2seq: The `transformers` model (saved with this model's weights).
    vocab: The tokenizer wrapper, for evaluation's decoding (not saved).
  """

  def __init__(self, seq2seq, *, vocab=None, label_smoothing: float = 0.0):
    super().__init__(name="seq2seq_model")
    self.seq2seq = seq2seq
    self.vocab = vocab
    self.label_smoothing = label_smoothing
    config = seq2seq.config
    self.pad_id = int(config.pad_token_id)
    self.decoder_start_id = int(config.decoder_start_token_id
                                if config.decoder_start_token_id is not None
                                else config.pad_token_id)
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.accuracy_tracker = tf_keras.metrics.Mean(name="token_accuracy")

  @property
  def metrics(self):
    return [self.loss_tracker, self.accuracy_tracker]

  def call(self, inputs, training=False):
    """float [batch, target_len, vocab] logits of each next target token."""
    return self.seq2seq(input_ids=inputs["input_ids"],
                        attention_mask=inputs["attention_mask"],
                        decoder_input_ids=inputs["decoder_input_ids"],
                        training=training).logits

  def _loss(self, inputs, labels, training):
    decoder_input_ids = shift_targets(labels,
                                      decoder_start_id=self.decoder_start_id,
                                      pad_id=self.pad_id)
    logits = self({"input_ids": inputs["input_ids"],
                   "attention_mask": inputs["attention_mask"],
                   "decoder_input_ids": decoder_input_ids}, training=training)
    losses, mask = masked_token_losses(labels, logits,
                                       label_smoothing=self.label_smoothing)
    tokens = tf.reduce_sum(mask)
    loss = tf.reduce_sum(losses) / tf.maximum(tokens, 1.0)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                               tf.cast(labels, tf.int32)), tf.float32)
    self.loss_tracker.update_state(loss, sample_weight=tokens)
    self.accuracy_tracker.update_state(correct, sample_weight=mask)
    return loss

  def train_step(self, data):
    inputs, labels = data
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
      loss = self._loss(inputs, labels, training=True)
      if self.losses:
        loss += tf.add_n(self.losses)
      # Replicas' gradients are summed: each contributes its share of the
      # mean (2 replicas: half of each one's mean token loss).
      loss = loss / replicas
    self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
    return {metric.name: metric.result() for metric in self.metrics}

  def test_step(self, data):
    inputs, labels = data
    self._loss(inputs, labels, training=False)
    return {metric.name: metric.result() for metric in self.metrics}

  def dummy_inputs(self) -> dict[str, tf.Tensor]:
    ids = tf.constant([[self.pad_id, self.pad_id]], tf.int32)
    return {"input_ids": ids, "attention_mask": tf.ones_like(ids),
            "decoder_input_ids": ids}


def model_config_from(path: str, vocab_size: int, *, pad_id: int,
                      eos_id: int):
  """The `transformers` config of a from-scratch model, sized to the vocab."""
  import transformers
  if path == config_lib.DEFAULT_MODEL_CONFIG:
    values = dict(DEFAULT_T5_CONFIG)
  else:
    try:
      with open(path, encoding="utf-8") as f:
        values = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"--model_config={path!r} is not valid JSON "
                       f"({e.msg} at line {e.lineno}).") from e
  model_type = values.pop("model_type", None)
  if model_type is None:
    raise ValueError(f"--model_config={path!r} has no \"model_type\" (t5, "
                     "bart, marian, ...).")
  values.update(vocab_size=vocab_size, pad_token_id=pad_id,
                eos_token_id=eos_id, decoder_start_token_id=pad_id)
  try:
    return transformers.AutoConfig.for_model(model_type, **values)
  except ValueError as e:
    raise ValueError(f"--model_config={path!r}: {e}") from e


def _seq2seq_class():
  import transformers
  return transformers.TFAutoModelForSeq2SeqLM


def build_seq2seq(model_config):
  """A randomly initialized encoder-decoder with its variables created."""
  try:
    seq2seq = _seq2seq_class().from_config(model_config)
  except ValueError as e:
    raise ValueError(f"{type(model_config).__name__} is not a TF "
                     f"encoder-decoder: {str(e).splitlines()[0]}") from e
  return seq2seq


# Generation and metrics.
def generate_ids(seq2seq, source_ids: Sequence[Sequence[int]], *,
                 batch_size: int, num_beams: int, max_new_tokens: int,
                 pad_id: int, jit_compile: bool = False,
                 no_repeat_ngram_size: int = 0) -> list[np.ndarray]:
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
    rows = order[start:start + batch_size]
    longest = max(len(source_ids[i]) for i in rows)
    num_rows = len(rows)
    if jit_compile:
      # Every distinct shape is compiled anew, which is slow:
      # full batches (the last one padded with copies of its first row) and
      # lengths rounded up to multiples of 32 keep the shapes few.
      longest = -(-longest // 32) * 32
      num_rows = batch_size
    batch = np.full((num_rows, longest), pad_id, np.int32)
    mask = np.zeros_like(batch)
    for row in range(num_rows):
      i = rows[row] if row < len(rows) else rows[0]
      batch[row, :len(source_ids[i])] = source_ids[i]
      mask[row, :len(source_ids[i])] = 1
    generated = generate(input_ids=tf.constant(batch),
                         attention_mask=tf.constant(mask),
                         max_new_tokens=max_new_tokens, num_beams=num_beams,
                         do_sample=False, **options)
    generated = np.asarray(generated)
    for row, i in enumerate(rows):
      outputs[i] = generated[row, 1:]  # Drops the decoder start token.
  return outputs


def translation_metrics(hypotheses: Sequence[str],
                        references: Sequence[str]) -> dict:
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


# Serving.
class TranslationServer(tf.Module):
  """Raw source strings in, translated strings out, all in the graph.

  Tokenization (tensorflow-text SentencePiece) and greedy generation
  (`transformers`' TF `generate`, traced) run in the SavedModel.
  """

  def __init__(self, seq2seq, vocab, *, source_prefix: str,
               max_source_length: int, max_target_length: int):
    super().__init__(name="translation_server")
    self.seq2seq = seq2seq
    self.tokenizer = vocab.graph_tokenizer()
    self.source_prefix = source_prefix
    self.max_source_length = max_source_length
    self.max_target_length = max_target_length
    self.pad_id, self.eos_id = int(vocab.pad_id), int(vocab.eos_id)
    self.get_label_vocab = tf.function(lambda: tf.constant([], tf.string),
                                       input_signature=[])
    self.get_task = tf.function(lambda: tf.constant(Translation.name),
                                input_signature=[])

  def serve(self, text):
    if self.source_prefix:
      text = tf.strings.join([prefix_with_space(self.source_prefix), text])
    ids = tf.cast(self.tokenizer.tokenize(text), tf.int32)
    # Long sources keep their first max_source_length - 1 pieces, then the
    # end-of-sequence token, as in training.
    body = ids[:, :-1][:, :self.max_source_length - 1]
    eos = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.shape(text)[0]], self.eos_id),
        tf.ones([tf.shape(text)[0]], tf.int64))
    ids = tf.concat([body, eos], axis=1)
    input_ids = ids.to_tensor(self.pad_id)
    attention_mask = tf.sequence_mask(ids.row_lengths(),
                                      tf.shape(input_ids)[1], tf.int32)
    generated = self.seq2seq.generate(
        input_ids=input_ids, attention_mask=attention_mask,
        max_new_tokens=self.max_target_length, num_beams=1, do_sample=False)
    generated = tf.cast(generated[:, 1:], tf.int32)
    # Keep what comes before the first end-of-sequence, without padding.
    before_end = tf.cumsum(tf.cast(generated == self.eos_id, tf.int32),
                           axis=1) == 0
    keep = tf.logical_and(before_end, generated != self.pad_id)
    pieces = tf.ragged.boolean_mask(generated, keep)
    return {TRANSLATION_OUTPUT: self.tokenizer.detokenize(pieces)}

  def signatures(self) -> dict:
    serve = tf.function(self.serve, input_signature=[
        tf.TensorSpec([None], tf.string, name="text")])
    return {serving.DEFAULT_SIGNATURE: serve.get_concrete_function()}


class PythonTranslator:
  """The serving signature's contract (text -> translation) in Python, for
  `predict --model_dir`: works for every vocabulary and uses --num_beams."""

  def __init__(self, model: Seq2SeqModel, task: config_lib.TaskConfig,
               batch_size: int = 64):
    self.model = model
    self.task = task
    self.batch_size = batch_size

  def translate(self, texts: Sequence[str]) -> list[str]:
    vocab = self.model.vocab
    source_ids = vocab.encode([with_prefix(self.task.source_prefix, text)
                               for text in texts],
                              self.task.max_source_length)
    generated = generate_ids(
        self.model.seq2seq, source_ids, batch_size=self.batch_size,
        num_beams=self.task.num_beams,
        max_new_tokens=self.task.max_target_length, pad_id=vocab.pad_id,
        jit_compile=self.task.jit_generate,
        no_repeat_ngram_size=self.task.no_repeat_ngram_size)
    return vocab.decode(strip_generated_rows(generated, vocab))

  def serve(self, text):
    texts = [value.decode("utf-8") for value in np.asarray(text).tolist()]
    return {TRANSLATION_OUTPUT: tf.constant(self.translate(texts),
                                            tf.string)}

  def signatures(self) -> dict:
    return {serving.DEFAULT_SIGNATURE: self.serve}


# The task.
@dataclasses.dataclass(frozen=True)
class TrainedTranslator:
  """What `Translation.load_trained` rebuilds; see `artifacts.TrainedModel`.
  """

  config: config_lib.RunConfig
  label_vocab: list
  tokenizer: object
  encoder: object
  model: Seq2SeqModel
  task_state: dict = dataclasses.field(default_factory=dict)


class Translation(base.Task):
  """A target-language text per source text, by an encoder-decoder."""

  name = "translation"
  owns_model = True
  checked_output = TRANSLATION_OUTPUT

  # Reading.
  def read(self, data, split, *, path=None, with_labels=True):
    task = self.config
    target_path = None
    if path is None:
      path = getattr(data, f"{split}_file")
      target_path = getattr(data, f"{split}_target_file")
    flag = f"--{split}_file"
    if path:
      if target_path or (is_plain_text(path) and not with_labels):
        return read_line_aligned(
            path, target_path if with_labels else None, flag=flag,
            source_column=task.source_column,
            target_column=task.target_column)
      if is_plain_text(path):
        raise ValueError(
            f"{flag}={path!r} is a plain text file; give its line-aligned "
            f"translations with --{split}_target_file, or use a .tsv, .csv "
            f"or .jsonl file with --source_column={task.source_column!r} "
            f"and --target_column={task.target_column!r}.")
      return read_parallel_records(
          path, flag=flag, source_column=task.source_column,
          target_column=task.target_column if with_labels else None)
    tfds_split = getattr(data, f"tfds_{split}_split")
    if data.tfds_name and tfds_split:
      if not (task.source_language and task.target_language):
        raise ValueError(f"--tfds_name={data.tfds_name!r} needs "
                         "--source_language and --target_language ("
                         f"{TFDS_FEATURE_HINT}).")
      return read_tfds_translation(
          data.tfds_name, tfds_split, data_dir=data.tfds_data_dir,
          source_language=task.source_language,
          target_language=task.target_language, with_targets=with_labels)
    return None

  def label_vocab(self, examples):
    return []

  def encode(self, examples, encoder, label_vocab):
    task = self.config
    sources = [with_prefix(task.source_prefix, text)
               for text in examples.texts]
    source_ids = encoder.encode(sources, task.max_source_length)
    lengths = np.array([len(ids) for ids in source_ids], np.int64)
    truncated = sum(1 for ids in source_ids
                    if len(ids) >= task.max_source_length)
    input_ids = tf.ragged.constant(source_ids, dtype=tf.int32,
                                   ragged_rank=1)
    label_ids = None
    if examples.labels is not None:
      target_ids = encoder.encode(examples.labels, task.max_target_length,
                                  target=True)
      label_ids = tf.ragged.constant(target_ids, dtype=tf.int32,
                                     ragged_rank=1)
      long_targets = sum(1 for ids in target_ids
                         if len(ids) >= task.max_target_length)
      if long_targets:
        logging.info("%s: %d of %d targets reached --max_target_length=%d "
                     "tokens (longer ones were cut).", examples.source,
                     long_targets, len(examples), task.max_target_length)
    if truncated:
      logging.info("%s: %d of %d sources reached --max_source_length=%d "
                   "tokens (longer ones were cut).", examples.source,
                   truncated, len(examples), task.max_source_length)
    # The pipeline batches (and buckets) by source length; targets pad with
    # LABEL_PADDING, which the loss masks out.
    return pipeline.EncodedExamples(
        input_ids=input_ids, token_type_ids=tf.zeros_like(input_ids),
        lengths=lengths, label_ids=label_ids, num_truncated=truncated,
        label_padding=LABEL_PADDING)

  # The model.
  def prepare(self, config: config_lib.RunConfig) -> dict:
    """Reads and encodes the splits; loads or trains the vocabulary."""
    examples = self.read_splits(config.data)
    train_examples = examples["train"]
    model = config.model
    if model.model_config:
      logging.info("Training a SentencePiece vocabulary of at most %d pieces "
                   "on %d sources and targets.", self.config.vocab_size,
                   len(train_examples))
      vocab = SentencePieceVocab.train(
          [with_prefix(self.config.source_prefix, text)
           for text in train_examples.texts]
          + train_examples.labels, self.config.vocab_size,
          seed=config.train.seed)
      logging.info("Vocabulary: %d pieces.", vocab.size)
    else:
      from tf_finetune.models import backbone as backbone_lib
      backbone_lib.check_model_source(model.model, model.allow_pickle_weights)
      vocab = HuggingFaceVocab(backbone_lib.load_tokenizer(model.model))
    encoded = {split: self.encode(found, vocab, [])
               for split, found in examples.items()}
    return {"label_vocab": [], "tokenizer": vocab, "encoder": vocab,
            "examples": examples, "encoded": encoded}

  def build_model(self, config: config_lib.RunConfig, prepared, *,
                  total_steps: int, steps_per_epoch: int,
                  learning_rate=None) -> Seq2SeqModel:
    """The compiled model: pretrained, or from --model_config."""
    from tf_finetune import optimization
    model_config, train_config = config.model, config.train
    vocab = prepared.encoder
    if model_config.model_config:
      seq2seq = build_seq2seq(model_config_from(
          model_config.model_config, vocab.size, pad_id=vocab.pad_id,
          eos_id=vocab.eos_id))
    else:
      try:
        seq2seq = _seq2seq_class().from_pretrained(model_config.model)
      except (OSError, ValueError) as e:
        raise ValueError(f"--model={model_config.model!r} is not a TF "
                         "encoder-decoder this toolkit can load: "
                         f"{str(e).splitlines()[0]}") from e
    if vocab.size > seq2seq.config.vocab_size:
      raise ValueError(
          f"--model={model_config.model!r}: the tokenizer has {vocab.size} "
          f"tokens but the model's embedding table only "
          f"{seq2seq.config.vocab_size}; they do not belong together.")
    model = Seq2SeqModel(seq2seq, vocab=vocab,
                         label_smoothing=train_config.label_smoothing)
    model(model.dummy_inputs())
    logging.info("Encoder-decoder %s: %d parameters.",
                 type(seq2seq).__name__, seq2seq.count_params())
    optimizer = optimization.create_optimizer(
        train_config, total_steps, steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate)
    model.compile(optimizer=optimizer,
                  steps_per_execution=train_config.steps_per_execution,
                  jit_compile=train_config.jit_compile)
    return model

  def save_run_files(self, model_dir: str, config: config_lib.RunConfig,
                     prepared, model: Seq2SeqModel) -> None:
    """config.json, the vocabulary (tokenizer/) and the architecture."""
    from tf_finetune import artifacts
    config_lib.write_config(config, model_dir)
    for name, save in ((artifacts.TOKENIZER_DIR, prepared.encoder.save),
                       (artifacts.BACKBONE_DIR,
                        model.seq2seq.config.save_pretrained)):
      with io_utils.staged_directory(os.path.join(model_dir, name),
                                     replace=True) as staging:
        save(staging)

  def load_trained(self, model_dir: str,
                   config: config_lib.RunConfig) -> TrainedTranslator:
    """Rebuilds the trained model from `model_dir` (no download)."""
    import transformers
    from tf_finetune import artifacts
    weights_dir = os.path.join(model_dir, artifacts.FINAL_WEIGHTS_DIR)
    io_utils.recover_staged_directory(weights_dir)
    if not os.path.isfile(callbacks.weights_path(weights_dir) + ".index"):
      raise ValueError(f"--model_dir={model_dir!r} has no trained weights in "
                       f"{artifacts.FINAL_WEIGHTS_DIR}; did training finish?")
    vocab = load_vocab(os.path.join(model_dir, artifacts.TOKENIZER_DIR))
    model_config = transformers.AutoConfig.from_pretrained(
        os.path.join(model_dir, artifacts.BACKBONE_DIR))
    model = Seq2SeqModel(build_seq2seq(model_config), vocab=vocab)
    model(model.dummy_inputs())
    artifacts.restore_weights(model, weights_dir)
    return TrainedTranslator(config, [], vocab, vocab, model)

  def export(self, trained, *, export_base: str,
             sample_texts: Sequence[str] = ()) -> str:
    """Exports raw strings -> translations; returns the version directory.

    Raises:
      ValueError: when the vocabulary cannot tokenize in the graph.
    """
    vocab = trained.encoder
    if not vocab.in_graph:
      vocab = graph_vocab_of(vocab, trained.config)
    data_task = trained.config.task
    server = TranslationServer(
        trained.model.seq2seq, vocab, source_prefix=data_task.source_prefix,
        max_source_length=data_task.max_source_length,
        max_target_length=data_task.max_target_length)
    texts = ["Hello.", "", "A longer sentence, with punctuation: ok?"] + list(
        sample_texts)
    inputs = tf.constant(texts[:16])
    expected = server.serve(inputs)[TRANSLATION_OUTPUT].numpy()
    version_dir = os.path.join(export_base,
                               str(serving.next_version(export_base)))
    with io_utils.staged_directory(version_dir, replace=False) as staging:
      tf.saved_model.save(server, staging, signatures=server.signatures())
      serving.write_warmup_requests(staging, texts)
      reloaded = tf.saved_model.load(staging)
      got = reloaded.signatures[serving.DEFAULT_SIGNATURE](text=inputs)
      if list(got[TRANSLATION_OUTPUT].numpy()) != list(expected):
        raise RuntimeError("The reloaded SavedModel translates differently "
                           "from the trained model; the export was "
                           "discarded.")
    logging.info("Exported SavedModel version %s to %s.",
                 os.path.basename(version_dir), version_dir)
    return version_dir

  # Evaluation.
  def predict(self, model, encoded, *, batch_size, pad_id):
    """Translations (strings) of every example, in input order."""
    source_ids = encoded.input_ids.to_list()
    generated = generate_ids(
        model.seq2seq, source_ids, batch_size=batch_size,
        num_beams=self.config.num_beams,
        max_new_tokens=self.config.max_target_length, pad_id=pad_id,
        jit_compile=self.config.jit_generate,
        no_repeat_ngram_size=self.config.no_repeat_ngram_size)
    vocab = model.vocab
    return vocab.decode(strip_generated_rows(generated, vocab))

  def metrics(self, examples, encoded, outputs, label_vocab, state):
    return dict(translation_metrics(outputs, examples.labels),
                num_beams=self.config.num_beams,
                no_repeat_ngram_size=self.config.no_repeat_ngram_size)

  def describe(self, metrics):
    return (f"BLEU: {metrics['bleu']:.2f}  chrF: {metrics['chrf']:.2f}  "
            f"({metrics['num_examples']} examples)")

  # Serving and prediction files.
  def server(self, model, encoder, label_vocab, *, text_pair, state):
    """Translates in Python (any vocabulary, beam search included)."""
    return PythonTranslator(model, self.config)

  def prediction_rows(self, outputs, label_vocab):
    return [{TRANSLATION_OUTPUT: text.decode("utf-8")
             if isinstance(text, bytes) else text}
            for text in outputs[TRANSLATION_OUTPUT]]

  def read_prediction_input(self, path, *, text_column, text_pair_column):
    """A plain text file (any extension but .csv, .tsv, .jsonl) holds one
    source per line; a CSV/TSV/JSONL file has a source column."""
    del text_pair_column  # Translation reads one text.
    if is_plain_text(path):
      return read_line_aligned(path, None, flag="--input_file")
    return read_parallel_records(
        path, flag="--input_file",
        source_column=text_column or self.config.source_column,
        target_column=None)

  def write_prediction_file(self, path, examples, rows):
    """One translation per line for a plain text file; otherwise each input
    row with its `translation` column."""
    if not is_plain_text(path):
      return super().write_prediction_file(path, examples, rows)
    io_utils.write_text_atomically(path, "".join(
        row[TRANSLATION_OUTPUT].replace("\n", " ") + "\n" for row in rows))


def strip_generated_rows(generated, vocab) -> list[list[int]]:
  return [strip_generated([row], vocab.eos_id, vocab.pad_id)[0]
          for row in generated]


def graph_vocab_of(vocab: HuggingFaceVocab, config: config_lib.RunConfig):
  """The in-graph SentencePiece twin of a pretrained T5 tokenizer.

  Raises:
    ValueError: for tokenizers without one (BPE vocabularies of BART, the
      two SentencePiece models plus vocab.json of Marian), or when the twin
      tokenizes differently.
  """
  tokenizer = vocab.tokenizer
  name = type(tokenizer).__name__
  vocab_file = getattr(tokenizer, "vocab_file", None)
  if not name.startswith("T5") or not vocab_file or not os.path.isfile(
      vocab_file):
    raise ValueError(
        f"Export of --model={config.model.model!r} ({name}) is not "
        "supported: the SavedModel tokenizes raw strings in the graph, "
        "which this toolkit does for SentencePiece (T5-style) vocabularies "
        "only. Translate with `python -m tf_finetune.predict --model_dir=...`"
        " instead, or serve token ids yourself.")
  with open(vocab_file, "rb") as f:
    twin = SentencePieceVocab(f.read())
  samples = ["Hello world.", "A test, with 3 numbers: 1, 2 and 3!"]
  if twin.encode(samples, 512) != vocab.encode(samples, 512):
    raise ValueError(f"Export of --model={config.model.model!r}: its "
                     "SentencePiece model tokenizes differently from its "
                     "tokenizer; refusing to export a server that would.")
  return twin
