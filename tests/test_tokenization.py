import random

import pytest
import tensorflow as tf

from conftest import NEUTRAL_WORDS, POSITIVE_WORDS
from tf_finetune.models import backbone
from tf_finetune.text.tokenization import (
    TRICKY_TEXTS,
    TextEncoder,
    check_matches_tokenizer,
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
