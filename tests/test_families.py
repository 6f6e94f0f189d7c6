"""Every supported encoder family: tokenizer parity, training, serving.

Each family's model is a tiny one built here from its `transformers` config
(2 layers, hidden size 32, random weights) with its own fast tokenizer
trained here on real review snippets (tests/data/rotten_tomatoes.tsv), saved
in the Hugging Face layout like a real checkpoint. Nothing is downloaded.
"""

import csv
import json
import os

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
import tokenizers
import transformers

from conftest import (
    TINY_TRAIN_FLAGS,
    make_tagged_sentences,
    run_binary,
    run_python,
    write_conll,
    write_rows,
)
from tf_finetune import prediction, serving, train
from tf_finetune.text import families
from tf_finetune.text import sentencepiece as tf_sentencepiece
from tf_finetune.text.tokenization import (
    TRICKY_TEXTS,
    TextEncoder,
    TokenizerNotSupportedError,
    check_matches_tokenizer,
    template_from_hf,
)

DATA = os.path.join(os.path.dirname(__file__), "data", "rotten_tomatoes.tsv")
MAX_LENGTH = 64
TINY = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _read_rows() -> list[dict]:
  with open(DATA, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f, delimiter="\t"))


ROWS = _read_rows()
# Tokenizers learn from the first 320 snippets; parity is measured on the
# other 160, which they have not seen.
TOKENIZER_TEXTS = [row["text"] for row in ROWS[:320]]
HELD_OUT = [row["text"] for row in ROWS[320:]]
# Whitespace and case edge cases beyond TRICKY_TEXTS.
EDGE_TEXTS = [
    " leading space",
    "trailing space ",
    "  two  spaces  ",
    "\t\ttabs first",
    "line\n\nbreaks",
    "it's, I'M, they'll 've",
    "``quoted''",
    "ＦＵＬＬ width ﬁ",
    "x \u00a0\u3000y",
    "a\u0301 e\u0301",
    "   ",
]
# Format and NUL characters, for the tokenizers of this change (WordPiece's
# BERT normalization is tested with tests/test_tokenization.py).
FORMAT_TEXTS = ["zero\u200bwidth \u200b", "soft\u00adhyphen", "nul\x00byte"]
# Runs of one character, which a unigram model can split in equally good
# orders ("m mm" or "mm m").
REPEAT_TEXTS = [c * n for c in "meos!." for n in (3, 5, 7, 9)] + [
    "Hmmm",
    "Hmmmmmm",
    "woooow",
]


def _wordpiece(directory, special_tokens) -> str:
  trainer = tokenizers.BertWordPieceTokenizer(lowercase=True)
  trainer.train_from_iterator(
      TOKENIZER_TEXTS, vocab_size=500, special_tokens=special_tokens
  )
  trainer.save_model(directory)
  return os.path.join(directory, "vocab.txt")


def _byte_level_bpe(directory, special_tokens) -> tuple[str, str]:
  trainer = tokenizers.ByteLevelBPETokenizer()
  trainer.train_from_iterator(
      TOKENIZER_TEXTS, vocab_size=800, special_tokens=special_tokens
  )
  trainer.save_model(directory)
  return (
      os.path.join(directory, "vocab.json"),
      os.path.join(directory, "merges.txt"),
  )


def _sentencepiece(directory, model_type="unigram", **ids) -> str:
  """A SentencePiece model; `ids` place special pieces (e.g. pad_id=0,
  pad_piece="[PAD]"), by default <unk> 0, <s> 1, </s> 2 and no padding."""
  prefix = os.path.join(directory, "spm")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(TOKENIZER_TEXTS),
      model_prefix=prefix,
      vocab_size=800,
      model_type=model_type,
      minloglevel=2,
      **ids,
  )
  return prefix + ".model"


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _roberta_tokenizer(directory):
  return transformers.RobertaTokenizerFast(
      *_byte_level_bpe(directory, ROBERTA_SPECIALS),
      model_max_length=MAX_LENGTH,
  )


def _roberta_config(config_class):
  # RoBERTa's positions start after the padding id: 2 more than tokens.
  return lambda vocab, tok: config_class(
      vocab_size=vocab,
      hidden_size=32,
      max_position_embeddings=MAX_LENGTH + 2,
      type_vocab_size=1,
      pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id,
      **TINY,
  )


# model_type -> (fast tokenizer from a directory, config for a vocab size).
BUILDERS = {
    "distilbert": (
        lambda d: transformers.DistilBertTokenizerFast(
            _wordpiece(d, BERT_SPECIALS), model_max_length=MAX_LENGTH
        ),
        lambda vocab, tok: transformers.DistilBertConfig(
            vocab_size=vocab,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
        ),
    ),
    "electra": (
        lambda d: transformers.ElectraTokenizerFast(
            _wordpiece(d, BERT_SPECIALS), model_max_length=MAX_LENGTH
        ),
        lambda vocab, tok: transformers.ElectraConfig(
            vocab_size=vocab,
            embedding_size=32,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "mobilebert": (
        lambda d: transformers.MobileBertTokenizerFast(
            _wordpiece(d, BERT_SPECIALS), model_max_length=MAX_LENGTH
        ),
        lambda vocab, tok: transformers.MobileBertConfig(
            vocab_size=vocab,
            embedding_size=16,
            hidden_size=32,
            intra_bottleneck_size=16,
            true_hidden_size=16,
            num_feedforward_networks=1,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "convbert": (
        lambda d: transformers.ConvBertTokenizerFast(
            _wordpiece(d, BERT_SPECIALS), model_max_length=MAX_LENGTH
        ),
        lambda vocab, tok: transformers.ConvBertConfig(
            vocab_size=vocab,
            embedding_size=32,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "mpnet": (
        # MPNet: a WordPiece vocabulary with RoBERTa's special tokens.
        lambda d: transformers.MPNetTokenizerFast(
            _wordpiece(d, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]),
            model_max_length=MAX_LENGTH,
        ),
        lambda vocab, tok: transformers.MPNetConfig(
            vocab_size=vocab,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH + 2,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "roberta": (
        _roberta_tokenizer,
        _roberta_config(transformers.RobertaConfig),
    ),
    "roberta-prelayernorm": (
        _roberta_tokenizer,
        _roberta_config(transformers.RobertaPreLayerNormConfig),
    ),
    "deberta": (
        lambda d: transformers.DebertaTokenizerFast(
            *_byte_level_bpe(d, BERT_SPECIALS), model_max_length=MAX_LENGTH
        ),
        lambda vocab, tok: transformers.DebertaConfig(
            vocab_size=vocab,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "albert": (
        # ALBERT's own layout: <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4.
        lambda d: transformers.AlbertTokenizerFast(
            vocab_file=_sentencepiece(
                d,
                pad_id=0,
                unk_id=1,
                bos_id=2,
                eos_id=3,
                bos_piece="[CLS]",
                eos_piece="[SEP]",
                control_symbols=["[MASK]"],
            ),
            model_max_length=MAX_LENGTH,
        ),
        lambda vocab, tok: transformers.AlbertConfig(
            vocab_size=vocab,
            embedding_size=16,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
    "xlm-roberta": (
        # fairseq's layout: SentencePiece's own ids shifted by one.
        lambda d: transformers.XLMRobertaTokenizerFast(
            vocab_file=_sentencepiece(d), model_max_length=MAX_LENGTH
        ),
        _roberta_config(transformers.XLMRobertaConfig),
    ),
    "camembert": (
        lambda d: transformers.CamembertTokenizerFast(
            vocab_file=_sentencepiece(d, model_type="bpe"),
            model_max_length=MAX_LENGTH,
        ),
        _roberta_config(transformers.CamembertConfig),
    ),
    "deberta-v2": (
        # DeBERTa-v3's layout: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3.
        lambda d: transformers.DebertaV2TokenizerFast(
            vocab_file=_sentencepiece(
                d,
                pad_id=0,
                bos_id=1,
                eos_id=2,
                unk_id=3,
                pad_piece="[PAD]",
                bos_piece="[CLS]",
                eos_piece="[SEP]",
                unk_piece="[UNK]",
            ),
            model_max_length=MAX_LENGTH,
        ),
        lambda vocab, tok: transformers.DebertaV2Config(
            vocab_size=vocab,
            hidden_size=32,
            max_position_embeddings=MAX_LENGTH,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=16,
            type_vocab_size=0,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
    ),
}
FAMILY_TYPES = sorted(BUILDERS)
# Trained on sentence pairs rather than single texts.
PAIR_FAMILIES = ("roberta",)


def make_tokenizer(model_type: str, directory: str):
  os.makedirs(directory, exist_ok=True)
  return BUILDERS[model_type][0](directory)


def make_family_model(model_type: str, directory: str) -> str:
  """Saves a random tiny `model_type` encoder and its tokenizer in HF layout."""
  tokenizer = make_tokenizer(model_type, directory)
  tokenizer.save_pretrained(directory)
  config = BUILDERS[model_type][1](len(tokenizer), tokenizer)
  assert config.model_type == model_type
  tf.random.set_seed(0)
  model = transformers.TFAutoModel.from_config(config)
  model(model.dummy_inputs)
  model.save_pretrained(directory)
  return directory


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
  """model_type -> a saved tiny model directory, built on first use."""
  built = {}

  def get(model_type):
    if model_type not in built:
      directory = str(tmp_path_factory.mktemp(model_type))
      built[model_type] = make_family_model(model_type, directory)
    return built[model_type]

  return get


@pytest.fixture(scope="module")
def review_files(tmp_path_factory):
  """Real reviews: 64 training and 32 validation rows, text and a pair."""
  directory = tmp_path_factory.mktemp("reviews")
  rows = [
      {"text": row["text"], "pair": ROWS[-1 - i]["text"], "label": row["label"]}
      for i, row in enumerate(ROWS)
  ]
  return {
      "train": write_rows(str(directory / "train.csv"), rows[:64]),
      "validation": write_rows(str(directory / "validation.csv"), rows[64:96]),
  }


# --- the registry ------------------------------------------------------------


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_registry_template_is_the_tokenizers(model_type, tmp_path):
  tokenizer = make_tokenizer(model_type, str(tmp_path))
  family = families.family_of(model_type)
  template = template_from_hf(tokenizer)
  assert template.render(tokenizer.convert_ids_to_tokens) == family.template
  # The tokenizer's own inputs are the family's.
  assert set(tokenizer.model_input_names) == set(family.model_inputs)


def test_unsupported_families_are_refused_with_the_reason():
  with pytest.raises(
      ValueError,
      match=r"--model='m' is a 'xlnet' model, which cannot be fine-tuned "
      r"here: XLNet puts its <cls> token last",
  ):
    families.family_of("xlnet", model="m")
  with pytest.raises(ValueError, match=r"not a text encoder family"):
    families.family_of("gpt2", model="m")


def test_auto_pooling_resolves_per_family():
  bert, distilbert = families.family_of("bert"), families.family_of(
      "distilbert"
  )
  assert families.resolve_pooling("auto", bert) == "pooler"
  assert families.resolve_pooling("auto", distilbert) == "cls"
  assert families.resolve_pooling("mean", distilbert) == "mean"
  with pytest.raises(
      ValueError,
      match=r"--pooling=pooler: DistilBERT \(distilbert\) encoders have "
      r"no pooler",
  ):
    families.resolve_pooling("pooler", distilbert)


# --- token-id parity ---------------------------------------------------------


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_in_graph_ids_match_the_tokenizer(model_type, tmp_path):
  tokenizer = make_tokenizer(model_type, str(tmp_path))
  family = families.family_of(model_type)
  encoder = TextEncoder.from_hf_tokenizer(
      tokenizer, MAX_LENGTH, model_inputs=family.model_inputs
  )
  assert encoder.tokenizer_type == family.tokenizer
  texts = HELD_OUT + list(TRICKY_TEXTS) + EDGE_TEXTS
  if family.tokenizer != families.WORDPIECE:
    texts += FORMAT_TEXTS + REPEAT_TEXTS
  check_matches_tokenizer(encoder, tokenizer, texts)
  # Pairs, truncated longest-first at a length that cuts most of them.
  short = TextEncoder.from_hf_tokenizer(
      tokenizer, 24, model_inputs=family.model_inputs
  )
  check_matches_tokenizer(short, tokenizer, texts, list(reversed(texts)))
  # Real text is mostly known sub-words, not [UNK]s.
  ids = encoder.tokenize(tf.constant(HELD_OUT)).flat_values.numpy()
  assert np.mean(ids == tokenizer.unk_token_id) < 0.01


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_encode_gives_the_family_inputs(model_type, tmp_path):
  tokenizer = make_tokenizer(model_type, str(tmp_path))
  family = families.family_of(model_type)
  encoder = TextEncoder.from_hf_tokenizer(
      tokenizer, MAX_LENGTH, model_inputs=family.model_inputs
  )
  features = encoder.encode(tf.constant(["a film"]), tf.constant(["a plot"]))
  assert tuple(features) == family.model_inputs


# --- masked-LM heads ---------------------------------------------------------


def test_every_family_has_its_masked_lm_head_listed():
  from tf_finetune.models import masked_lm

  assert set(families.FAMILIES) <= set(masked_lm.HEAD_LAYERS)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_the_head_on_the_targets_alone_gives_the_models_logits(
    model_type, tmp_path
):
  from tf_finetune.data.masking import IGNORED
  from tf_finetune.models import masked_lm

  tokenizer = make_tokenizer(model_type, str(tmp_path))
  config = BUILDERS[model_type][1](len(tokenizer), tokenizer)
  tf.random.set_seed(0)
  mlm = transformers.TFAutoModelForMaskedLM.from_config(config)
  encoded = tokenizer(
      HELD_OUT[:4],
      padding=True,
      truncation=True,
      max_length=MAX_LENGTH,
      return_tensors="tf",
  )
  inputs = {
      name: tf.cast(encoded[name], tf.int32)
      for name in families.family_of(model_type).model_inputs
  }
  rng = np.random.default_rng(0)
  chosen = (rng.random(inputs["input_ids"].shape) < 0.3) & (
      inputs["attention_mask"].numpy() == 1
  )
  labels = tf.where(chosen, inputs["input_ids"], IGNORED)
  gathered, gathered_labels = masked_lm.target_logits(
      mlm, inputs, labels, training=False, gather=True
  )
  everywhere = mlm(**inputs, training=False).logits.numpy()[chosen]
  assert gathered.shape == everywhere.shape and len(everywhere) > 4
  np.testing.assert_allclose(gathered.numpy(), everywhere, atol=1e-4)
  np.testing.assert_array_equal(
      gathered_labels.numpy(), inputs["input_ids"].numpy()[chosen]
  )
  # A batch without targets (a short text's mask can choose none).
  none, _ = masked_lm.target_logits(
      mlm,
      inputs,
      tf.fill(tf.shape(labels), IGNORED),
      training=False,
      gather=True,
  )
  assert none.shape == (0, config.vocab_size)


# --- training, export, serving -----------------------------------------------

TRAIN_FLAGS = [
    flag
    for flag in TINY_TRAIN_FLAGS
    if not flag.startswith(("--epochs", "--pooling"))
] + ["--epochs=1"]


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def family_run(request, model_dirs, review_files, tmp_path_factory):
  """(model_type, model_dir) of a classifier trained and exported by the
  train binary with the default pooling."""
  model_type = request.param
  model_dir = str(tmp_path_factory.mktemp(f"{model_type}_run") / "model")
  pair = ["--text_pair_column=pair"] if model_type in PAIR_FAMILIES else []
  code = run_binary(
      train,
      [
          f"--model={model_dirs(model_type)}",
          f"--train_file={review_files['train']}",
          f"--validation_file={review_files['validation']}",
          f"--model_dir={model_dir}",
      ]
      + TRAIN_FLAGS
      + pair,
  )
  assert code == 0
  return model_type, model_dir


def test_trained_export_serves_raw_text_in_a_fresh_process(family_run):
  model_type, model_dir = family_run
  family = families.family_of(model_type)
  texts = HELD_OUT[:6] + list(TRICKY_TEXTS)
  inputs = {"text": texts}
  pairs = None
  if model_type in PAIR_FAMILIES:
    pairs = inputs["text_pair"] = list(reversed(texts))
  export = serving.latest_version_dir(os.path.join(model_dir, "export"))
  script = f"""
import json, sys
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export!r})
inputs = {{name: tf.constant(texts) for name, texts in {inputs!r}.items()}}
outputs = model.signatures["serving_default"](**inputs)
ids = model.signatures["serve_token_ids"].structured_input_signature[1]
assert "transformers" not in sys.modules and "tf_finetune" not in sys.modules
print(json.dumps({{"probabilities": outputs["probabilities"].numpy().tolist(),
                  "id_inputs": sorted(ids)}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["id_inputs"] == sorted(family.model_inputs)
  in_process = prediction.Predictor.from_model_dir(model_dir).predict(
      texts, pairs
  )
  np.testing.assert_allclose(served["probabilities"], in_process, atol=1e-5)
  with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["model"]["pooling"] == "auto"


def test_pooler_on_a_family_without_one_is_refused(
    model_dirs, review_files, tmp_path, capsys
):
  code = run_binary(
      train,
      [
          f"--model={model_dirs('distilbert')}",
          f"--train_file={review_files['train']}",
          f"--model_dir={tmp_path / 'run'}",
          "--pooling=pooler",
      ]
      + TRAIN_FLAGS,
  )
  assert code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error == (
      "train: error: --pooling=pooler: DistilBERT (distilbert) encoders "
      "have no pooler; use --pooling=cls (the first token's hidden state), "
      "--pooling=mean or --pooling=auto."
  )
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_distilbert_trains_token_classification(model_dirs, tmp_path):
  directory = tmp_path
  files = {
      split: write_conll(
          str(directory / f"{split}.txt"), make_tagged_sentences(n, seed=seed)
      )
      for split, n, seed in (("train", 48, 1), ("validation", 16, 2))
  }
  model_dir = str(directory / "model")
  code = run_binary(
      train,
      [
          f"--model={model_dirs('distilbert')}",
          f"--train_file={files['train']}",
          f"--validation_file={files['validation']}",
          f"--model_dir={model_dir}",
          "--task=token_classification",
      ]
      + TRAIN_FLAGS,
  )
  assert code == 0
  rows = prediction.Predictor.from_model_dir(model_dir).predict_rows(
      ["the movie was good"]
  )
  assert rows[0]["words"] == ["the", "movie", "was", "good"]
  assert len(rows[0]["predicted_tags"]) == 4


# --- what is refused, and where ----------------------------------------------


def test_word_tasks_refuse_other_tokenizers_before_training(
    model_dirs, tmp_path, capsys
):
  files = {
      split: write_conll(
          str(tmp_path / f"{split}.txt"), make_tagged_sentences(16, seed=seed)
      )
      for split, seed in (("train", 1), ("validation", 2))
  }
  code = run_binary(
      train,
      [
          f"--model={model_dirs('roberta')}",
          f"--train_file={files['train']}",
          f"--model_dir={tmp_path / 'run'}",
          "--task=token_classification",
      ]
      + TRAIN_FLAGS,
  )
  assert code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith(
      "train: error: --task=token_classification does not support RoBERTa "
      "models"
  ), error
  assert "byte-level BPE tokenizer packed as <s> A </s> </s> B </s>" in error
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_sentencepiece_without_its_model_file_is_refused(tmp_path):
  tokenizer = make_tokenizer("xlm-roberta", str(tmp_path / "made"))
  tokenizer.save_pretrained(str(tmp_path / "saved"))
  os.remove(tmp_path / "saved" / "sentencepiece.bpe.model")
  reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
  with pytest.raises(
      TokenizerNotSupportedError,
      match=r"XLMRobertaTokenizerFast came without its SentencePiece model",
  ):
    TextEncoder.from_hf_tokenizer(reloaded, MAX_LENGTH)


def test_deberta_v2_split_by_punctuation_is_refused(tmp_path):
  tokenizer = transformers.DebertaV2TokenizerFast(
      vocab_file=_sentencepiece(str(tmp_path)), split_by_punct=True
  )
  with pytest.raises(
      TokenizerNotSupportedError, match=r"split_by_punct=True split on"
  ):
    TextEncoder.from_hf_tokenizer(tokenizer, MAX_LENGTH)


def test_a_tokenizer_that_keeps_runs_of_spaces_is_refused(tmp_path):
  # RemBERT's fast tokenizer emits a "▁" per extra space after its
  # character map; its SentencePiece model collapses them.
  tokenizer = transformers.RemBertTokenizerFast(
      vocab_file=_sentencepiece(str(tmp_path))
  )
  assert len(tokenizer.tokenize("a\t\tb")) != len(tokenizer.tokenize("a b"))
  with pytest.raises(TokenizerNotSupportedError, match=r"keeps runs of spaces"):
    TextEncoder.from_hf_tokenizer(tokenizer, MAX_LENGTH)
  with pytest.raises(ValueError, match=r"'rembert' model, which cannot be"):
    families.family_of("rembert", model="m")


def test_ties_in_runs_of_one_character_are_broken_as_the_tokenizer_does(
    tmp_path,
):
  # With "m" and "mm" pieces but no "mmm", "mmmmm" scores the same as
  # m+mm+mm, mm+m+mm and mm+mm+m; the fast tokenizer keeps the first.
  prefix = str(tmp_path / "spm")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(TOKENIZER_TEXTS + ["hmm umm, buzz jazz"] * 200),
      model_prefix=prefix,
      vocab_size=800,
      minloglevel=2,
  )
  tokenizer = transformers.XLMRobertaTokenizerFast(vocab_file=prefix + ".model")
  vocab = tokenizer.get_vocab()
  assert "mm" in vocab and "zz" in vocab
  assert "mmm" not in vocab and "zzz" not in vocab
  texts = ["Hmmm", "Hmmmmm", "Hmmmmmmmmm, well", "zzzzzzz"]
  check_matches_tokenizer(
      TextEncoder.from_hf_tokenizer(tokenizer, MAX_LENGTH), tokenizer, texts
  )
  # The SentencePiece library alone orders such pieces differently.
  spec = tf_sentencepiece.spec_from_hf_tokenizer(
      tokenizer, json.loads(tokenizer.backend_tokenizer.to_str())
  )
  unsorted = tf_sentencepiece.SentencePiece(**dict(spec, sort_repeats=False))
  assert unsorted.tokenize(tf.constant(texts)).to_list() != [
      tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts
  ]
