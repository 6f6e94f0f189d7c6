"""Translation: reading parallel text, teacher forcing, generation, BLEU and
chrF, the binaries and the raw-string export.

The model is a 2-layer, 32-wide T5 built from a config written here, with a
SentencePiece vocabulary of a few hundred pieces trained on the test's own
sentences: the from-scratch path a user without a checkpoint takes.
"""

import importlib.util
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_binary, run_python, write_rows
from tf_finetune import artifacts, config as config_lib, serving
from tf_finetune.tasks import translation

WORDS = {
    "cat": "gato",
    "dog": "perro",
    "house": "casa",
    "book": "libro",
    "tree": "árbol",
    "car": "coche",
    "bird": "pájaro",
    "man": "hombre",
}
ADJECTIVES = {
    "big": "grande",
    "small": "pequeño",
    "red": "rojo",
    "old": "viejo",
}
VERBS = {"sees": "ve", "has": "tiene", "wants": "quiere"}
TINY_T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 8,
    "dropout_rate": 0.0,
    "feed_forward_proj": "relu",
}


def make_parallel_rows(count: int, *, seed: int) -> list[dict]:
  """Learnable English -> Spanish: word for word, adjective after noun."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    first, second = rng.sample(sorted(WORDS), 2)
    adjective = rng.choice(sorted(ADJECTIVES))
    verb = rng.choice(sorted(VERBS))
    rows.append(
        {
            "source": f"the {adjective} {first} {verb} the {second}",
            "target": f"el {WORDS[first]} {ADJECTIVES[adjective]} {VERBS[verb]} "
            f"el {WORDS[second]}",
        }
    )
  return rows


def task_config(**overrides) -> config_lib.TaskConfig:
  return config_lib.task_config(task="translation", **overrides)


def data_config(**overrides) -> config_lib.DataConfig:
  return config_lib.DataConfig(**overrides)


@pytest.fixture(scope="module")
def parallel_files(tmp_path_factory) -> dict:
  directory = tmp_path_factory.mktemp("parallel")
  files = {
      split: write_rows(
          str(directory / f"{split}.tsv"), make_parallel_rows(count, seed=seed)
      )
      for split, count, seed in (
          ("train", 160, 1),
          ("validation", 16, 2),
          ("test", 16, 3),
      )
  }
  config_path = directory / "tiny_t5.json"
  config_path.write_text(json.dumps(TINY_T5), encoding="utf-8")
  files["model_config"] = str(config_path)
  return files


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory, parallel_files) -> str:
  """A from-scratch run trained and exported by the train binary."""
  from tf_finetune import train

  model_dir = str(tmp_path_factory.mktemp("translation") / "model")
  code = run_binary(
      train,
      [
          "--task=translation",
          f"--model_config={parallel_files['model_config']}",
          "--vocab_size=120",
          f"--train_file={parallel_files['train']}",
          f"--validation_file={parallel_files['validation']}",
          f"--test_file={parallel_files['test']}",
          f"--model_dir={model_dir}",
          "--max_source_length=16",
          "--max_target_length=16",
          "--batch_size=16",
          "--epochs=3",
          "--learning_rate=1e-2",
          "--warmup_ratio=0.1",
          "--early_stopping_patience=0",
          "--label_smoothing=0.1",
          "--precision=fp32",
          "--log_every_steps=5",
      ],
  )
  assert code == 0
  return model_dir


# Reading.
def test_reads_tsv_csv_jsonl_and_line_aligned_files(tmp_path):
  rows = make_parallel_rows(5, seed=0)
  task = translation.Translation(task_config())
  for suffix in ("tsv", "csv", "jsonl"):
    path = write_rows(str(tmp_path / f"train.{suffix}"), rows)
    examples = task.read(data_config(train_file=path), "train")
    assert examples.texts == [row["source"] for row in rows]
    assert examples.labels == [row["target"] for row in rows]
  (tmp_path / "train.en").write_text(
      "".join(row["source"] + "\n" for row in rows), encoding="utf-8"
  )
  # Windows line ends and no final newline are fine.
  (tmp_path / "train.es").write_text(
      "\r\n".join(row["target"] for row in rows), encoding="utf-8"
  )
  examples = translation.Translation(
      task_config(train_target_file=str(tmp_path / "train.es"))
  ).read(data_config(train_file=str(tmp_path / "train.en")), "train")
  assert examples.texts == [row["source"] for row in rows]
  assert examples.labels == [row["target"] for row in rows]
  assert examples.line_numbers == [1, 2, 3, 4, 5]
  # Columns by name.
  renamed = [{"en": row["source"], "es": row["target"]} for row in rows]
  path = write_rows(str(tmp_path / "renamed.jsonl"), renamed)
  examples = translation.Translation(
      task_config(source_column="en", target_column="es")
  ).read(data_config(train_file=path), "train")
  assert examples.labels == [row["target"] for row in rows]


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"train.en": "one\ntwo\nthree\n", "train.es": "uno\ndos\n"},
            "has 3 lines but --train_target_file=",
        ),
        (
            {"train.en": "one\n\nthree\n", "train.es": "uno\ndos\ntres\n"},
            "train.en:2: empty line; --train_file needs one sentence",
        ),
        (
            {"train.en": "one\ntwo\n", "train.es": "uno\n  \n"},
            "train.es:2: empty line; --train_target_file",
        ),
        (
            {"train.en": "one\ntwo\n", "train.es": b"uno\nd\xf3s\n"},
            "train.es:2: the file is not valid UTF-8 (byte 0xf3)",
        ),
    ],
)
def test_line_aligned_errors_name_file_and_line(tmp_path, files, message):
  for name, content in files.items():
    data = content if isinstance(content, bytes) else content.encode()
    (tmp_path / name).write_bytes(data)
  task = translation.Translation(
      task_config(train_target_file=str(tmp_path / "train.es"))
  )
  with pytest.raises(
      ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
  ):
    task.read(data_config(train_file=str(tmp_path / "train.en")), "train")


def test_column_errors(tmp_path):
  task = translation.Translation(task_config())
  path = write_rows(
      str(tmp_path / "bad.tsv"),
      [
          {"source": "a cat", "target": "un gato"},
          {"source": "a dog", "target": " "},
      ],
  )
  with pytest.raises(
      ValueError,
      match=r"bad.tsv:3: the " r"--target_column='target' value is empty",
  ):
    task.read(data_config(train_file=path), "train")
  path = write_rows(str(tmp_path / "cols.tsv"), [{"en": "a", "es": "b"}])
  with pytest.raises(
      ValueError,
      match=r"--source_column='source' is not a "
      r"column of .*cols.tsv; columns are: en, es",
  ):
    task.read(data_config(train_file=path), "train")
  (tmp_path / "train.en").write_text("a\n", encoding="utf-8")
  with pytest.raises(
      ValueError,
      match="is a plain text file; give its "
      "line-aligned translations with --train_target_file",
  ):
    task.read(data_config(train_file=str(tmp_path / "train.en")), "train")


def test_config_refuses_what_translation_cannot_use():
  with pytest.raises(
      ValueError, match="needs --source_language and " "--target_language"
  ):
    config_lib.RunConfig(
        model_dir="m",
        data=data_config(tfds_name="wmt14_translate/de-en"),
        model=config_lib.ModelConfig(model="t5-small"),
        task=task_config(),
    )
  with pytest.raises(
      ValueError,
      match="--grad_accum_steps=2 is not " "supported with --task=translation",
  ):
    config_lib.RunConfig(
        model_dir="m",
        data=data_config(train_file="t.tsv"),
        model=config_lib.ModelConfig(model="t5-small"),
        task=task_config(),
        train=config_lib.TrainConfig(grad_accum_steps=2),
    )
  with pytest.raises(ValueError, match="--test_target_file needs --test_file"):
    config_lib.RunConfig(
        model_dir="m",
        data=data_config(train_file="t.tsv"),
        model=config_lib.ModelConfig(model="t5-small"),
        task=task_config(test_target_file="test.es"),
    )
  with pytest.raises(ValueError, match="--model is required"):
    config_lib.RunConfig(
        model_dir="m",
        data=data_config(train_file="t.tsv"),
        model=config_lib.ModelConfig(),
        task=task_config(),
    )
  # A translator from scratch needs no --model.
  run = config_lib.RunConfig(
      model_dir="m",
      data=data_config(train_file="t.tsv"),
      model=config_lib.ModelConfig(),
      task=task_config(model_config="default"),
  )
  assert run.model.model is None


def test_tfds_translation_feature_is_read_by_language():
  import tensorflow_datasets as tfds

  task = translation.Translation(
      task_config(source_language="en", target_language="de")
  )
  data = data_config(
      tfds_name="wmt14_translate/de-en", tfds_validation_split="validation"
  )
  with tfds.testing.mock_data(num_examples=3):
    examples = task.read(data, "validation")
    # The mock fills each language with its own random text.
    loaded = tfds.load("wmt14_translate/de-en", split="validation")
    records = list(tfds.as_numpy(loaded))
    with pytest.raises(
        ValueError,
        match="--source_language='fr' is not a "
        "language of wmt14_translate/de-en; it has: de, en",
    ):
      translation.Translation(
          task_config(source_language="fr", target_language="de")
      ).read(data, "validation")
  assert examples.texts == [r["en"].decode() for r in records]
  assert examples.labels == [r["de"].decode() for r in records]
  assert examples.source == "wmt14_translate/de-en[validation]"


# Teacher forcing.
def test_shifted_targets_and_masked_loss_golden():
  labels = tf.constant([[5, 6, 1, -1], [7, 1, -1, -1]])
  shifted = translation.shift_targets(labels, decoder_start_id=0, pad_id=0)
  np.testing.assert_array_equal(shifted, [[0, 5, 6, 1], [0, 7, 1, 0]])
  # A start id different from the pad id (BART-style).
  shifted = translation.shift_targets(labels, decoder_start_id=2, pad_id=9)
  np.testing.assert_array_equal(shifted, [[2, 5, 6, 1], [2, 7, 1, 9]])

  # Uniform logits over 4 tokens: every real token costs log(4); padding 0.
  logits = tf.zeros([2, 4, 4])
  small = tf.constant([[1, 2, -1, -1], [3, -1, -1, -1]])
  losses, mask = translation.masked_token_losses(small, logits)
  np.testing.assert_allclose(
      losses, np.log(4.0) * np.array([[1, 1, 0, 0], [1, 0, 0, 0]]), rtol=1e-6
  )
  np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 0, 0, 0]])
  # Smoothing: (1 - e) * -log p(y) + e * mean(-log p) by hand.
  logits = tf.constant([[[2.0, 0.0, 0.0]]])
  log_p = np.log(np.exp([2.0, 0.0, 0.0]) / np.exp([2.0, 0.0, 0.0]).sum())
  losses, _ = translation.masked_token_losses(
      tf.constant([[1]]), logits, label_smoothing=0.3
  )
  np.testing.assert_allclose(
      losses[0, 0], 0.7 * -log_p[1] + 0.3 * -log_p.mean(), rtol=1e-6
  )


@pytest.fixture(scope="module")
def tiny_seq2seq(parallel_files):
  """A random tiny T5 with a 30-token vocabulary (pad 0, end 1)."""
  model_config = translation.model_config_from(
      parallel_files["model_config"], 30, pad_id=0, eos_id=1
  )
  tf.random.set_seed(0)
  return translation.build_seq2seq(model_config)


def test_model_loss_ignores_padding_length(tiny_seq2seq):
  """The same targets padded to different lengths give the same loss."""
  model = translation.Seq2SeqModel(tiny_seq2seq)
  inputs = {
      "input_ids": tf.constant([[5, 6, 1]]),
      "attention_mask": tf.constant([[1, 1, 1]]),
  }
  short = model._loss(inputs, tf.constant([[7, 8, 1]]), training=False)
  padded = model._loss(inputs, tf.constant([[7, 8, 1, -1, -1]]), training=False)
  np.testing.assert_allclose(short, padded, rtol=1e-5)


def test_update_takes_the_mean_over_the_global_batchs_tokens():
  """Two replicas, one with 8 target tokens and one with 1: one SGD step on
  both is the single-device step on the mean over all 9 tokens (the mean
  of the two replicas' means would give the 1-token example half)."""
  import tf_keras
  import transformers

  model_config = transformers.T5Config(
      vocab_size=30,
      d_model=16,
      d_kv=8,
      d_ff=16,
      num_layers=1,
      num_heads=2,
      dropout_rate=0.0,
      pad_token_id=0,
      eos_token_id=1,
      decoder_start_token_id=0,
  )
  inputs = {
      "input_ids": tf.constant([[5, 6, 7, 1], [8, 1, 0, 0]]),
      "attention_mask": tf.constant([[1, 1, 1, 1], [1, 1, 0, 0]]),
  }
  labels = tf.constant(
      [[3, 4, 5, 6, 7, 8, 9, 1], [1, -1, -1, -1, -1, -1, -1, -1]]
  )
  tf.random.set_seed(1)
  reference = translation.Seq2SeqModel(translation.build_seq2seq(model_config))
  reference(reference.dummy_inputs())
  initial = reference.get_weights()
  with tf.GradientTape() as tape:
    loss_sum, tokens = reference._loss(inputs, labels, training=True)
    mean = loss_sum / tokens
  assert float(tokens) == 9.0
  gradients = tape.gradient(mean, reference.trainable_variables)
  expected = [
      variable.numpy() - tf.convert_to_tensor(gradient).numpy()
      for variable, gradient in zip(reference.trainable_variables, gradients)
  ]
  # Gradients reduced by copying to one device, not by collective ops (see
  # tests/test_optimization.py).
  strategy = tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"],
      cross_device_ops=tf.distribute.ReductionToOneDevice(),
  )
  with strategy.scope():
    model = translation.Seq2SeqModel(translation.build_seq2seq(model_config))
    model(model.dummy_inputs())
    model.set_weights(initial)
    model.compile(optimizer=tf_keras.optimizers.SGD(learning_rate=1.0))
  # One global batch of 2: one example per replica.
  model.fit(
      tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(2),
      epochs=1,
      verbose=0,
  )
  assert model.optimizer.iterations.numpy() == 1
  assert len(model.trainable_variables) == len(expected)
  for variable, weights in zip(model.trainable_variables, expected):
    np.testing.assert_allclose(
        variable.numpy(), weights, atol=1e-5, err_msg=variable.name
    )
  # The logged loss is the same token mean.
  np.testing.assert_allclose(
      model.history.history["loss"][0], float(mean), rtol=1e-4
  )


# Vocabulary, generation, metrics.
def test_sentencepiece_round_trip_and_generated_ids_stripping():
  rows = make_parallel_rows(40, seed=5)
  vocab = translation.SentencePieceVocab.train(
      [r["source"] for r in rows] + [r["target"] for r in rows], 100
  )
  assert (vocab.pad_id, vocab.eos_id) == (0, 1)
  assert vocab.size <= 100
  ids = vocab.encode(["el gato grande", "the cat"], 4)
  assert all(len(row) <= 4 and row[-1] == vocab.eos_id for row in ids)
  full = vocab.encode(["el pájaro viejo ve el árbol"], 64)[0]
  stripped = translation.strip_generated([full + [0, 0]], 1, 0)
  assert vocab.decode(stripped) == ["el pájaro viejo ve el árbol"]
  # Everything after the first end-of-sequence is dropped; an immediate
  # end gives an empty translation.
  assert translation.strip_generated([[5, 6, 1, 7, 0], [1, 5, 0]], 1, 0) == [
      [5, 6],
      [],
  ]
  assert vocab.decode([[]]) == [""]


def test_generation_shapes_greedy_and_beam(tiny_seq2seq):
  seq2seq = tiny_seq2seq
  sources = [[5, 6, 7, 1], [8, 1], [9, 10, 11, 12, 13, 1]]
  for beams in (1, 3):
    generated = translation.generate_ids(
        seq2seq,
        sources,
        batch_size=2,
        num_beams=beams,
        max_new_tokens=4,
        pad_id=0,
    )
    assert len(generated) == 3
    for row in generated:
      assert 1 <= len(row) <= 4
      assert row.dtype.kind == "i" and row.max() < 30
  # No token twice with no_repeat_ngram_size=1 (a random model repeats).
  for row in translation.generate_ids(
      seq2seq,
      sources,
      batch_size=3,
      num_beams=1,
      max_new_tokens=8,
      pad_id=0,
      no_repeat_ngram_size=1,
  ):
    kept = translation.strip_generated([row], 1, 0)[0]
    assert len(kept) == len(set(kept))
  # Input order is kept though batches are sorted by length: each source
  # alone gives the same output as in the batch.
  alone = [
      translation.generate_ids(
          seq2seq, [s], batch_size=1, num_beams=1, max_new_tokens=4, pad_id=0
      )[0]
      for s in sources
  ]
  together = translation.generate_ids(
      seq2seq, sources, batch_size=3, num_beams=1, max_new_tokens=4, pad_id=0
  )
  for a, b in zip(alone, together):
    np.testing.assert_array_equal(
        translation.strip_generated([a], 1, 0),
        translation.strip_generated([b], 1, 0),
    )


def _bigram_seq2seq(next_token_probabilities: dict) -> object:
  """A T5 whose next token depends only on the previous one.

  The decoder's attention and feed-forward outputs are zero, so its last
  hidden state is the normalized embedding of the previous token; with
  one-hot embeddings the untied output layer holds log p(next | previous)
  row by row. Token 0 is the pad and decoder start, 1 the end; a row given
  as {token: p} shares the rest of its mass evenly, other rows end with 0.9.
  """
  import transformers

  vocab, width = 8, 16
  config = transformers.T5Config(
      vocab_size=vocab,
      d_model=width,
      d_kv=8,
      d_ff=16,
      num_layers=1,
      num_decoder_layers=1,
      num_heads=2,
      dropout_rate=0.0,
      feed_forward_proj="relu",
      tie_word_embeddings=False,
      pad_token_id=0,
      eos_token_id=1,
      decoder_start_token_id=0,
  )
  seq2seq = transformers.TFT5ForConditionalGeneration(config)
  seq2seq(input_ids=tf.constant([[2, 1]]), decoder_input_ids=tf.constant([[0]]))
  probabilities = np.full((vocab, vocab), 0.1 / (vocab - 1))
  probabilities[:, 1] = 0.9
  for previous, row in next_token_probabilities.items():
    rest = [token for token in range(vocab) if token not in row]
    probabilities[previous, rest] = (1 - sum(row.values())) / len(rest)
    for token, probability in row.items():
      probabilities[previous, token] = probability
  for variable in seq2seq.weights:
    name = variable.name
    if name.startswith("shared"):
      variable.assign(np.eye(vocab, width))
    elif "lm_head" in name:
      # RMS normalization makes the one-hot embedding sqrt(width) long.
      kernel = np.zeros((width, vocab))
      kernel[:vocab] = np.log(probabilities) / np.sqrt(width)
      variable.assign(kernel)
    elif "decoder" in name and ("/o/kernel" in name or "/wo/kernel" in name):
      variable.assign(tf.zeros_like(variable))
  return seq2seq


@pytest.mark.parametrize(
    "table, greedy, beam",
    [
        # Greedy takes 2 (0.5), then ends at 0.24: 0.12. Two beams also keep
        # 2's runner-up 3 (0.4), which ends at 0.9: 0.36, the better one.
        (
            {
                0: {2: 0.5, 3: 0.4},
                2: {1: 0.24, 4: 0.18, 5: 0.18, 6: 0.18, 7: 0.18},
                3: {1: 0.9},
            },
            [2],
            [3],
        ),
        # 2 then the end (0.45) beats 3 then the end (0.2): they agree.
        ({0: {2: 0.5, 3: 0.4}, 2: {1: 0.9}, 3: {1: 0.5}}, [2], [2]),
    ],
)
def test_beam_search_finds_the_likelier_translation_greedy_misses(
    table, greedy, beam
):
  seq2seq = _bigram_seq2seq(table)
  sources = [[5, 6, 1], [7, 1], [4, 4, 4, 4, 1]]

  def translate(num_beams):
    generated = translation.generate_ids(
        seq2seq,
        sources,
        batch_size=2,
        num_beams=num_beams,
        max_new_tokens=4,
        pad_id=0,
    )
    return [translation.strip_generated([row], 1, 0)[0] for row in generated]

  assert translate(1) == [greedy] * len(sources)
  assert translate(2) == [beam] * len(sources)
  assert translate(3) == [beam] * len(sources)


def test_bleu_and_chrf_on_known_examples():
  perfect = translation.translation_metrics(
      ["el gato ve el perro"], ["el gato ve el perro"]
  )
  assert perfect["bleu"] == pytest.approx(100.0)
  assert perfect["chrf"] == pytest.approx(100.0)
  empty = translation.translation_metrics(
      ["", "el perro"], ["el gato", "el perro"]
  )
  assert empty["empty_translations"] == 1
  assert empty["num_examples"] == 2
  # Case counts in BLEU, not in its caseless twin.
  lowercased = translation.translation_metrics(
      ["el gato ve el perro"], ["El Gato ve el Perro"]
  )
  assert lowercased["bleu"] < 50.0
  assert lowercased["bleu_lowercase"] == pytest.approx(100.0)
  # Hand count: hypothesis "el perro ve" against "el gato ve el perro":
  # unigram precision 3/3, bigram 1/2 ("el perro"); a 3-word hypothesis
  # has no 4-gram at all, so BLEU is 0 whatever the smoothing.
  partial = translation.translation_metrics(
      ["el perro ve"], ["el gato ve el perro"]
  )
  assert partial["bleu_precisions"][:2] == pytest.approx([100.0, 50.0])
  assert partial["bleu"] == 0.0
  assert 0.0 < partial["chrf"] < 100.0
  # The brevity penalty: 3 words against 5, exp(1 - 5/3).
  assert partial["brevity_penalty"] == pytest.approx(
      np.exp(1 - 5 / 3), abs=1e-4
  )


# Training, binaries, export.
def test_training_lowers_loss_and_evaluates(translation_run):
  with open(os.path.join(translation_run, "history.json")) as f:
    history = json.load(f)
  assert history["loss"][-1] < 0.6 * history["loss"][0]
  assert history["val_loss"][-1] < history["val_loss"][0]
  assert history["val_token_accuracy"][-1] > history["val_token_accuracy"][0]
  with open(os.path.join(translation_run, "eval_results.json")) as f:
    results = json.load(f)
  assert set(results) == {"selection", "validation", "test"}
  # The best validation epoch was kept: validation BLEU is a selection
  # number, test BLEU held out.
  assert results["selection"] == {
      "kept_epoch": "validation",
      "validation_metrics": "selection",
      "test_metrics": "held out",
  }
  assert results["test"]["num_examples"] == 16
  # The reported scores are those of the model's translations of the test
  # sources against their references, recomputed here with sacreBLEU.
  import sacrebleu

  test_rows = make_parallel_rows(16, seed=3)
  trained = artifacts.load_trained(translation_run)
  hypotheses = translation.PythonTranslator(
      trained.model, trained.config.task
  ).translate([row["source"] for row in test_rows])
  references = [[row["target"] for row in test_rows]]
  bleu = sacrebleu.corpus_bleu(hypotheses, references).score
  chrf = sacrebleu.corpus_chrf(hypotheses, references).score
  assert results["test"]["bleu"] == pytest.approx(bleu, abs=1e-4)
  assert results["test"]["chrf"] == pytest.approx(chrf, abs=1e-4)
  assert os.path.isfile(
      os.path.join(translation_run, "tokenizer", "spiece.model")
  )
  with open(os.path.join(translation_run, "summary.json")) as f:
    summary = json.load(f)
  assert summary["epochs_run"] == 3


def test_evaluate_and_predict_binaries(
    translation_run, parallel_files, tmp_path
):
  from tf_finetune import evaluate, predict

  rows = make_parallel_rows(6, seed=9)
  (tmp_path / "in.en").write_text(
      "".join(r["source"] + "\n" for r in rows), encoding="utf-8"
  )
  (tmp_path / "in.es").write_text(
      "".join(r["target"] + "\n" for r in rows), encoding="utf-8"
  )
  assert (
      run_binary(
          evaluate,
          [
              f"--model_dir={translation_run}",
              f"--test_file={tmp_path / 'in.en'}",
              f"--test_target_file={tmp_path / 'in.es'}",
              "--split_name=plain",
          ],
      )
      == 0
  )
  with open(os.path.join(translation_run, "eval_results.json")) as f:
    assert json.load(f)["plain"]["num_examples"] == 6
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={translation_run}",
              f"--input_file={tmp_path / 'in.en'}",
              f"--output_file={tmp_path / 'out.es'}",
          ],
      )
      == 0
  )
  lines = (tmp_path / "out.es").read_text(encoding="utf-8").split("\n")
  assert len(lines) == 7 and lines[-1] == ""
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={translation_run}",
              f"--input_file={parallel_files['test']}",
              f"--output_file={tmp_path / 'out.jsonl'}",
          ],
      )
      == 0
  )
  records = [
      json.loads(line)
      for line in (tmp_path / "out.jsonl")
      .read_text(encoding="utf-8")
      .splitlines()
  ]
  assert len(records) == 16
  assert set(records[0]) == {"source", "target", "translation"}
  # Both files hold the model's translations of their sources, in order.
  trained = artifacts.load_trained(translation_run)
  translator = translation.PythonTranslator(trained.model, trained.config.task)
  assert lines[:-1] == translator.translate([r["source"] for r in rows])
  test_rows = make_parallel_rows(16, seed=3)
  assert [r["source"] for r in records] == [r["source"] for r in test_rows]
  assert [r["target"] for r in records] == [r["target"] for r in test_rows]
  assert [r["translation"] for r in records] == translator.translate(
      [r["source"] for r in test_rows]
  )


_RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  SentencePiece ops.
loaded = tf.saved_model.load(sys.argv[1])
texts = json.loads(sys.argv[2])
out = loaded.signatures["serving_default"](text=tf.constant(texts))
print(json.dumps([t.decode("utf-8") for t in out["translation"].numpy()]))
"""


def test_export_translates_raw_strings_in_a_fresh_process(translation_run):
  export_dir = serving.latest_version_dir(
      os.path.join(translation_run, "export")
  )
  assert export_dir is not None
  texts = ["the big cat sees the dog", "the old man has the book", ""]
  result = run_python(["-c", _RELOAD, export_dir, json.dumps(texts)])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  trained = artifacts.load_trained(translation_run)
  expected = translation.PythonTranslator(
      trained.model, trained.config.task
  ).translate(texts)
  assert served == expected
  assert all(isinstance(text, str) for text in served)


def _pretrained_t5_dirs(directory) -> tuple[str, str]:
  """A tiny pretrained T5 with its tokenizer, saved twice: with TF weights,
  and with PyTorch weights only (pytorch_model.bin: converted from the TF
  ones where PyTorch is installed, placeholder bytes otherwise)."""
  import shutil

  import transformers

  rows = make_parallel_rows(40, seed=7)
  vocab = translation.SentencePieceVocab.train(
      [r["source"] for r in rows] + [r["target"] for r in rows], 60
  )
  vocab.save(str(directory))
  tokenizer = transformers.T5TokenizerFast(
      vocab_file=str(directory / translation.SPIECE_FILENAME), extra_ids=0
  )
  config = transformers.T5Config(
      vocab_size=len(tokenizer),
      d_model=16,
      d_kv=8,
      d_ff=16,
      num_layers=1,
      num_heads=2,
      pad_token_id=tokenizer.pad_token_id,
      eos_token_id=tokenizer.eos_token_id,
      decoder_start_token_id=tokenizer.pad_token_id,
  )
  seq2seq = transformers.TFT5ForConditionalGeneration(config)
  seq2seq(seq2seq.dummy_inputs)
  tf_dir, pt_dir = str(directory / "tf"), str(directory / "pt")
  seq2seq.save_pretrained(tf_dir)
  tokenizer.save_pretrained(tf_dir)
  if importlib.util.find_spec("torch"):
    transformers.T5ForConditionalGeneration.from_pretrained(
        tf_dir, from_tf=True
    ).save_pretrained(pt_dir, safe_serialization=False)
  else:
    os.makedirs(pt_dir)
    shutil.copy(os.path.join(tf_dir, "config.json"), pt_dir)
    with open(os.path.join(pt_dir, "pytorch_model.bin"), "wb") as f:
      f.write(b"not loaded")
  tokenizer.save_pretrained(pt_dir)
  return tf_dir, pt_dir


def test_pickled_pretrained_translator_needs_allow_pickle_weights(tmp_path):
  """As for encoders: a local model with only pytorch_model.bin is refused
  without --allow_pickle_weights and read from PyTorch with it."""
  from tf_finetune import tasks

  tf_dir, pt_dir = _pretrained_t5_dirs(tmp_path)
  assert set(os.listdir(pt_dir)) & {"tf_model.h5", "model.safetensors"} == set()
  train_file = write_rows(
      str(tmp_path / "t.tsv"), make_parallel_rows(8, seed=8)
  )

  def run_config(model, allow_pickle_weights):
    return config_lib.RunConfig(
        model_dir=str(tmp_path / "m"),
        data=data_config(train_file=train_file),
        model=config_lib.ModelConfig(
            model=model, allow_pickle_weights=allow_pickle_weights
        ),
        task=task_config(),
    )

  def build(model, allow_pickle_weights=False):
    config = run_config(model, allow_pickle_weights)
    task = tasks.get_task(config.task)
    prepared = task.prepare(config)
    return task.build_model(
        config, prepared, total_steps=1, steps_per_epoch=1
    ).seq2seq

  with pytest.raises(
      ValueError,
      match=r"--model='.*pt' only has pickled PyTorch weights .* "
      r"--allow_pickle_weights",
  ):
    build(pt_dir)
  if not importlib.util.find_spec("torch"):
    # The flag lets the PyTorch reader run; without PyTorch installed the
    # error says what to install.
    with pytest.raises(
        ValueError,
        match=r"--model='.*pt' has PyTorch weights \(pytorch_model.bin\), "
        r"and reading them needs PyTorch: pip install torch",
    ):
      build(pt_dir, allow_pickle_weights=True)
    return
  from_tf, from_pt = build(tf_dir), build(pt_dir, allow_pickle_weights=True)
  for expected, loaded in zip(from_tf.weights, from_pt.weights):
    np.testing.assert_allclose(loaded.numpy(), expected.numpy(), atol=1e-6)


def test_pretrained_vocabularies_export_only_with_an_in_graph_twin(
    tmp_path, tiny_bert_dir
):
  """Export tokenizes in the graph only when it gives the model's own
  tokenizer's ids: a T5 checkpoint's SentencePiece model, or the tokenizer
  reproduced from its tokenizer.json (WordPiece here); others are refused
  with the reason."""
  import transformers

  rows = make_parallel_rows(40, seed=6)
  own = translation.SentencePieceVocab.train(
      [r["source"] for r in rows] + [r["target"] for r in rows], 100
  )
  own.save(str(tmp_path))
  t5_tokenizer = transformers.T5TokenizerFast(
      vocab_file=str(tmp_path / translation.SPIECE_FILENAME), extra_ids=0
  )
  t5_tokenizer.save_pretrained(str(tmp_path / "t5"))
  vocab = translation.load_vocab(str(tmp_path / "t5"))
  assert isinstance(vocab, translation.HuggingFaceVocab)
  run = config_lib.RunConfig(
      model_dir="m",
      data=data_config(train_file="t.tsv"),
      model=config_lib.ModelConfig(model="my-t5"),
      task=task_config(max_source_length=16),
  )
  # The run's own SentencePiece model tokenizes the same in the graph.
  texts = ["the big cat sees the dog", "el gato grande", "Hello, world!"]
  in_graph = own.graph_tokenizer().tokenize(tf.constant(texts))
  assert in_graph.to_list() == own.encode(texts, 64)
  # transformers' fast T5 tokenizer over this tiny model splits some words
  # differently from SentencePiece itself ("the" at the start, unknown
  # capitals), and its Metaspace never puts "▁" before the text, which the
  # in-graph SentencePiece does not reproduce: the export must refuse
  # rather than serve other ids.
  assert vocab.encode(["the dog"], 64) != own.encode(["the dog"], 64)
  with pytest.raises(
      ValueError,
      match=r"Export of --model='my-t5' \(T5TokenizerFast\) is not "
      r"supported: T5TokenizerFast's pre-tokenizer is .*'prepend_scheme': "
      r"'never'.* Translate with `python -m tf_finetune.predict",
  ):
    translation.graph_vocab_of(vocab, run)
  # A WordPiece tokenizer is reproduced in the graph: source ids and
  # decoded translations as its own.
  bert = translation.HuggingFaceVocab(
      transformers.AutoTokenizer.from_pretrained(tiny_bert_dir)
  )
  assert translation.graph_vocab_of(bert, run) is bert
  serving_tokenizer = bert.serving_tokenizer(16)
  texts = ["good film, very bad!", "a great movie with quite bad acting " * 3]
  ids = serving_tokenizer.encode(tf.constant(texts)).to_list()
  assert ids == bert.encode(texts, 16)
  assert [
      text.decode()
      for text in serving_tokenizer.detokenize(tf.ragged.constant(ids)).numpy()
  ] == bert.decode(ids)


# Searching in the graph.
def test_repeated_ngram_tokens_by_hand():
  # Decoder start 0, then 6 tokens written; padding (0) after them.
  sequences = tf.constant([[0, 5, 6, 5, 6, 5, 0, 0], [0, 7, 8, 7, 8, 9, 0, 0]])

  def banned(length, ngram_size):
    mask = translation.repeated_ngram_tokens(sequences, length, ngram_size, 10)
    return [np.flatnonzero(row).tolist() for row in mask.numpy()]

  # After "5", "5 6" was seen; "9" never began a bigram.
  assert banned(6, 2) == [[6], []]
  # After "6 5", "6 5 6" was seen; "8 9" never began a trigram.
  assert banned(6, 3) == [[6], []]
  # The first 5 tokens: after "5 6", "5 6 5"; after "7 8", "7 8 7".
  assert banned(5, 3) == [[5], [7]]
  # Size 1: every token written so far, the start token included.
  assert banned(6, 1) == [[0, 5, 6], [0, 7, 8, 9]]
  # Fewer tokens than the n-gram: nothing to repeat.
  assert banned(2, 3) == [[], []]
  # transformers' eager processor bans the same tokens.
  from transformers.generation import TFNoRepeatNGramLogitsProcessor

  for length in range(1, 8):
    for size in (1, 2, 3):
      eager = TFNoRepeatNGramLogitsProcessor(size)(
          sequences, tf.zeros([2, 10]), length
      )
      assert banned(length, size) == [
          np.flatnonzero(np.isinf(row)).tolist() for row in eager.numpy()
      ], (length, size)


_SEARCHES = {
    "greedy": translation.Decoding(1, 1.0, 2),
    "beam": translation.Decoding(4, 0.6, 2),
}

_RELOAD_IDS = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = {}
for name in json.loads(sys.argv[2]):
  for rows in (slice(0, 4), slice(1, 3)):
    ids = np.array(json.loads(sys.argv[3]), np.int32)[rows]
    mask = np.array(json.loads(sys.argv[4]), np.int32)[rows]
    out[f"{name}{rows.start}"] = loaded.signatures[name](
        input_ids=tf.constant(ids), attention_mask=tf.constant(mask)
    )["output_0"].numpy().tolist()
print(json.dumps(out))
"""


@pytest.mark.parametrize("family", ["bart", "marian", "bert2bert"])
def test_graph_search_matches_generate_after_reload(family, tmp_path):
  """Each search, saved with an unknown batch size and reloaded in a
  process that imports only TensorFlow, gives `generate`'s ids on batches
  of 4 and 2 sources, with the family's own rules (BART forces its first
  and last tokens, Marian never writes its pad token); a BERT encoder and
  decoder (`TFEncoderDecoderModel`) too."""
  import transformers

  common = dict(
      vocab_size=40,
      d_model=16,
      encoder_layers=1,
      decoder_layers=1,
      encoder_attention_heads=2,
      decoder_attention_heads=2,
      encoder_ffn_dim=16,
      decoder_ffn_dim=16,
      max_position_embeddings=64,
      dropout=0.0,
  )
  tf.random.set_seed(3)
  if family == "bart":
    seq2seq = transformers.TFBartForConditionalGeneration(
        transformers.BartConfig(
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_bos_token_id=0,
            forced_eos_token_id=2,
            min_length=4,
            **common,
        )
    )
  elif family == "bert2bert":
    bert = dict(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**bert),
        transformers.BertConfig(
            is_decoder=True, add_cross_attention=True, **bert
        ),
    )
    config.update(
        dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)
    )
    seq2seq = transformers.TFEncoderDecoderModel(config=config)
    seq2seq.generation_config.update(
        decoder_start_token_id=2, pad_token_id=0, eos_token_id=3
    )
  else:
    seq2seq = transformers.TFMarianMTModel(
        transformers.MarianConfig(
            pad_token_id=39,
            eos_token_id=0,
            decoder_start_token_id=39,
            bad_words_ids=[[39]],
            **common,
        )
    )
  seq2seq(
      input_ids=tf.constant([[5, 6]]), decoder_input_ids=tf.constant([[5, 6]])
  )
  config = seq2seq.config
  if family == "marian":
    # The model would write its pad token first, but Marian's rules ban it.
    bias = np.zeros([1, 40], np.float32)
    bias[0, 39] = 10.0
    seq2seq.bias_layer.bias.assign(bias)
  sources = [[5, 6, 7, 8], [], [9, 10, 11, 12, 13, 14, 15, 16, 17], [20, 21]]
  width = 1 + max(len(row) for row in sources)
  ids = np.full((len(sources), width), config.pad_token_id, np.int32)
  mask = np.zeros_like(ids)
  for row, source in enumerate(sources):
    ids[row, : len(source) + 1] = source + [config.eos_token_id]
    mask[row, : len(source) + 1] = 1

  module = tf.Module()
  module.seq2seq = seq2seq
  signatures = {}
  for name, decoding in _SEARCHES.items():
    signatures[name] = tf.function(
        lambda input_ids, attention_mask, decoding=decoding: (
            translation.search_in_graph(
                seq2seq,
                input_ids,
                attention_mask,
                decoding=decoding,
                max_new_tokens=8,
            )
        ),
        input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2,
    ).get_concrete_function()
  tf.saved_model.save(module, str(tmp_path / "search"), signatures=signatures)
  result = run_python(
      [
          "-c",
          _RELOAD_IDS,
          str(tmp_path / "search"),
          json.dumps(list(_SEARCHES)),
          json.dumps(ids.tolist()),
          json.dumps(mask.tolist()),
      ]
  )
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  for name, decoding in _SEARCHES.items():
    for rows in (slice(0, 4), slice(1, 3)):
      expected = seq2seq.generate(
          input_ids=tf.constant(ids[rows]),
          attention_mask=tf.constant(mask[rows]),
          max_new_tokens=8,
          **decoding.generate_options(),
      ).numpy()
      assert served[f"{name}{rows.start}"] == expected.tolist(), name
  # The family's rules are in force: BART starts with its forced token.
  if family == "bart":
    assert {row[1] for row in served["beam0"]} == {0}
  elif family == "marian":
    for row in served["beam0"]:
      written = row[1 : row.index(0)] if 0 in row else row[1:]
      assert 39 not in written


_RELOAD_BOTH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  SentencePiece ops.
texts = tf.constant(json.loads(sys.argv[2]))
served = {}
for name, directory in json.loads(sys.argv[1]).items():
  serve = tf.saved_model.load(directory).signatures["serving_default"]
  out = serve(text=texts)["translation"].numpy()
  served[name] = [t.decode("utf-8") for t in out]
print(json.dumps(served))
"""


def _sequence_scores(
    seq2seq, source_ids, generated, *, pad_id, eos_id, length_penalty
):
  """log p(translation | source) / length ** length_penalty of generated ids
  (the end-of-sequence token counted), as beam search ranks them."""
  scores = []
  for source, row in zip(source_ids, generated):
    kept = translation.strip_generated([row], eos_id, pad_id)[0]
    target = kept + [eos_id] if len(kept) < len(row) else kept
    log_probs = tf.nn.log_softmax(
        seq2seq(
            input_ids=tf.constant([source]),
            decoder_input_ids=tf.constant([[pad_id] + target[:-1]]),
        ).logits[0]
    ).numpy()
    total = sum(log_probs[i, token] for i, token in enumerate(target))
    scores.append(total / len(target) ** length_penalty)
  return scores


def test_export_binary_writes_greedy_and_beam_translators(
    translation_run, tmp_path
):
  """From one run, the export binary writes a greedy and a beam-search
  SavedModel; reloaded in a fresh process each translates raw strings
  (empty, cut and long ones included) as `generate` does in Python, and
  beam search finds likelier translations where it differs."""
  from tf_finetune import export

  searches = {
      "greedy": ["--num_beams=1", "--no_repeat_ngram_size=2"],
      "beam": [
          "--num_beams=4",
          "--length_penalty=0.6",
          "--no_repeat_ngram_size=2",
      ],
  }
  dirs = {}
  for name, flags in searches.items():
    base = str(tmp_path / name)
    code = run_binary(
        export,
        [f"--model_dir={translation_run}", f"--export_dir={base}", *flags],
    )
    assert code == 0
    dirs[name] = serving.latest_version_dir(base)
  rows = make_parallel_rows(6, seed=11)
  texts = [
      rows[0]["source"],
      "",
      "the dog",
      # Longer than --max_source_length=16: the first 15 pieces are read.
      " ".join(row["source"] for row in rows[1:4]),
      rows[4]["source"] + " and " + rows[5]["source"],
      "cat",
  ]
  # Both in one fresh process.
  result = run_python(["-c", _RELOAD_BOTH, json.dumps(dirs), json.dumps(texts)])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])

  trained = artifacts.load_trained(translation_run)
  vocab, seq2seq = trained.model.vocab, trained.model.seq2seq
  source_ids = vocab.encode(texts, 16)
  generated = {}
  for name, decoding in (
      ("greedy", translation.Decoding(1, 1.0, 2)),
      ("beam", translation.Decoding(4, 0.6, 2)),
  ):
    generated[name] = translation.generate_ids(
        seq2seq,
        source_ids,
        batch_size=len(texts),
        num_beams=decoding.num_beams,
        length_penalty=decoding.length_penalty,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
        max_new_tokens=16,
        pad_id=vocab.pad_id,
    )
    expected = vocab.decode(
        translation.strip_generated_rows(generated[name], vocab)
    )
    assert served[name] == expected, name
  # Beams were searched: some translation differs from greedy's, and every
  # beam translation scores at least as high under beam search's ranking.
  assert served["beam"] != served["greedy"]
  scores = {
      name: _sequence_scores(
          seq2seq,
          source_ids,
          ids,
          pad_id=vocab.pad_id,
          eos_id=vocab.eos_id,
          length_penalty=0.6,
      )
      for name, ids in generated.items()
  }
  for beam, greedy in zip(scores["beam"], scores["greedy"]):
    assert beam >= greedy - 1e-4


def test_evaluate_scores_each_beam_width(translation_run, tmp_path, capsys):
  """--compare_num_beams scores the test translations of each beam width
  (with the --length_penalty given) beside the run's own decoding."""
  import dataclasses

  import sacrebleu

  from tf_finetune import evaluate

  code = run_binary(
      evaluate,
      [
          f"--model_dir={translation_run}",
          "--compare_num_beams=1,3",
          "--length_penalty=0.6",
          "--split_name=beams",
      ],
  )
  assert code == 0
  with open(os.path.join(translation_run, "eval_results.json")) as f:
    comparisons = json.load(f)["beams"]["comparisons"]
  trained = artifacts.load_trained(translation_run)
  test_rows = make_parallel_rows(16, seed=3)
  references = [[row["target"] for row in test_rows]]
  bleus = []
  for row, beams in zip(comparisons, (1, 3), strict=True):
    task = dataclasses.replace(
        trained.config.task, num_beams=beams, length_penalty=0.6
    )
    hypotheses = translation.PythonTranslator(trained.model, task).translate(
        [r["source"] for r in test_rows]
    )
    assert row["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, references).score, abs=1e-4
    )
    assert row["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, references).score, abs=1e-4
    )
    assert row["examples_per_second"] > 0
    bleus.append(row["bleu"])
  # The two searches translate differently here.
  assert bleus[0] != bleus[1]
  out = capsys.readouterr().out
  assert f"beams with --num_beams=3: BLEU: {bleus[1]:.2f}" in out


def test_decoding_flags_errors(translation_run, tmp_path, capsys):
  from tf_finetune import evaluate, export

  code = run_binary(
      evaluate, [f"--model_dir={translation_run}", "--compare_num_beams=1,x"]
  )
  assert code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "evaluate: error: --compare_num_beams='1,x': 'x' is not a beam width; "
      "expected integers of at least 1 separated by commas, e.g. 1,4."
  )
  code = run_binary(
      export, [f"--model_dir={translation_run}", "--length_penalty=nan"]
  )
  assert code == 2
  assert (
      "--length_penalty=nan must be a finite number" in capsys.readouterr().err
  )
  classifier_dir = str(tmp_path / "classifier")
  config_lib.write_config(
      config_lib.RunConfig(
          model_dir=classifier_dir,
          data=data_config(train_file="t.csv"),
          model=config_lib.ModelConfig(model="m"),
          task=config_lib.task_config(),
      ),
      classifier_dir,
  )
  code = run_binary(export, [f"--model_dir={classifier_dir}", "--num_beams=4"])
  assert code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "export: error: --num_beams chooses how a translator searches; the run "
      f"in {classifier_dir} is --task=classification."
  )
