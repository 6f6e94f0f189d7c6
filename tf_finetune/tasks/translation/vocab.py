"""Vocabularies: a SentencePiece model trained on the run's text, or a
pretrained model's tokenizer, and their in-graph twins for the export.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

import tensorflow as tf

from tf_finetune import config as config_lib
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks.translation import model as model_lib
from tf_finetune.text import detokenization, tokenization

SPIECE_FILENAME = "spiece.model"


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
        model_proto=model_proto
    )
    self.pad_id = self._processor.pad_id()
    self.eos_id = self._processor.eos_id()
    self.size = self._processor.get_piece_size()

  @classmethod
  def train(
      cls, texts: Sequence[str], vocab_size: int, *, seed: int = 0
  ) -> SentencePieceVocab:
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
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        input_sentence_size=200_000,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )
    return cls(model.getvalue())

  @classmethod
  def load(cls, directory: str) -> SentencePieceVocab:
    with open(os.path.join(directory, SPIECE_FILENAME), "rb") as f:
      return cls(f.read())

  def save(self, directory: str) -> None:
    with open(os.path.join(directory, SPIECE_FILENAME), "wb") as f:
      f.write(self.model_proto)

  def encode(
      self, texts: Sequence[str], max_length: int, *, target: bool = False
  ) -> list[list[int]]:
    """Ids of each text, cut to `max_length` - 1, then end-of-sequence."""
    return [
        ids[: max_length - 1] + [self.eos_id]
        for ids in self._processor.encode(list(texts))
    ]

  def decode(self, rows: Sequence[Sequence[int]]) -> list[str]:
    return self._processor.decode([list(row) for row in rows])

  def graph_tokenizer(self):
    import tensorflow_text

    return tensorflow_text.SentencepieceTokenizer(
        model=self.model_proto, add_eos=True
    )

  def serving_tokenizer(self, max_length: int) -> SentencePieceServing:
    return SentencePieceServing(self, max_length)


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

  def encode(
      self, texts: Sequence[str], max_length: int, *, target: bool = False
  ) -> list[list[int]]:
    key = "text_target" if target else "text"
    return self.tokenizer(
        **{key: list(texts)}, max_length=max_length, truncation=True
    )["input_ids"]

  def decode(self, rows: Sequence[Sequence[int]]) -> list[str]:
    return self.tokenizer.batch_decode(
        [list(row) for row in rows], skip_special_tokens=True
    )

  def serving_tokenizer(self, max_length: int) -> HuggingFaceServing:
    return HuggingFaceServing(self, max_length)


class WarmStartVocab(HuggingFaceVocab):
  """An encoder checkpoint's tokenizer on both sides of a warm-started
  encoder-decoder: sources are [CLS] text [SEP] as the encoder was trained
  on; targets are text [SEP], since the decoder starts from [CLS] (BERT's
  tokens; <s>, </s> for RoBERTa)."""

  def __init__(self, tokenizer):
    super().__init__(tokenizer)
    ids = model_lib.special_token_ids(tokenizer)
    self.pad_id = ids["pad_token_id"]
    self.eos_id = ids["eos_token_id"]
    self.start_id = ids["decoder_start_token_id"]

  def encode(
      self, texts: Sequence[str], max_length: int, *, target: bool = False
  ) -> list[list[int]]:
    if not target:
      return super().encode(texts, max_length)
    # One more token, then without the leading [CLS]: max_length in all.
    return [
        ids[1:] if ids and ids[0] == self.start_id else ids
        for ids in super().encode(texts, max_length + 1, target=True)
    ]


def load_vocab(directory: str, *, warm_start: str = "none"):
  """The vocabulary a run saved in `directory`."""
  if warm_start != "none":
    return WarmStartVocab(backbone_lib.load_tokenizer(directory))
  if os.path.isfile(
      os.path.join(directory, SPIECE_FILENAME)
  ) and not os.path.isfile(os.path.join(directory, "tokenizer_config.json")):
    return SentencePieceVocab.load(directory)
  return HuggingFaceVocab(backbone_lib.load_tokenizer(directory))


def strip_generated(rows, eos_id: int, pad_id: int) -> list[list[int]]:
  """Generated ids up to (not including) the first end-of-sequence, without
  padding (the decoder start token is the pad token for T5 and Marian)."""
  stripped = []
  for row in rows:
    row = np.asarray(row).tolist()
    if eos_id in row:
      row = row[: row.index(eos_id)]
    stripped.append([token for token in row if token != pad_id])
  return stripped


def strip_generated_rows(generated, vocab) -> list[list[int]]:
  return [
      strip_generated([row], vocab.eos_id, vocab.pad_id)[0] for row in generated
  ]


# In-graph tokenizers of the export.
class SentencePieceServing(tf.Module):
  """A SentencePiece vocabulary in the graph (tensorflow-text): sources as
  training reads them, and generated ids back to text."""

  def __init__(self, vocab: SentencePieceVocab, max_length: int):
    super().__init__(name="sentencepiece_serving")
    self.tokenizer = vocab.graph_tokenizer()
    self.max_length = max_length
    self.eos_id = int(vocab.eos_id)

  def encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 ids [batch, (tokens)]: a long source keeps its first
    max_length - 1 pieces, then the end-of-sequence token, as in training."""
    ids = tf.cast(self.tokenizer.tokenize(texts), tf.int32)
    body = ids[:, :-1][:, : self.max_length - 1]
    rows = tf.shape(texts)[0]
    eos = tf.RaggedTensor.from_row_lengths(
        tf.fill([rows], self.eos_id), tf.ones([rows], tf.int64)
    )
    return tf.concat([body, eos], axis=1)

  def detokenize(self, ids: tf.RaggedTensor) -> tf.Tensor:
    return self.tokenizer.detokenize(ids)


class HuggingFaceServing(tf.Module):
  """A pretrained model's tokenizer in the graph (WordPiece, byte-level BPE
  or SentencePiece; `text.tokenization`, `text.detokenization`), checked
  against the tokenizer itself on sample texts when built."""

  def __init__(self, vocab: HuggingFaceVocab, max_length: int):
    super().__init__(name="tokenizer_serving")
    tokenizer = vocab.tokenizer
    limit = getattr(tokenizer, "model_max_length", None) or max_length
    if max_length > limit:
      raise ValueError(
          f"--max_source_length={max_length} exceeds the tokenizer's "
          f"maximum of {limit} tokens."
      )
    self.encoder = tokenization.TextEncoder.from_hf_tokenizer(
        tokenizer, max_length, model_inputs=("input_ids",)
    )
    self.detokenizer = detokenization.Detokenizer.from_hf_tokenizer(tokenizer)
    samples = list(tokenization.TRICKY_TEXTS) + [
        "Hello world.",
        "A test, with 3 numbers: 1, 2 and 3!",
        "I don't know if it's John's or theirs.",
    ]
    tokenization.check_matches_tokenizer(self.encoder, tokenizer, samples)
    targets = vocab.encode(samples, max_length, target=True)
    # Each target as written, and its ids reversed: pieces that continue a
    # word where no word is.
    detokenization.check_matches_decode(
        self.detokenizer, tokenizer, targets + [row[::-1] for row in targets]
    )

  def encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 ids [batch, (tokens)], special tokens and truncation as the
    tokenizer's (e.g. [CLS] text [SEP] for BERT)."""
    ids, _ = self.encoder.encode_ragged(texts)
    return ids

  def detokenize(self, ids: tf.RaggedTensor) -> tf.Tensor:
    return self.detokenizer.detokenize(ids)


def graph_vocab_of(vocab: HuggingFaceVocab, config: config_lib.RunConfig):
  """A pretrained tokenizer's vocabulary as the export tokenizes with it.

  A T5 checkpoint's own `spiece.model` when it gives the tokenizer's ids
  (tensorflow-text's SentencePiece); otherwise the tokenizer reproduced in
  the graph (`HuggingFaceServing`: WordPiece for BERT, byte-level BPE for
  BART and RoBERTa, SentencePiece from `tokenizer.json` for T5).

  Raises:
    ValueError: for tokenizers without an in-graph twin (Marian's two
      SentencePiece models plus vocab.json, slow tokenizers), or when the
      twin tokenizes or decodes differently.
  """
  tokenizer = vocab.tokenizer
  name = type(tokenizer).__name__
  vocab_file = getattr(tokenizer, "vocab_file", None)
  samples = ["Hello world.", "A test, with 3 numbers: 1, 2 and 3!"]
  if name.startswith("T5") and vocab_file and os.path.isfile(vocab_file):
    with open(vocab_file, "rb") as f:
      twin = SentencePieceVocab(f.read())
    ids = vocab.encode(samples, 512)
    # Both ways: the twin's ids, and its decoding of them.
    if twin.encode(samples, 512) == ids and twin.decode(ids) == vocab.decode(
        ids
    ):
      return twin
  try:
    vocab.serving_tokenizer(config.task.max_source_length)
  except ValueError as e:
    raise ValueError(
        f"Export of --model={config.model.model!r} ({name}) is not "
        f"supported: {str(e).splitlines()[0]} The SavedModel tokenizes raw "
        "strings in the graph. Translate with `python -m "
        "tf_finetune.predict --model_dir=...` instead, or serve token ids "
        "yourself."
    ) from e
  return vocab
