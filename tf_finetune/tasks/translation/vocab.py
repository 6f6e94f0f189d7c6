"""Vocabularies: a SentencePiece model trained on the run's text, or a
pretrained model's tokenizer, and their in-graph twins for the export.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from tf_finetune import config as config_lib
from tf_finetune.models import backbone as backbone_lib

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


def load_vocab(directory: str):
  """The vocabulary a run saved in `directory`."""
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
  if (
      not name.startswith("T5")
      or not vocab_file
      or not os.path.isfile(vocab_file)
  ):
    raise ValueError(
        f"Export of --model={config.model.model!r} ({name}) is not "
        "supported: the SavedModel tokenizes raw strings in the graph, "
        "which this toolkit does for SentencePiece (T5-style) vocabularies "
        "only. Translate with `python -m tf_finetune.predict --model_dir=...`"
        " instead, or serve token ids yourself."
    )
  with open(vocab_file, "rb") as f:
    twin = SentencePieceVocab(f.read())
  samples = ["Hello world.", "A test, with 3 numbers: 1, 2 and 3!"]
  if twin.encode(samples, 512) != vocab.encode(samples, 512):
    raise ValueError(
        f"Export of --model={config.model.model!r}: its "
        "SentencePiece model tokenizes differently from its "
        "tokenizer; refusing to export a server that would."
    )
  return twin
