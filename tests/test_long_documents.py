"""Long documents: truncation rules, windows pooled per document, and the
same reading in training data, evaluation and the exported SavedModel."""

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
    TINY_TRAIN_FLAGS,
    make_vocab,
    run_binary,
    run_python,
    write_rows,
)
from absl import flags

from tf_finetune import config as config_lib
from tf_finetune import artifacts, flag_definitions, serving
from tf_finetune.data import pipeline, readers
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks import encoder as encoder_task
from tf_finetune.tasks.classification import ClassifierServer
from tf_finetune.text.long_documents import CHUNK_MASK, LongDocuments
from tf_finetune.text.tokenization import TextEncoder, check_matches_tokenizer

VOCAB = make_vocab()
# Twenty words of one token each: token i of the text is WORDS[i].
WORDS = (NEUTRAL_WORDS + POSITIVE_WORDS)[:20]
KNOWN_TEXT = " ".join(WORDS)
CLS, SEP = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")


def _ids(words):
  return [VOCAB.index(word) for word in words]


def _encoder(max_seq_length=10, **policy):
  return TextEncoder.wordpiece(
      vocab=VOCAB,
      lower_case=True,
      max_seq_length=max_seq_length,
      long_documents=LongDocuments(**policy),
  )


def _long_texts(count, *, seed, lengths=(0, 3, 9, 17, 30, 55)):
  rng = random.Random(seed)
  words = NEUTRAL_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS
  return [
      " ".join(rng.choice(words) for _ in range(lengths[i % len(lengths)]))
      for i in range(count)
  ]


# Settings.


def _run(tmp_path, data=None, train=None, **settings):
  return config_lib.RunConfig(
      model_dir=str(tmp_path),
      data=config_lib.DataConfig(train_file="train.csv", **(data or {})),
      model=config_lib.ModelConfig(model="bert-base-uncased"),
      train=config_lib.TrainConfig(**(train or {})),
      task=config_lib.task_config(**settings),
  )


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(head_share=1.5), r"--head_share=1.5 must be in \[0, 1\]"),
        (dict(max_chunks=0), "--max_chunks=0 must be at least 1"),
        (dict(chunk_stride=-1), "--chunk_stride=-1 must be at least 0"),
        (dict(truncation="middle"), "--truncation='middle' is not one of"),
        (
            dict(long_document="chunks", chunk_stride=126),
            "--chunk_stride=126 must be smaller than the tokens a window",
        ),
    ],
)
def test_bad_long_document_settings_name_their_flag(
    tmp_path, settings, message
):
  with pytest.raises(ValueError, match=message):
    _run(tmp_path, **settings)


@pytest.mark.parametrize(
    "settings", [dict(truncation="tail"), dict(long_document="chunks")]
)
def test_sentence_pairs_refuse_other_than_head_truncation(tmp_path, settings):
  with pytest.raises(
      ValueError,
      match="is for single texts; sentence pairs .* are cut longest-first",
  ):
    _run(tmp_path, data=dict(text_pair_column="b"), **settings)
  _run(tmp_path, data=dict(text_pair_column="b"))  # Head truncation is fine.


def test_chunks_refuse_xla(tmp_path):
  with pytest.raises(ValueError, match="XLA cannot compile; drop --jit_comp"):
    _run(tmp_path, train=dict(jit_compile=True), long_document="chunks")


def test_the_flags_belong_to_the_whole_text_tasks(tmp_path):
  flag_values = flags.FlagValues()
  flag_definitions.define_train_flags(flag_values)
  argv = [
      "train",
      "--model=bert-base-uncased",
      "--train_file=a.csv",
      f"--model_dir={tmp_path}",
      "--truncation=head_tail",
      "--long_document=chunks",
      "--max_chunks=4",
  ]
  for task in ("classification", "regression", "multi_label"):
    flag_values.unparse_flags()
    flag_values(argv + [f"--task={task}"])
    settings = flag_definitions.run_config_from_flags(flag_values).task
    assert (settings.truncation, settings.chunks, settings.max_chunks) == (
        "head_tail",
        True,
        4,
    )
  flag_values.unparse_flags()
  flag_values(argv + ["--task=token_classification"])
  with pytest.raises(ValueError, match="--truncation is a setting of"):
    flag_definitions.run_config_from_flags(flag_values)


# Truncation rules.


@pytest.mark.parametrize(
    "policy, kept",
    [
        (dict(truncation="head"), WORDS[:8]),
        (dict(truncation="tail"), WORDS[-8:]),
        # 8 tokens fit [CLS] a [SEP] of 10: floor(0.25 x 8 + 0.5) = 2 + 6.
        (dict(truncation="head_tail"), WORDS[:2] + WORDS[-6:]),
        (dict(truncation="head_tail", head_share=0.5), WORDS[:4] + WORDS[-4:]),
    ],
)
def test_truncation_keeps_the_expected_head_and_tail_ids(policy, kept):
  features = _encoder(**policy).encode(tf.constant([KNOWN_TEXT, "good fun"]))
  assert features["input_ids"].numpy().tolist() == [
      [CLS] + _ids(kept) + [SEP],
      [CLS] + _ids(["good", "fun"]) + [SEP] + [0] * 6,
  ]


def test_head_tail_keeps_128_and_382_of_bert_s_510_tokens():
  # Sun et al. (2019)'s split, from --head_share=0.25.
  assert LongDocuments("head_tail").head_tokens(510) == 128
  assert LongDocuments("head_tail", head_share=0.0).head_tokens(8) == 0


def test_windows_overlap_by_the_stride_and_stop_at_max_chunks():
  encoder = _encoder(chunks=True, overlap=3, max_chunks=3)
  ids, _ = encoder.encode_windows(tf.constant([KNOWN_TEXT, "good"]))
  # Windows of 8 tokens every 8 - 3 = 5: [0, 8), [5, 13), [10, 18); the
  # fourth, [15, 20), is past --max_chunks=3: the text is first cut to the
  # 8 + 2 x 5 = 18 tokens three windows hold.
  assert ids.to_list() == [
      [
          [CLS] + _ids(WORDS[0:8]) + [SEP],
          [CLS] + _ids(WORDS[5:13]) + [SEP],
          [CLS] + _ids(WORDS[10:18]) + [SEP],
      ],
      [[CLS] + _ids(["good"]) + [SEP]],
  ]
  tail = _encoder(truncation="tail", chunks=True, overlap=3, max_chunks=3)
  ids, _ = tail.encode_windows(tf.constant([KNOWN_TEXT]))
  assert ids.to_list()[0][0] == [CLS] + _ids(WORDS[2:10]) + [SEP]


@pytest.mark.parametrize(
    "policy",
    [
        dict(truncation="tail"),
        dict(truncation="head_tail"),
        dict(chunks=True),
        dict(chunks=True, overlap=3, max_chunks=3, truncation="head_tail"),
        dict(chunks=True, overlap=7, max_chunks=2, truncation="tail"),
    ],
)
def test_in_graph_truncation_and_windows_match_the_hugging_face_tokenizer(
    tiny_bert_dir, policy
):
  tokenizer = backbone_lib.load_tokenizer(tiny_bert_dir)
  texts = _long_texts(12, seed=3) + [KNOWN_TEXT]
  encoder = TextEncoder.from_hf_tokenizer(
      tokenizer, 10, long_documents=LongDocuments(**policy)
  )
  check_matches_tokenizer(encoder, tokenizer, texts)
  # What the check compared: the long texts' windows, as many as expected.
  windows, _ = encoder.encode_windows(tf.constant(texts))
  lengths = [
      len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
  ]
  budget = 8
  expected = np.minimum(
      encoder.long_documents.num_windows(lengths, budget),
      encoder.long_documents.max_chunks,
  )
  assert windows.row_lengths().numpy().tolist() == expected.tolist()


# The model: windows pooled per document.


@pytest.fixture(scope="module")
def models(tiny_bert_dir):
  """Tiny BERT classifiers sharing weights: one per chunk pooling."""
  backbone = backbone_lib.load_backbone(tiny_bert_dir)
  model_config = config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean")
  built = {
      pooling: encoder_task.build_classifier(
          backbone, 3, model_config, seed=0, chunk_pooling=pooling
      )
      for pooling in ("mean", "max")
  }
  built["max"].head.set_weights(built["mean"].head.get_weights())
  return built


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooled_logits_are_the_mean_or_max_of_each_window_s_logits(
    models, pooling
):
  model = models[pooling]
  encoder = _encoder(chunks=True, overlap=2, max_chunks=4)
  texts = [KNOWN_TEXT, "good fun", " ".join(WORDS[:12])]
  pooled = model(encoder.encode(tf.constant(texts))).numpy()
  windows, _ = encoder.encode_windows(tf.constant(texts))
  assert [len(w) for w in windows.to_list()] == [3, 1, 2]
  for document, document_windows in enumerate(windows.to_list()):
    # Each window alone, as one unpadded example.
    window_logits = np.concatenate(
        [
            model(
                {
                    "input_ids": tf.constant([ids]),
                    "attention_mask": tf.ones([1, len(ids)], tf.int32),
                    "token_type_ids": tf.zeros([1, len(ids)], tf.int32),
                }
            ).numpy()
            for ids in document_windows
        ]
    )
    reduce = np.mean if pooling == "mean" else np.max
    np.testing.assert_allclose(
        pooled[document], reduce(window_logits, axis=0), atol=1e-5
    )
    # The windows of a document disagree, so the pooling is what decides.
    if len(document_windows) > 1:
      assert not np.allclose(window_logits[0], window_logits[-1], atol=1e-4)


def test_a_text_that_fits_one_window_gets_exactly_the_truncate_result(models):
  texts = tf.constant(["good fun", "", "the plot was dull", "a b c d e f g h"])
  truncated = _encoder().encode(texts)
  chunked = _encoder(chunks=True, overlap=2).encode(texts)
  assert chunked[CHUNK_MASK].numpy().tolist() == [[1]] * 4
  for model in models.values():
    np.testing.assert_array_equal(
        model(chunked).numpy(), model(truncated).numpy()
    )


# Statistics in the log.


def _examples(texts, label="positive"):
  return readers.Examples(
      "memory.csv",
      list(texts),
      None,
      [label] * len(texts),
      list(range(len(texts))),
      [{} for _ in texts],
  )


def test_encoding_counts_truncated_texts_lost_tokens_and_windows(
    caplog,
):
  # 20, 2, 0 and 12 tokens; 8 fit one input of 10.
  texts = [KNOWN_TEXT, "good fun", "", " ".join(WORDS[:12])]
  with caplog.at_level("INFO"):
    encoded = pipeline.encode_examples(
        _examples(texts), _encoder(truncation="head_tail")
    )
  stats = encoded.truncation_stats
  assert (stats.num_truncated, stats.tokens, stats.tokens_lost) == (2, 34, 16)
  assert encoded.num_truncated == 2
  assert "2 of 4 examples (50.0%)" in caplog.text
  assert "losing 16 of 34 tokens (47.1%)" in caplog.text
  assert "--truncation=head_tail" in caplog.text

  chunked = pipeline.encode_examples(
      _examples(texts), _encoder(chunks=True, overlap=3, max_chunks=3)
  )
  stats = chunked.truncation_stats
  # Windows every 5 tokens: 20 tokens take 4 (3 read, 2 tokens lost), 12
  # take 2; three windows hold 18 tokens.
  assert (stats.windows_mean, stats.windows_max) == (7 / 4, 3)
  assert (stats.num_truncated, stats.tokens_lost) == (1, 2)
  assert chunked.input_ids.row_lengths().numpy().tolist() == [3, 1, 1, 2]
  # Packed tokens of all windows: 3 x 10; 4; 2; 10 + (7 + 2).
  assert chunked.lengths.tolist() == [30, 4, 2, 19]


# Training, evaluation and the export read long texts alike.


def _late_opinion_rows(count, *, seed, length=30, first_window=14):
  """Sentiment told by one opinion word that comes after the first window
  of 14 tokens (--max_seq_length=16), among neutral words."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    positive = rng.random() < 0.5
    words = [rng.choice(NEUTRAL_WORDS) for _ in range(length)]
    opinion = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    words[rng.randrange(first_window, length)] = opinion
    rows.append(
        {
            "text": " ".join(words),
            "label": "positive" if positive else "negative",
        }
    )
  return rows


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
  directory = tmp_path_factory.mktemp("long_documents")
  return {
      split: write_rows(
          str(directory / f"{split}.csv"),
          _late_opinion_rows(count, seed=seed),
      )
      for split, count, seed in (("train", 64, 1), ("validation", 16, 2))
  }


CHUNK_FLAGS = [
    "--long_document=chunks",
    "--chunk_stride=2",
    "--max_chunks=2",
    "--truncation=head_tail",
    "--chunk_pooling=max",
]


@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory, tiny_bert_dir, long_files):
  """A run trained and exported by the train binary, reading windows."""
  from tf_finetune import train

  model_dir = str(tmp_path_factory.mktemp("chunked") / "model")
  flags = [
      flag
      for flag in TINY_TRAIN_FLAGS
      if not flag.startswith(("--max_seq_length", "--epochs"))
  ]
  code = run_binary(
      train,
      [
          f"--model={tiny_bert_dir}",
          f"--model_dir={model_dir}",
          f"--train_file={long_files['train']}",
          f"--validation_file={long_files['validation']}",
          "--max_seq_length=16",
          "--epochs=1",
      ]
      + flags
      + CHUNK_FLAGS,
  )
  assert code == 0
  return model_dir


@pytest.fixture(scope="module")
def tail_export(tmp_path_factory, tiny_bert_dir):
  """A SavedModel of a (random-headed) classifier truncating to the tail,
  and its model and encoder."""
  tokenizer = backbone_lib.load_tokenizer(tiny_bert_dir)
  encoder = TextEncoder.from_hf_tokenizer(
      tokenizer, 16, long_documents=LongDocuments(truncation="tail")
  )
  model = encoder_task.build_classifier(
      backbone_lib.load_backbone(tiny_bert_dir),
      2,
      config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean"),
      seed=0,
  )
  server = ClassifierServer(
      model, encoder, task_name="classification", label_vocab=["a", "b"]
  )
  texts = _long_texts(16, seed=7)
  export_dir = serving.export_server(
      server,
      export_base=str(tmp_path_factory.mktemp("tail") / "export"),
      sample_inputs={"text": texts},
      checked_output="probabilities",
  )
  return export_dir, model, encoder


def test_the_run_saves_its_long_document_settings(chunked_run):
  with open(os.path.join(chunked_run, "config.json"), encoding="utf-8") as f:
    task = json.load(f)["task"]
  assert {
      key: task[key]
      for key in (
          "long_document",
          "chunk_stride",
          "max_chunks",
          "truncation",
          "chunk_pooling",
          "head_share",
      )
  } == {
      "long_document": "chunks",
      "chunk_stride": 2,
      "max_chunks": 2,
      "truncation": "head_tail",
      "chunk_pooling": "max",
      "head_share": 0.25,
  }


def test_saved_models_in_a_fresh_process_answer_as_the_python_path(
    chunked_run, tail_export
):
  # Up to 55 words: past --max_chunks=2 windows (14 + 12 = 26 tokens).
  texts = _long_texts(12, seed=11)
  chunked_dir = serving.latest_version_dir(os.path.join(chunked_run, "export"))
  tail_dir, tail_model, tail_encoder = tail_export
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
found = {{}}
for name, path in (("chunks", {chunked_dir!r}), ("tail", {tail_dir!r})):
  model = tf.saved_model.load(path)
  outputs = model.signatures["serving_default"](text=tf.constant({texts!r}))
  found[name] = outputs["probabilities"].numpy().tolist()
print(json.dumps(found))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])

  # Evaluation's path: the tf.data pipeline, batches sorted by length.
  trained = artifacts.load_trained(chunked_run)
  encoded = trained.task.encode(_examples(texts), trained.encoder)
  assert encoded.chunked and encoded.num_truncated > 0
  in_python = trained.task.predict(trained.model, encoded, batch_size=5)
  np.testing.assert_allclose(served["chunks"], in_python, atol=1e-5)

  encoded = pipeline.encode_examples(_examples(texts), tail_encoder)
  assert encoded.num_truncated > 0
  dataset, order = pipeline.inference_dataset(
      encoded, batch_size=5, with_labels=False
  )
  logits = tail_model.predict(dataset, verbose=0)
  in_python = np.empty_like(logits)
  in_python[order] = tf.nn.softmax(logits).numpy()
  np.testing.assert_allclose(served["tail"], in_python, atol=1e-5)
