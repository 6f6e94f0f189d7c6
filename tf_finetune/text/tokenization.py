"""In-graph tokenization and packing that reproduce the model's own tokenizer.

One `TextEncoder` serves both the training pipeline (inside `tf.data`) and the
exported SavedModel (inside its serving signature), so the ids a model is
trained on and the ids it is served with are the same by construction. It is
built from the Hugging Face tokenizer that ships with the checkpoint and is
checked against it on sample texts: `check_matches_tokenizer` refuses a model
whose tokenizer it does not reproduce exactly.

Sub-word tokenizers live beside it, one module per tokenizer type
(`wordpiece.WordPiece`, `bpe.ByteLevelBPE`,
`sentencepiece.SentencePiece`); this module packs their ids into model inputs with
the special tokens of the checkpoint's tokenizer (its `tokenizer.json`
post-processor: `[CLS] a [SEP] b [SEP]` for BERT, `<s> a </s></s> b </s>` for
RoBERTa) and its truncation rule.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

import tensorflow as tf

from tf_finetune.text import bpe, families, long_documents, sentencepiece
from tf_finetune.text.long_documents import CHUNK_MASK, LongDocuments
from tf_finetune.text.wordpiece import (
    TokenizerNotSupportedError,
    WordPiece,
    spec_from_hf_tokenizer,
)

# Texts the export check always includes: accents, CJK, punctuation runs,
# control characters, an empty string and a word too long to split.
TRICKY_TEXTS = (
    "Hello, World! It's a wonderful day.",
    "naïve café résumé — Ünïcödé",
    "The movie's plot was 12345 unbelievably   bad!!",
    "中文 text and 日本語",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp",
    "",
    "supercalifragilisticexpialidocious" * 4,
    "e-mail: someone@example.com, cost $3.50 (50%)",
    "Wait for it… 9 ½ Weeks, İstanbul, Ångström, ﬁne",
)

# Every input a packed example has, in the order of serving signatures.
MODEL_INPUTS = families.BASE_INPUTS + (families.TOKEN_TYPE_IDS,)

# An item of a template: a special token's id, or a segment ("A" or "B"),
# with its token type.
Item = tuple[int | str, int]


@dataclasses.dataclass(frozen=True)
class Template:
  """Where a tokenizer puts special tokens around one text or a pair.

  Attributes:
    single: Items for one text, e.g. ((101, 0), ("A", 0), (102, 0)) for
      BERT's [CLS] A [SEP].
    pair: Items for a pair, e.g. [CLS] A [SEP] B [SEP] with types 0 0 0 1 1.
  """

  single: tuple[Item, ...]
  pair: tuple[Item, ...]

  def __post_init__(self):
    for items, segments in ((self.single, ["A"]), (self.pair, ["A", "B"])):
      if [t for t, _ in items if isinstance(t, str)] != segments:
        raise TokenizerNotSupportedError(
            f"The tokenizer's template {items} does not hold the "
            f"segments {segments} once each, in order."
        )

  def num_special_tokens(self, pair: bool) -> int:
    items = self.pair if pair else self.single
    return sum(1 for token, _ in items if not isinstance(token, str))

  def render(self, id_to_token, pair: bool = True) -> str:
    """E.g. "[CLS] A [SEP] B [SEP]" (`id_to_token` maps special ids)."""
    items = self.pair if pair else self.single
    return " ".join(
        token if isinstance(token, str) else id_to_token(token)
        for token, _ in items
    )

  @classmethod
  def bert(cls, cls_id: int, sep_id: int) -> Template:
    return cls(
        single=((cls_id, 0), ("A", 0), (sep_id, 0)),
        pair=((cls_id, 0), ("A", 0), (sep_id, 0), ("B", 1), (sep_id, 1)),
    )


def tokenizer_json(tokenizer) -> dict[str, Any]:
  """The `tokenizer.json` of a `transformers` fast tokenizer, parsed."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise TokenizerNotSupportedError(
        f"{type(tokenizer).__name__} is not a fast tokenizer; in-graph "
        "tokenization needs a tokenizer.json (or the files a fast tokenizer "
        "is built from)."
    )
  return json.loads(backend.to_str())


def _processor_template(processor: Optional[dict]) -> Template:
  if processor is None:
    return Template(single=(("A", 0),), pair=(("A", 0), ("B", 1)))
  kind = processor.get("type")
  if kind == "Sequence":
    packing = [
        p
        for p in processor["processors"]
        if p.get("type")
        in ("BertProcessing", "RobertaProcessing", "TemplateProcessing")
    ]
    others = [
        p["type"]
        for p in processor["processors"]
        if p not in packing and p.get("type") != "ByteLevel"
    ]
    if len(packing) > 1 or others:
      raise TokenizerNotSupportedError(
          "The tokenizer's post-processor chains "
          f"{[p.get('type') for p in processor['processors']]}; in-graph "
          "packing supports one BERT, RoBERTa or template processor."
      )
    return _processor_template(packing[0] if packing else None)
  if kind == "ByteLevel":  # Only trims offsets; adds no tokens.
    return _processor_template(None)
  if kind == "BertProcessing":
    return Template.bert(processor["cls"][1], processor["sep"][1])
  if kind == "RobertaProcessing":
    cls_id, sep_id = processor["cls"][1], processor["sep"][1]
    return Template(
        single=((cls_id, 0), ("A", 0), (sep_id, 0)),
        pair=(
            (cls_id, 0),
            ("A", 0),
            (sep_id, 0),
            (sep_id, 0),
            ("B", 0),
            (sep_id, 0),
        ),
    )
  if kind == "TemplateProcessing":
    specials = processor["special_tokens"]

    def items(pieces):
      out = []
      for piece in pieces:
        if "Sequence" in piece:
          out.append((piece["Sequence"]["id"], piece["Sequence"]["type_id"]))
        else:
          token = piece["SpecialToken"]
          for token_id in specials[token["id"]]["ids"]:
            out.append((token_id, token["type_id"]))
      return tuple(out)

    return Template(
        single=items(processor["single"]), pair=items(processor["pair"])
    )
  raise TokenizerNotSupportedError(
      f"The tokenizer's post-processor is {kind}; in-graph packing supports "
      "BERT, RoBERTa and template post-processors."
  )


def template_from_hf(tokenizer) -> Template:
  """The special tokens a fast tokenizer adds, from its post-processor."""
  return _processor_template(tokenizer_json(tokenizer).get("post_processor"))


def subword_tokenizer_from_hf(tokenizer) -> tuple[str, tf.Module]:
  """(tokenizer type, in-graph tokenizer) reproducing a fast tokenizer.

  Raises:
    TokenizerNotSupportedError: for a tokenizer no in-graph tokenizer here
      reproduces, saying what it is.
  """
  spec = tokenizer_json(tokenizer)
  model_type = spec.get("model", {}).get("type")
  if model_type == "WordPiece":
    wordpiece = spec_from_hf_tokenizer(tokenizer)
    return families.WORDPIECE, WordPiece(
        vocab=wordpiece["vocab"],
        lower_case=wordpiece["lower_case"],
        unk_token=tokenizer.unk_token,
        special_tokens=wordpiece["special_tokens"],
    )
  pre_tokenizer = spec.get("pre_tokenizer") or {}
  kinds = {pre_tokenizer.get("type")} | {
      inner.get("type") for inner in pre_tokenizer.get("pretokenizers", [])
  }
  if model_type == "BPE" and "ByteLevel" in kinds:
    return families.BYTE_LEVEL_BPE, bpe.ByteLevelBPE(
        **bpe.spec_from_hf_tokenizer(spec)
    )
  if model_type in ("Unigram", "BPE") and "Metaspace" in kinds:
    return families.SENTENCEPIECE, sentencepiece.SentencePiece(
        **sentencepiece.spec_from_hf_tokenizer(tokenizer, spec)
    )
  raise TokenizerNotSupportedError(
      f"{type(tokenizer).__name__} is a {model_type} tokenizer with a "
      f"{pre_tokenizer.get('type')} pre-tokenizer; in-graph tokenization "
      "supports WordPiece, byte-level BPE and SentencePiece tokenizers."
  )


class TextEncoder(tf.Module):
  """Raw strings to packed model inputs: [CLS] a [SEP] (b [SEP]) for BERT.

  Holds a sub-word tokenizer of any supported type and the checkpoint
  tokenizer's template of special tokens. A pair's truncation follows the
  Hugging Face "longest_first" rule exactly: with a budget of B tokens for
  two segments of lengths a <= b, the shorter keeps min(a, B // 2) and the
  longer the rest (ties give the extra token to the second segment). One
  text longer than its budget is truncated, or split into windows, as
  `long_documents` says (`long_documents.LongDocuments`; by default its
  first tokens are kept, as the Hugging Face tokenizers keep them).
  """

  def __init__(
      self,
      *,
      tokenizer: tf.Module,
      template: Template,
      max_seq_length: int,
      pad_id: int,
      tokenizer_type: str,
      model_inputs: Sequence[str] = MODEL_INPUTS,
      long_documents: LongDocuments = long_documents.HEAD_TRUNCATION,
      name: Optional[str] = None,
  ):
    super().__init__(name=name)
    unknown = set(model_inputs) - set(MODEL_INPUTS)
    if unknown:
      raise ValueError(f"Unknown model inputs: {sorted(unknown)}.")
    self.max_seq_length = max_seq_length
    self.template = template
    self.pad_id = pad_id
    self.tokenizer_type = tokenizer_type
    self.model_inputs = tuple(n for n in MODEL_INPUTS if n in model_inputs)
    self._tokenizer = tokenizer
    specials = [t for t, _ in template.single if not isinstance(t, str)]
    # The first and last special tokens of one text: [CLS] and [SEP].
    self.cls_id = specials[0] if specials else pad_id
    self.sep_id = specials[-1] if specials else pad_id
    self.long_documents = long_documents
    long_documents.check_budget(self.budget, max_seq_length)

  @property
  def budget(self) -> int:
    """Tokens of one text that fit one input: 128 - 2 for [CLS] a [SEP]."""
    return max(self.max_seq_length - self.num_special_tokens(), 0)

  @property
  def chunks(self) -> bool:
    """Whether a long text is read in windows (`encode` adds CHUNK_MASK)."""
    return self.long_documents.chunks

  @property
  def lower_case(self) -> bool:
    """Whether the tokenizer lowercases and strips accents (WordPiece)."""
    return bool(getattr(self._tokenizer, "lower_case", False))

  @classmethod
  def wordpiece(
      cls,
      *,
      vocab: Sequence[str],
      lower_case: bool,
      max_seq_length: int,
      cls_token: str = "[CLS]",
      sep_token: str = "[SEP]",
      pad_token: str = "[PAD]",
      unk_token: str = "[UNK]",
      model_inputs: Sequence[str] = MODEL_INPUTS,
      long_documents: LongDocuments = long_documents.HEAD_TRUNCATION,
  ) -> TextEncoder:
    """A BERT-style encoder from a WordPiece vocabulary."""
    vocab = list(vocab)
    index = {token: i for i, token in enumerate(vocab)}
    for token in (cls_token, sep_token, pad_token, unk_token):
      if token not in index:
        raise TokenizerNotSupportedError(
            f"Special token {token!r} is not in the vocabulary."
        )
    return cls(
        tokenizer=WordPiece(
            vocab=vocab, lower_case=lower_case, unk_token=unk_token
        ),
        template=Template.bert(index[cls_token], index[sep_token]),
        max_seq_length=max_seq_length,
        pad_id=index[pad_token],
        tokenizer_type=families.WORDPIECE,
        model_inputs=model_inputs,
        long_documents=long_documents,
    )

  @classmethod
  def from_hf_tokenizer(
      cls,
      tokenizer,
      max_seq_length: int,
      *,
      model_inputs: Optional[Sequence[str]] = None,
      long_documents: LongDocuments = long_documents.HEAD_TRUNCATION,
  ) -> TextEncoder:
    """Builds the encoder from a `transformers` fast tokenizer.

    Args:
      tokenizer: The checkpoint's fast tokenizer.
      max_seq_length: Tokens per example, special tokens included.
      model_inputs: The inputs the model takes (its family's); default
        those the tokenizer returns.
      long_documents: How a text longer than one input is read.

    Raises:
      TokenizerNotSupportedError: for a tokenizer that cannot be reproduced
        in the graph, naming its type and why.
      ValueError: for a max_seq_length beyond the model's, or windows
        that do not advance.
    """
    limit = getattr(tokenizer, "model_max_length", None) or max_seq_length
    if max_seq_length > limit:
      raise ValueError(
          f"--max_seq_length={max_seq_length} exceeds the "
          f"model's maximum of {limit} tokens."
      )
    tokenizer_type, subword = subword_tokenizer_from_hf(tokenizer)
    if tokenizer.pad_token_id is None:
      raise TokenizerNotSupportedError(
          f"{type(tokenizer).__name__} has no padding token."
      )
    if model_inputs is None:
      model_inputs = [
          n for n in MODEL_INPUTS if n in tokenizer.model_input_names
      ]
    return cls(
        tokenizer=subword,
        template=template_from_hf(tokenizer),
        max_seq_length=max_seq_length,
        pad_id=tokenizer.pad_token_id,
        tokenizer_type=tokenizer_type,
        model_inputs=model_inputs,
        long_documents=long_documents,
    )

  @property
  def bert_layout(self) -> bool:
    """WordPiece words packed as [CLS] a [SEP] b [SEP], types 0 and 1.

    What the word-level tasks (token classification, question answering)
    assume: each word's sub-words are those of the word alone.
    """
    return self.tokenizer_type == families.WORDPIECE and (
        self.template == Template.bert(self.cls_id, self.sep_id)
    )

  def num_special_tokens(self, pair: bool = False) -> int:
    return self.template.num_special_tokens(pair)

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """int32 RaggedTensor [batch, (tokens)] of sub-word ids, no specials."""
    return self._tokenizer.tokenize(texts)

  def pack(
      self, first: tf.RaggedTensor, second: Optional[tf.RaggedTensor] = None
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Truncates segments and joins them with the template's special tokens.

    Args:
      first: int32 RaggedTensor [batch, (a)] of token ids.
      second: Optional int32 RaggedTensor [batch, (b)].

    Returns:
      (input_ids, token_type_ids), int32 RaggedTensors [batch, (length)] with
      length <= max_seq_length.

    Raises:
      ValueError: for a pair when long texts are not head-truncated.
    """
    batch = first.nrows()
    if second is None:
      items = self.template.single
      segments = {
          "A": long_documents.keep(first, self.budget, self.long_documents)
      }
    else:
      if not self.long_documents.is_default:
        raise ValueError(
            "Sentence pairs are truncated longest-first from the end; "
            "--truncation=head --long_document=truncate is the only choice "
            "for them."
        )
      items = self.template.pair
      # The segments share what the special tokens leave: 128 - 3 = 125
      # for BERT's [CLS] a [SEP] b [SEP], 128 - 4 for RoBERTa's.
      budget = max(self.max_seq_length - self.num_special_tokens(True), 0)
      length_a = tf.cast(first.row_lengths(), tf.int32)
      length_b = tf.cast(second.row_lengths(), tf.int32)
      first_is_shorter = length_a <= length_b
      shorter = tf.minimum(
          tf.where(first_is_shorter, length_a, length_b), budget // 2
      )
      keep_a = tf.where(
          first_is_shorter, shorter, tf.minimum(length_a, budget - shorter)
      )
      keep_b = tf.where(
          first_is_shorter, tf.minimum(length_b, budget - shorter), shorter
      )
      segments = {
          "A": _keep_first(first, keep_a),
          "B": _keep_first(second, keep_b),
      }
    return self._join(items, segments, batch)

  def _join(self, items, segments, batch):
    """The template's items with its segments put in: (ids, types)."""
    ids, types = [], []
    for token, type_id in items:
      if isinstance(token, str):
        part = segments[token]
      else:
        part = tf.fill([batch, 1], tf.constant(token, tf.int32))
      ids.append(part)
      types.append(tf.ones_like(part) * type_id)
    return tf.concat(ids, axis=1), tf.concat(types, axis=1)

  def pack_windows(
      self, first: tf.RaggedTensor
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Splits each text into windows, each packed with the special tokens.

    Args:
      first: int32 RaggedTensor [batch, (a)] of token ids.

    Returns:
      (input_ids, token_type_ids), int32 RaggedTensors [batch, (windows),
      (length)] with 1 <= windows <= max_chunks, length <= max_seq_length.
      Truncating rather than chunking, each text is one window (`pack`).
    """
    if not self.chunks:
      ids, types = self.pack(first)
      return (
          tf.RaggedTensor.from_uniform_row_length(ids, 1),
          tf.RaggedTensor.from_uniform_row_length(types, 1),
      )
    windows = long_documents.windows(first, self.budget, self.long_documents)
    ids, types = self._join(
        self.template.single, {"A": windows.values}, windows.values.nrows()
    )
    return windows.with_values(ids), windows.with_values(types)

  def encode_ragged(
      self, texts: tf.Tensor, text_pairs: Optional[tf.Tensor] = None
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    second = None if text_pairs is None else self.tokenize(text_pairs)
    return self.pack(self.tokenize(texts), second)

  def encode_windows(
      self, texts: tf.Tensor
  ) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """(input_ids, token_type_ids) [batch, (windows), (length)] of texts."""
    return self.pack_windows(self.tokenize(texts))

  def encode(
      self, texts: tf.Tensor, text_pairs: Optional[tf.Tensor] = None
  ) -> dict[str, tf.Tensor]:
    """Raw strings to model inputs padded to the longest in the batch.

    Args:
      texts: string Tensor [batch].
      text_pairs: Optional string Tensor [batch].

    Returns:
      Dict of int32 Tensors [batch, seq_len], one per model input:
      input_ids, attention_mask and, where the model takes them,
      token_type_ids. Reading long texts in windows, the inputs are
      [batch, windows, seq_len] (padded with whole windows of padding) and
      CHUNK_MASK [batch, windows] marks each text's windows.
    """
    if not self.chunks:
      input_ids, type_ids = self.encode_ragged(texts, text_pairs)
      features = pad_inputs(input_ids, type_ids, self.pad_id)
      return {name: features[name] for name in self.model_inputs}
    if text_pairs is not None:
      raise ValueError(
          "--long_document=chunks reads single texts, not sentence pairs."
      )
    input_ids, type_ids = self.encode_windows(texts)
    features = pad_inputs(input_ids, type_ids, self.pad_id)
    features = {name: features[name] for name in self.model_inputs}
    windows = input_ids.row_lengths(axis=2)  # [batch, (windows)]
    features[CHUNK_MASK] = tf.ones_like(windows, tf.int32).to_tensor(0)
    return features


def _keep_first(ids: tf.RaggedTensor, limit) -> tf.RaggedTensor:
  """Keeps the first `limit` tokens of each row (`limit` scalar or [batch])."""
  positions = tf.ragged.range(tf.cast(ids.row_lengths(), tf.int32))
  limit = tf.convert_to_tensor(limit, tf.int32)
  if limit.shape.rank == 1:
    limit = limit[:, tf.newaxis]
  return tf.ragged.boolean_mask(ids, positions < limit)


def pad_inputs(
    input_ids: tf.RaggedTensor, type_ids: tf.RaggedTensor, pad_id: int
) -> dict[str, tf.Tensor]:
  return {
      "input_ids": input_ids.to_tensor(default_value=pad_id),
      "attention_mask": tf.ones_like(input_ids).to_tensor(default_value=0),
      "token_type_ids": type_ids.to_tensor(default_value=0),
  }


def check_matches_tokenizer(
    encoder: TextEncoder,
    tokenizer,
    texts: Sequence[str],
    text_pairs: Optional[Sequence[str]] = None,
) -> None:
  """Raises ValueError unless `encoder` gives `tokenizer`'s ids on `texts`.

  Token types are compared too where the model takes them. Texts that are
  not head-truncated (`encoder.long_documents`) are compared window by
  window with what the tokenizer gives when it truncates and splits them
  the same way (`long_documents.reference_windows`).
  """
  texts = list(texts)
  pairs = None if text_pairs is None else list(text_pairs)
  with_types = families.TOKEN_TYPE_IDS in encoder.model_inputs
  if not encoder.long_documents.is_default:
    if pairs is not None:
      raise ValueError(
          "Sentence pairs are truncated longest-first from the end; "
          "--truncation=head --long_document=truncate is the only choice "
          "for them."
      )
    _check_windows(encoder, tokenizer, texts, with_types)
    return
  if pairs is None:
    expected = tokenizer(
        texts,
        truncation=True,
        max_length=encoder.max_seq_length,
        return_token_type_ids=with_types,
    )
  else:
    expected = tokenizer(
        texts,
        pairs,
        truncation="longest_first",
        max_length=encoder.max_seq_length,
        return_token_type_ids=with_types,
    )
  got_ids, got_types = encoder.encode_ragged(
      tf.constant(texts, tf.string),
      None if pairs is None else tf.constant(pairs, tf.string),
  )
  got_ids, got_types = got_ids.to_list(), got_types.to_list()
  for i, text in enumerate(texts):
    want_ids = expected["input_ids"][i]
    if got_ids[i] == want_ids:
      if with_types and got_types[i] != expected["token_type_ids"][i]:
        raise ValueError(
            f"In-graph packing gives token types {got_types[i][:12]} on text "
            f"{text[:80]!r} but the model's tokenizer gives "
            f"{expected['token_type_ids'][i][:12]}; refusing to train or "
            "export a model that would be served different inputs than it "
            "was trained on."
        )
      continue
    at = next(
        (j for j, (a, b) in enumerate(zip(got_ids[i], want_ids)) if a != b),
        min(len(got_ids[i]), len(want_ids)),
    )
    raise ValueError(
        f"In-graph tokenization differs from the model's tokenizer on text "
        f"{text[:80]!r} at token {at}: expected ids {want_ids[at:at + 5]}, "
        f"got {got_ids[i][at:at + 5]}; refusing to train or export a model "
        "that would be served different ids than it was trained on."
    )


def _check_windows(
    encoder: TextEncoder, tokenizer, texts: list[str], with_types: bool
) -> None:
  """check_matches_tokenizer for truncation rules and windows of one text."""
  expected = long_documents.reference_windows(
      tokenizer, texts, encoder.max_seq_length, encoder.long_documents
  )
  got_ids, got_types = encoder.encode_windows(tf.constant(texts, tf.string))
  got_ids, got_types = got_ids.to_list(), got_types.to_list()
  for i, text in enumerate(texts):
    want_ids = [ids for ids, _ in expected[i]]
    want_types = [types for _, types in expected[i]]
    if got_ids[i] == want_ids and (
        not with_types or got_types[i] == want_types
    ):
      continue
    window = next(
        (j for j, (a, b) in enumerate(zip(got_ids[i], want_ids)) if a != b),
        min(len(got_ids[i]), len(want_ids)),
    )
    raise ValueError(
        f"In-graph tokenization (--truncation="
        f"{encoder.long_documents.truncation}, chunks: "
        f"{encoder.long_documents.chunks}) differs from the model's "
        f"tokenizer on text {text[:80]!r}: {len(got_ids[i])} window(s) "
        f"against {len(want_ids)}, first differing at window {window}; "
        "refusing to train or export a model that would be served different "
        "ids than it was trained on."
    )
