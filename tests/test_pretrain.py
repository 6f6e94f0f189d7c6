"""Masked-LM pretraining: the masks, the pipeline, the binary, and the
backbone it leaves for train."""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    SPECIAL_TOKENS,
    TINY_TRAIN_FLAGS,
    make_vocab,
    run_binary,
)

from tf_finetune import config as config_lib
from tf_finetune.data.masking import IGNORED, Masker
from tf_finetune.pretraining import data as pretraining_data

VOCAB = make_vocab()
INDEX = {token: i for i, token in enumerate(VOCAB)}
SPECIAL_IDS = [INDEX[token] for token in SPECIAL_TOKENS]
WORDS = POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
CONTINUATIONS = [i for i, token in enumerate(VOCAB) if token.startswith("##")]


def _batch(rows: list[list[int]]) -> tuple[dict, tf.Tensor]:
  """Features and pre-masking targets of rows of ids, padded as the
  pipeline pads them ([PAD] in input_ids, IGNORED in the targets)."""
  length = max(len(row) for row in rows)
  ids = [row + [INDEX["[PAD]"]] * (length - len(row)) for row in rows]
  targets = [row + [IGNORED] * (length - len(row)) for row in rows]
  mask = [[1] * len(row) + [0] * (length - len(row)) for row in rows]
  features = {
      "input_ids": tf.constant(ids, tf.int32),
      "attention_mask": tf.constant(mask, tf.int32),
  }
  return features, tf.constant(targets, tf.int32)


def _random_rows(count: int, *, seed: int, pieces: bool = False):
  """[CLS] words [SEP] rows of random length, a special token written in
  some texts (as WordPiece matches "[SEP]" in raw text); with `pieces`,
  words are split into a head and one to three "##x" pieces."""
  rng = random.Random(seed)
  rows, words_of_rows = [], []
  for _ in range(count):
    row, words = [INDEX["[CLS]"]], []
    for _ in range(rng.randint(1, 20)):
      if rng.random() < 0.05:
        row.append(INDEX[rng.choice(["[UNK]", "[SEP]", "[MASK]"])])
        continue
      word = [INDEX[rng.choice(WORDS)]]
      if pieces and rng.random() < 0.5:
        word += rng.sample(CONTINUATIONS, rng.randint(1, 3))
      words.append((len(row), len(word)))
      row += word
    rows.append(row + [INDEX["[SEP]"]])
    words_of_rows.append(words)
  return rows, words_of_rows


def _mask(masker, rows, seed=(1, 2)):
  features, targets = _batch(rows)
  masked, labels = masker(features, targets, tf.constant(seed, tf.int64))
  return (
      features["input_ids"].numpy(),
      targets.numpy(),
      masked["input_ids"].numpy(),
      labels.numpy(),
  )


def test_token_masking_chooses_15_percent_and_replaces_80_10_10():
  masker = Masker(
      mask_id=INDEX["[MASK]"], special_ids=SPECIAL_IDS, vocab_size=len(VOCAB)
  )
  rows, _ = _random_rows(3000, seed=0)
  ids, targets, masked, labels = _mask(masker, rows)
  special = np.isin(ids, SPECIAL_IDS)
  padding = targets == IGNORED
  chosen = labels != IGNORED
  # Never a special token or padding; those keep their ids.
  assert not (chosen & (special | padding)).any()
  assert (masked[special | padding] == ids[special | padding]).all()
  # Labels: the original id on the chosen positions only.
  assert (labels[chosen] == ids[chosen]).all()
  assert (masked[~chosen] == ids[~chosen]).all()
  maskable = ~special & ~padding
  assert chosen.sum() / maskable.sum() == pytest.approx(0.15, abs=0.01)
  became_mask = masked[chosen] == INDEX["[MASK]"]
  unchanged = masked[chosen] == ids[chosen]
  replaced = ~became_mask & ~unchanged
  assert became_mask.mean() == pytest.approx(0.8, abs=0.02)
  # A random replacement may draw the original token (1 in ~100 here).
  assert replaced.mean() == pytest.approx(0.1, abs=0.02)
  assert unchanged.mean() == pytest.approx(0.1, abs=0.02)
  # Random replacements are ordinary tokens, spread over the vocabulary.
  replacements = masked[chosen][replaced]
  assert not np.isin(replacements, SPECIAL_IDS).any()
  assert len(set(replacements.tolist())) > 0.8 * (len(VOCAB) - len(SPECIAL_IDS))


def test_masks_depend_on_the_seed():
  masker = Masker(
      mask_id=INDEX["[MASK]"], special_ids=SPECIAL_IDS, vocab_size=len(VOCAB)
  )
  rows, _ = _random_rows(200, seed=1)
  first = _mask(masker, rows, seed=(1, 2))[3]
  again = _mask(masker, rows, seed=(1, 2))[3]
  other = _mask(masker, rows, seed=(1, 3))[3]
  assert (first == again).all()
  assert (first != other).any()


def test_whole_word_masking_chooses_every_piece_of_a_word():
  masker = Masker(
      mask_id=INDEX["[MASK]"],
      special_ids=SPECIAL_IDS,
      vocab_size=len(VOCAB),
      continuation_ids=CONTINUATIONS,
  )
  rows, words_of_rows = _random_rows(3000, seed=2, pieces=True)
  ids, targets, _, labels = _mask(masker, rows)
  chosen = labels != IGNORED
  assert not (chosen & np.isin(ids, SPECIAL_IDS)).any()
  assert not (chosen & (targets == IGNORED)).any()
  chosen_words = chosen_pieced_words = pieced_words = 0
  all_words = 0
  for row, words in enumerate(words_of_rows):
    for start, length in words:
      flags = chosen[row, start : start + length]
      assert flags.all() or not flags.any(), (rows[row], start, length)
      all_words += 1
      chosen_words += int(flags.all())
      if length > 1:
        pieced_words += 1
        chosen_pieced_words += int(flags.all())
  assert chosen_words / all_words == pytest.approx(0.15, abs=0.015)
  assert chosen_pieced_words / pieced_words == pytest.approx(0.15, abs=0.02)
  # Tokens are chosen at the rate of words, whatever the words' lengths.
  maskable = ~np.isin(ids, SPECIAL_IDS) & (targets != IGNORED)
  assert chosen.sum() / maskable.sum() == pytest.approx(0.15, abs=0.015)


def _write_corpus(path, count: int, *, seed: int) -> str:
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for i in range(count):
      f.write(" ".join(rng.sample(WORDS, rng.randint(4, 10))) + "\n")
      if i % 10 == 0:
        f.write("\n")  # Blank lines between documents are skipped.
  return str(path)


REPEATED_TEXTS = (
    "the movie was good and the actor was superb",
    "this film is a dull and boring story",
    "the plot is very moving with a great actor",
    "quite a weak film and a tedious plot",
)


def _write_repeated_text(path, times: int) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(REPEATED_TEXTS * times) + "\n")
  return str(path)


def _original_and_chosen(batches):
  """Original ids -> chosen positions, for every example of `batches`."""
  found = {}
  for features, labels in batches:
    ids, labels = features["input_ids"].numpy(), labels.numpy()
    mask = features["attention_mask"].numpy()
    for row in range(len(ids)):
      original = np.where(labels[row] != IGNORED, labels[row], ids[row])
      key = tuple(original[mask[row] == 1])
      found[key] = tuple(np.flatnonzero(labels[row] != IGNORED))
  return found


def test_training_masks_change_every_epoch_and_validation_masks_do_not(
    tiny_bert_dir, tmp_path
):
  corpus = _write_corpus(tmp_path / "corpus.txt", 60, seed=3)
  config = config_lib.PretrainConfig(
      model_dir=str(tmp_path / "run"),
      text_files=corpus,
      validation_fraction=0.25,
      model=config_lib.ModelConfig(model=tiny_bert_dir),
      # The same batches every epoch (no shuffle): only the masks can change.
      data=config_lib.DataConfig(
          max_seq_length=32, batch_size=8, bucketing=False, shuffle_buffer=1
      ),
  )
  prepared = pretraining_data.prepare(config)
  assert len(prepared.texts["train"]) == 45
  assert len(prepared.texts["validation"]) == 15
  training = pretraining_data.training_batches(prepared, 8)
  first, second = _original_and_chosen(training), _original_and_chosen(training)
  assert len(first) == len(second) == 45
  assert first.keys() == second.keys()
  differ = sum(first[key] != second[key] for key in first)
  # Short texts can draw the same mask twice by chance; a mask fixed across
  # epochs differs on none.
  assert differ > 0.5 * len(first)
  validation = pretraining_data.validation_batches(prepared, 8)
  assert _original_and_chosen(validation) == _original_and_chosen(validation)


@pytest.fixture(scope="module")
def pretrained(tiny_bert_dir, tmp_path_factory):
  """A pretrain run of the binary on repeated text."""
  from tf_finetune import pretrain

  directory = tmp_path_factory.mktemp("pretrain")
  corpus = _write_repeated_text(directory / "corpus.txt", 16)
  model_dir = str(directory / "run")
  code = run_binary(
      pretrain,
      [
          f"--model={tiny_bert_dir}",
          f"--text_files={corpus}",
          f"--validation_file={corpus}",
          f"--model_dir={model_dir}",
          "--max_seq_length=32",
          "--batch_size=16",
          "--epochs=10",
          "--learning_rate=5e-3",
          "--warmup_ratio=0.1",
          "--log_every_steps=5",
      ],
  )
  assert code == 0
  return model_dir


def test_masked_lm_loss_falls_on_repeated_text(pretrained):
  with open(os.path.join(pretrained, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  history = summary["history"]
  assert len(history["loss"]) == 10
  assert history["loss"][-1] < 0.7 * history["loss"][0]
  assert history["val_loss"][-1] < 0.7 * history["val_loss"][0]
  assert history["val_masked_accuracy"][-1] >= history["val_masked_accuracy"][0]
  assert summary["train_loss"] == round(history["loss"][-1], 4)
  assert summary["validation_loss"] == round(history["val_loss"][-1], 4)
  assert summary["global_steps"] == 10 * 4  # 64 texts / 16 per batch.
  assert summary["examples_per_second"] > 0
  assert summary["tokens_per_second"] > summary["examples_per_second"]
  # The tiny BERT was saved without a masked-LM head.
  assert summary["fresh_weights"] == ["mlm___cls"]


def test_backbone_moved_its_encoder_and_kept_the_tokenizer(
    pretrained, tiny_bert_dir
):
  import transformers

  backbone_dir = os.path.join(pretrained, "backbone")
  before = transformers.TFAutoModel.from_pretrained(tiny_bert_dir)
  after = transformers.TFAutoModel.from_pretrained(backbone_dir)
  assert type(after) is type(before)
  moved = kept = 0
  for old, new in zip(before.weights, after.weights):
    assert old.name.split("/", 1)[1] == new.name.split("/", 1)[1]
    if "pooler" in old.name:  # Not in the masked-LM model: kept as it was.
      np.testing.assert_array_equal(old.numpy(), new.numpy())
      kept += 1
    elif not np.allclose(old.numpy(), new.numpy()):
      moved += 1
  assert kept == 2
  assert moved == len(before.weights) - kept
  with open(os.path.join(tiny_bert_dir, "vocab.txt"), "rb") as f:
    vocab = f.read()
  with open(os.path.join(backbone_dir, "vocab.txt"), "rb") as f:
    assert f.read() == vocab
  text = "the movie's plot was dull, [SEP] boringly so"
  assert transformers.AutoTokenizer.from_pretrained(backbone_dir)(
      text
  ) == transformers.AutoTokenizer.from_pretrained(tiny_bert_dir)(text)


def test_train_fine_tunes_the_pretrained_backbone(
    pretrained, sentiment_files, tmp_path
):
  from tf_finetune import train

  model_dir = str(tmp_path / "classifier")
  flags = [f for f in TINY_TRAIN_FLAGS if not f.startswith("--epochs")]
  code = run_binary(
      train,
      [
          f"--model={os.path.join(pretrained, 'backbone')}",
          f"--train_file={sentiment_files['train']}",
          f"--validation_file={sentiment_files['validation']}",
          f"--model_dir={model_dir}",
          "--epochs=1",
          "--noexport",
      ]
      + flags,
  )
  assert code == 0
  with open(
      os.path.join(model_dir, "eval_results.json"), encoding="utf-8"
  ) as f:
    assert "accuracy" in json.load(f)["validation"]


def test_pretraining_continues_from_the_saved_masked_lm(pretrained, tmp_path):
  from tf_finetune import pretrain

  model_dir = str(tmp_path / "again")
  code = run_binary(
      pretrain,
      [
          f"--model={os.path.join(pretrained, 'mlm')}",
          f"--text_files={os.path.join(os.path.dirname(pretrained), '*.txt')}",
          f"--model_dir={model_dir}",
          "--max_seq_length=32",
          "--batch_size=8",
          "--max_steps=2",
      ],
  )
  assert code == 0
  with open(os.path.join(model_dir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["fresh_weights"] == []  # The head came with the model.
  assert summary["global_steps"] == 2
  with open(os.path.join(pretrained, "summary.json"), encoding="utf-8") as f:
    before = json.load(f)
  # It starts where the first run ended, not from the random head.
  assert summary["train_loss"] < 0.8 * before["history"]["loss"][0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--text_files=/nonexistent/*.txt"],
            "--text_files: '/nonexistent/*.txt' matches no file.",
        ),
        (
            [
                "--text_files=CORPUS",
                "--validation_fraction=0.1",
                "--validation_file=CORPUS",
            ],
            "--validation_fraction and --validation_file both choose",
        ),
        (
            ["--text_files=CORPUS", "--mask_probability=0"],
            "--mask_probability=0.0 must be in (0, 1)",
        ),
        (
            ["--text_files=CORPUS", "--train_file=CORPUS"],
            "has an unknown extension '.txt'; expected .csv, .tsv, .jsonl or .tfrecord",
        ),
        ([], "No text to pretrain on: set --text_files"),
    ],
)
def test_bad_input_fails_in_one_line(
    tiny_bert_dir, tmp_path, capsys, flags, message
):
  from tf_finetune import pretrain

  corpus = _write_corpus(tmp_path / "corpus.txt", 5, seed=5)
  flags = [flag.replace("CORPUS", corpus) for flag in flags]
  code = run_binary(
      pretrain,
      [f"--model={tiny_bert_dir}", f"--model_dir={tmp_path / 'run'}"] + flags,
  )
  assert code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith("pretrain: error: ")
  assert message in error
  assert not os.path.exists(tmp_path / "run" / "config.json")


def _tiny_masked_lm():
  import transformers

  tf.random.set_seed(0)
  return transformers.TFBertForMaskedLM(
      transformers.BertConfig(
          vocab_size=len(VOCAB),
          hidden_size=32,
          num_hidden_layers=1,
          num_attention_heads=2,
          intermediate_size=64,
          hidden_dropout_prob=0.0,
          attention_probs_dropout_prob=0.0,
      )
  )


def _one_step(strategy, weights, batch, *, gather_targets=True, **compile):
  """Weights before and after one SGD step of a tiny masked-LM model under
  `strategy` (from `weights`, or fresh ones), and the logged loss."""
  import tf_keras

  from tf_finetune.models.masked_lm import MaskedLanguageModel

  with strategy.scope():
    model = MaskedLanguageModel(
        _tiny_masked_lm(), gather_targets=gather_targets
    )
    model(model.dummy_inputs())
    if weights is not None:
      model.mlm.set_weights(weights)
    start = model.mlm.get_weights()
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), **compile)
  history = model.fit(
      tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0
  ).history
  return start, model.mlm.get_weights(), history["loss"][0]


def test_the_loss_is_the_mean_over_the_targets_of_all_replicas():
  from tf_finetune.models.masked_lm import masked_token_losses

  rows, _ = _random_rows(4, seed=6)
  features, targets = _batch(rows)
  # One target in the first half of the batch (the first replica's), five
  # in the second: a mean per replica would weigh them differently.
  chosen = np.zeros(targets.shape, bool)
  chosen[0, 1] = True
  chosen[2, 1:4] = chosen[3, 1:3] = True
  labels = tf.where(chosen, targets, IGNORED)
  start, after_one, loss_one = _one_step(
      tf.distribute.get_strategy(), None, (features, labels)
  )
  # Gradients reduced by copying to one device, not by collective ops (see
  # tests/test_optimization.py).
  _, after_two, loss_two = _one_step(
      tf.distribute.MirroredStrategy(
          ["/cpu:0", "/cpu:1"],
          cross_device_ops=tf.distribute.ReductionToOneDevice(),
      ),
      start,
      (features, labels),
  )
  mlm = _tiny_masked_lm()
  mlm(features)
  mlm.set_weights(start)
  expected = float(
      tf.reduce_sum(masked_token_losses(labels, mlm(features).logits)) / 6.0
  )
  assert loss_one == pytest.approx(expected, rel=1e-4)
  assert loss_two == pytest.approx(expected, rel=1e-4)
  moved = [not np.allclose(a, b) for a, b in zip(start, after_one)]
  assert sum(moved) > len(start) // 2
  for one, two in zip(after_one, after_two):
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-6)


def test_the_head_at_every_position_under_xla_trains_like_the_gathered_head():
  """--jit_compile keeps shapes that do not depend on the masks: the head
  runs at every position and the loss weighs the targets; one step of it
  gives the loss and the weights of the head run on the targets alone."""
  rows, _ = _random_rows(4, seed=7)
  features, targets = _batch(rows)
  chosen = np.random.default_rng(0).random(targets.shape) < 0.3
  labels = tf.where(
      chosen & (features["attention_mask"].numpy() == 1), targets, IGNORED
  )
  strategy = tf.distribute.get_strategy()
  start, gathered, gathered_loss = _one_step(strategy, None, (features, labels))
  _, everywhere, everywhere_loss = _one_step(
      strategy,
      start,
      (features, labels),
      gather_targets=False,
      jit_compile=True,
  )
  assert everywhere_loss == pytest.approx(gathered_loss, rel=1e-4)
  assert sum(not np.allclose(a, b) for a, b in zip(start, gathered)) > 1
  for one, two in zip(gathered, everywhere):
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)
