"""Encoder families: what each kind of `transformers` encoder reads.

A checkpoint's `config.json` names its `model_type` ("bert", "roberta",
"deberta-v2", ...). `FAMILIES` says, per model type, which inputs the TF
model takes, how its tokenizer packs one text and a pair, which tokenizer
type it ships with and whether the encoder has a pooler. `family_of`
refuses the model types that cannot be fine-tuned on raw text here, with
the reason.

The packing itself is read from each checkpoint's own tokenizer (its
`tokenizer.json` post-processor) and checked against it on sample texts;
`Family.template` states what the family's tokenizers do (the tests check
it against each family's Hugging Face tokenizer). Pairs are truncated by
Hugging Face's "longest_first" rule in every family.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

WORDPIECE = "WordPiece"
BYTE_LEVEL_BPE = "byte-level BPE"
SENTENCEPIECE = "SentencePiece"

# Every encoder takes these; `token_type_ids` only where the family has
# segment embeddings its tokenizer fills.
BASE_INPUTS = ("input_ids", "attention_mask")
TOKEN_TYPE_IDS = "token_type_ids"

BERT_TEMPLATE = "[CLS] A [SEP] B [SEP]"
ROBERTA_TEMPLATE = "<s> A </s> </s> B </s>"


@dataclasses.dataclass(frozen=True)
class Family:
  """One `model_type` of `transformers` encoders.

  Attributes:
    model_type: The config's `model_type`.
    name: The family's usual name.
    tokenizer: WORDPIECE, BYTE_LEVEL_BPE or SENTENCEPIECE.
    template: Special tokens around a pair of texts A and B (one text:
      the same up to A's last separator); types 0 for A, 1 for B where
      the family takes token_type_ids.
    token_type_ids: Whether the TF model is given segment ids.
    pooler: Whether the TF encoder has a pooler (a dense layer on the
      first token, `pooler_output`).
  """

  model_type: str
  name: str
  tokenizer: str
  template: str
  token_type_ids: bool
  pooler: bool

  @property
  def model_inputs(self) -> tuple[str, ...]:
    """The names of the int32 [batch, seq_len] inputs the model is given."""
    return BASE_INPUTS + ((TOKEN_TYPE_IDS,) if self.token_type_ids else ())


def _family(model_type, name, tokenizer, template, token_type_ids, pooler):
  return Family(model_type, name, tokenizer, template, token_type_ids, pooler)


FAMILIES = {
    family.model_type: family
    for family in (
        _family("bert", "BERT", WORDPIECE, BERT_TEMPLATE, True, True),
        _family(
            "distilbert", "DistilBERT", WORDPIECE, BERT_TEMPLATE, False, False
        ),
        _family("electra", "ELECTRA", WORDPIECE, BERT_TEMPLATE, True, False),
        _family(
            "mobilebert", "MobileBERT", WORDPIECE, BERT_TEMPLATE, True, True
        ),
        _family("convbert", "ConvBERT", WORDPIECE, BERT_TEMPLATE, True, False),
        _family("mpnet", "MPNet", WORDPIECE, ROBERTA_TEMPLATE, False, True),
        _family(
            "roberta", "RoBERTa", BYTE_LEVEL_BPE, ROBERTA_TEMPLATE, False, True
        ),
        _family(
            "roberta-prelayernorm",
            "RoBERTa-PreLayerNorm",
            BYTE_LEVEL_BPE,
            ROBERTA_TEMPLATE,
            False,
            True,
        ),
        _family(
            "deberta", "DeBERTa", BYTE_LEVEL_BPE, BERT_TEMPLATE, True, False
        ),
        _family("albert", "ALBERT", SENTENCEPIECE, BERT_TEMPLATE, True, True),
        _family(
            "xlm-roberta",
            "XLM-RoBERTa",
            SENTENCEPIECE,
            ROBERTA_TEMPLATE,
            False,
            True,
        ),
        _family(
            "camembert",
            "CamemBERT",
            SENTENCEPIECE,
            ROBERTA_TEMPLATE,
            False,
            True,
        ),
        _family(
            "deberta-v2",
            "DeBERTa-v2",
            SENTENCEPIECE,
            BERT_TEMPLATE,
            True,
            False,
        ),
    )
}

# Model types with TF encoder classes in `transformers` that are refused,
# and why.
UNSUPPORTED = {
    "xlnet": (
        "XLNet puts its <cls> token last and pads on the left; the packing "
        "here puts special tokens first and pads on the right"
    ),
    "roformer": (
        "RoFormer's tokenizer segments Chinese words with jieba, a Python "
        "library that cannot run inside a TensorFlow graph"
    ),
    "flaubert": (
        "FlauBERT's tokenizer runs Moses preprocessing in Python and has no "
        "fast (tokenizer.json) version to reproduce in the graph"
    ),
    "xlm": (
        "XLM's tokenizer runs Moses preprocessing in Python and has no fast "
        "(tokenizer.json) version to reproduce in the graph"
    ),
    "rembert": (
        "RemBERT's fast tokenizer keeps runs of whitespace as separate '▁' "
        "pieces where its SentencePiece model collapses them, which the "
        "in-graph tokenizer cannot reproduce"
    ),
    "tapas": "TAPAS reads tables (row and column ids), not plain text",
    "layoutlm": "LayoutLM needs each token's bounding box on the page",
    "layoutlmv3": "LayoutLMv3 needs page images and bounding boxes",
    "esm": "ESM reads protein sequences, not text",
    "dpr": (
        "a DPR checkpoint is a retrieval encoder without hidden states per "
        "token; fine-tune the BERT it was built from"
    ),
}


def family_of(model_type: str, *, model: str = "") -> Family:
  """The family of a config's `model_type`.

  Args:
    model_type: `config.model_type`.
    model: The --model value, for the error message.

  Raises:
    ValueError: for a model type that is not supported, with the reason.
  """
  family = FAMILIES.get(model_type)
  if family is not None:
    return family
  where = (
      f"--model={model!r} is a {model_type!r} model"
      if model
      else (f"model type {model_type!r}")
  )
  supported = ", ".join(sorted(FAMILIES))
  if model_type in UNSUPPORTED:
    raise ValueError(
        f"{where}, which cannot be fine-tuned here: "
        f"{UNSUPPORTED[model_type]}. Supported model types: {supported}."
    )
  raise ValueError(
      f"{where}, not a text encoder family fine-tuned here; supported "
      f"model types: {supported}."
  )


def resolve_pooling(pooling: Optional[str], family: Family) -> str:
  """The pooling a head on `family` uses for --pooling=`pooling`.

  "auto" is the pooler where the encoder has one (BERT, RoBERTa, ALBERT)
  and the first token's hidden state ("cls") where it has none
  (DistilBERT, ELECTRA, DeBERTa), which is what those families' Hugging
  Face sequence-classification heads read.

  Raises:
    ValueError: for --pooling=pooler on an encoder without a pooler.
  """
  if pooling in (None, "auto"):  # Unset (no --recipe to choose): auto.
    return "pooler" if family.pooler else "cls"
  if pooling == "pooler" and not family.pooler:
    raise ValueError(
        f"--pooling=pooler: {family.name} ({family.model_type}) encoders have "
        "no pooler; use --pooling=cls (the first token's hidden state), "
        "--pooling=mean or --pooling=auto."
    )
  return pooling
