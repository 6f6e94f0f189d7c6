import os
import random

import pytest
import tensorflow as tf

from conftest import NEUTRAL_WORDS, POSITIVE_WORDS, make_vocab
from tf_finetune.models import backbone
from tf_finetune.text.tokenization import (
    TRICKY_TEXTS,
    TextEncoder,
    check_matches_tokenizer,
)
from tf_finetune.text.wordpiece import (
    TokenizerNotSupportedError,
    WordPiece,
    spec_from_hf_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
  return backbone.load_tokenizer(tiny_bert_dir)


def _encoder(tokenizer, max_seq_length=64):
  return TextEncoder.from_hf_tokenizer(tokenizer, max_seq_length)


def test_golden_ids(tokenizer):
  encoder = _encoder(tokenizer)
  vocab = tokenizer.get_vocab()
  features = encoder.encode(tf.constant(["The movie was GOOD!", ""]))
  expected = [
      vocab[t] for t in ("[CLS]", "the", "movie", "was", "good", "!", "[SEP]")
  ]
  assert features["input_ids"].numpy()[0].tolist() == expected
  assert features["input_ids"].numpy()[1].tolist() == (
      [vocab["[CLS]"], vocab["[SEP]"]] + [vocab["[PAD]"]] * 5
  )
  assert features["attention_mask"].numpy().tolist() == [
      [1] * 7,
      [1, 1] + [0] * 5,
  ]
  assert features["token_type_ids"].numpy().sum() == 0


def test_pair_packing_has_segment_ids(tokenizer):
  encoder = _encoder(tokenizer)
  features = encoder.encode(tf.constant(["good film"]), tf.constant(["bad"]))
  # [CLS] good film [SEP] bad [SEP]
  assert features["token_type_ids"].numpy().tolist() == [[0, 0, 0, 0, 1, 1]]


@pytest.mark.parametrize(
    "length_a, length_b, kept_a, kept_b",
    [
        (3, 3, 3, 3),  # fits: nothing trimmed
        (20, 2, 7, 2),  # budget 9 = 12 - 3: the longer side is trimmed
        (2, 20, 2, 7),
        (20, 20, 4, 5),  # odd budget: the second segment keeps the extra token
        (6, 5, 5, 4),  # longer first keeps ceil(9 / 2)
    ],
)
def test_pair_truncation_trims_the_longer_side_first(
    tokenizer, length_a, length_b, kept_a, kept_b
):
  encoder = _encoder(tokenizer, max_seq_length=12)
  ids, types = encoder.encode_ragged(
      tf.constant([" ".join(["good"] * length_a)]),
      tf.constant([" ".join(["bad"] * length_b)]),
  )
  types = types.to_list()[0]
  assert types.count(0) - 2 == kept_a  # minus [CLS] and [SEP]
  assert types.count(1) - 1 == kept_b  # minus [SEP]
  check_matches_tokenizer(
      encoder,
      tokenizer,
      [" ".join(["good"] * length_a)],
      [" ".join(["bad"] * length_b)],
  )


def test_matches_the_model_tokenizer_on_random_text(tokenizer):
  rng = random.Random(0)
  words = (
      POSITIVE_WORDS
      + NEUTRAL_WORDS
      + ["Good", "ÉTÉ", "naïve", "…", "½", "xyzzy", "don't", "3.50"]
  )
  texts = [
      " ".join(rng.choices(words, k=rng.randint(0, 30))) for _ in range(200)
  ]
  pairs = [
      " ".join(rng.choices(words, k=rng.randint(0, 30))) for _ in range(200)
  ]
  encoder = _encoder(tokenizer, max_seq_length=24)
  check_matches_tokenizer(encoder, tokenizer, list(TRICKY_TEXTS) + texts)
  check_matches_tokenizer(encoder, tokenizer, texts, pairs)


def test_mismatch_is_refused(tokenizer):
  encoder = TextEncoder.wordpiece(
      vocab=[
          t
          for t, _ in sorted(
              tokenizer.get_vocab().items(), key=lambda item: item[1]
          )
      ],
      lower_case=False,
      max_seq_length=32,
  )
  with pytest.raises(
      ValueError,
      match=r"differs from the model's tokenizer "
      r"on text 'The Movie' at token 1",
  ):
    check_matches_tokenizer(encoder, tokenizer, ["the movie", "The Movie"])


def test_max_seq_length_beyond_the_model_is_refused(tokenizer):
  with pytest.raises(
      ValueError,
      match=r"--max_seq_length=512 exceeds the " "model's maximum of 64",
  ):
    _encoder(tokenizer, max_seq_length=512)


def _tokenizers(directory, tokens, *, lower_case):
  """A `transformers` BERT tokenizer of the conftest vocabulary plus
  `tokens`, and the in-graph tokenizer built from it."""
  import transformers

  vocab_file = os.path.join(directory, f"vocab_{lower_case}.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(dict.fromkeys(make_vocab() + list(tokens))) + "\n")
  hf = transformers.BertTokenizerFast(vocab_file, do_lower_case=lower_case)
  spec = spec_from_hf_tokenizer(hf)
  graph = WordPiece(vocab=spec["vocab"], lower_case=spec["lower_case"])
  return hf, graph


def _ids(hf, graph, texts):
  expected = hf(list(texts), add_special_tokens=False)["input_ids"]
  got = graph.tokenize(tf.constant(list(texts))).to_list()
  return expected, got


def test_cleaning_drops_replacement_and_control_characters(tokenizer):
  # Real e-mail text: U+FFFD right before a word used to make it [UNK].
  texts = [
      "\ufffdGood film, \ufffdgreat\ufffd story.",
      "Good film, great story.",
      "\x00good\u200b \u200bfilm\x7f \ufeffgreat\u00ad story\u202e",
  ]
  encoder = _encoder(tokenizer)
  ids = encoder.tokenize(tf.constant(texts)).to_list()
  assert ids[0] == ids[1]
  unk = tokenizer.get_vocab()["[UNK]"]
  assert unk not in ids[0] and unk not in ids[2]
  check_matches_tokenizer(encoder, tokenizer, texts)


@pytest.mark.parametrize("lower_case", [True, False])
def test_word_limit_counts_characters_not_bytes(tmp_path, lower_case):
  hf, graph = _tokenizers(
      tmp_path, ["ก", "##ก", "é", "##é", "ж", "##ж"], lower_case=lower_case
  )
  texts = [
      "ก" * 34,  # 102 bytes: one word of 34 pieces, not [UNK]
      "ก" * 100,
      "ก" * 101,  # over 100 characters: [UNK]
      "ж" * 100 + " " + "ж" * 101,
      "a\u200b" * 60,  # 120 characters, 60 once cleaned
      "e\u0301" * 60,  # 120 characters, 60 once accents are stripped
      "é" * 100,  # 100 characters, 200 once decomposed (then stripped)
      "a" * 99 + "!" + "a" * 100,
  ]
  expected, got = _ids(hf, graph, texts)
  assert got == expected
  unk = hf.get_vocab()["[UNK]"]
  assert len(got[0]) == 34 and len(got[1]) == 100 and got[2] == [unk]
  assert got[3][-1] == unk and unk not in got[3][:-1]
  assert unk not in got[4]
  assert (got[5] == [unk]) != lower_case


def test_uncased_lowercases_each_character_on_its_own(tmp_path):
  # ICU lowercases a final capital sigma to "ς"; BERT's tokenizer to "σ".
  hf, graph = _tokenizers(
      tmp_path, ["οδος", "οδοσ", "σας", "σασ", "σ", "ς"], lower_case=True
  )
  texts = ["ΟΔΟΣ ΣΑΣ. Σ", "İstanbul ẞ ǅ"]
  expected, got = _ids(hf, graph, texts)
  assert got == expected
  vocab = hf.get_vocab()
  assert got[0][:2] == [vocab["οδοσ"], vocab["σασ"]]


def test_special_tokens_in_text_are_their_ids_as_written(tokenizer):
  encoder = _encoder(tokenizer)
  vocab = tokenizer.get_vocab()
  texts = ["good[SEP]film [sep] [SE\u200bP] [[MASK]]", "[UNK][PAD]"]
  ids = encoder.tokenize(tf.constant(texts)).to_list()
  assert ids[0][1] == vocab["[SEP]"] and ids[0][-2] == vocab["[MASK]"]
  assert ids[0].count(vocab["[SEP]"]) == 1
  assert ids[1] == [vocab["[UNK]"], vocab["[PAD]"]]
  check_matches_tokenizer(encoder, tokenizer, texts)


def _with_backend(tokenizer, edit):
  """A copy of `tokenizer` whose tokenizer.json went through `edit`."""
  import json

  import tokenizers
  import transformers

  spec = json.loads(tokenizer.backend_tokenizer.to_str())
  edit(spec)
  backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend)


def _set(path, value):
  def edit(spec):
    node = spec
    for key in path[:-1]:
      node = node[key]
    node[path[-1]] = value

  return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(["normalizer", "clean_text"], False), "clean_text=false"),
        (
            _set(["normalizer", "handle_chinese_chars"], False),
            "handle_chinese_chars=false",
        ),
        (_set(["normalizer", "strip_accents"], False), "strip_accents=False"),
        (
            _set(["normalizer"], {"type": "Lowercase"}),
            "normalizer is Lowercase",
        ),
        (
            _set(["pre_tokenizer"], {"type": "Whitespace"}),
            "pre-tokenizer is Whitespace",
        ),
        (
            _set(["model", "max_input_chars_per_word"], 200),
            "max_input_chars_per_word is 200",
        ),
        (
            _set(["model", "continuing_subword_prefix"], "@@"),
            "continuing_subword_prefix is '@@'",
        ),
        (
            lambda spec: spec["added_tokens"].append(
                {
                    "id": 7,
                    "content": "!",
                    "special": False,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": True,
                }
            ),
            "added token '!', which is not a special token",
        ),
        (
            lambda spec: spec["added_tokens"].pop(),
            r"does not match \[MASK\] in text",
        ),
    ],
)
def test_tokenizers_that_cannot_be_reproduced_are_refused(
    tokenizer, edit, message
):
  with pytest.raises(TokenizerNotSupportedError, match=message):
    spec_from_hf_tokenizer(_with_backend(tokenizer, edit))


def test_vocabularies_that_cannot_be_reproduced_are_refused():
  # TensorFlow does not lowercase U+2C2F to U+2C5F as the tokenizer does.
  with pytest.raises(TokenizerNotSupportedError, match="U\\+2C5F"):
    WordPiece(vocab=["[UNK]", "\u2c5f"], lower_case=True)
  WordPiece(vocab=["[UNK]", "\u2c5f"], lower_case=False)
  with pytest.raises(TokenizerNotSupportedError, match="257 bytes"):
    WordPiece(vocab=["[UNK]", "##" + "a" * 257], lower_case=False)
