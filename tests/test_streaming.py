"""Shards, gzip, TFRecord and the streaming path (data/shards.py,
data/streaming.py, tasks/streamed_text.py)."""

import collections
import dataclasses
import gzip
import json
import os
import re
import signal
import sys

import numpy as np
import pytest
from conftest import (
    final_weights,
    kill_when_logged,
    make_sentiment_rows,
    make_vocab,
    run_binary,
    run_python,
    write_rows,
)

from tf_finetune import config as config_lib
from tf_finetune.data import shards, streaming
from tf_finetune.text.tokenization import TextEncoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = shards.Columns("text", None, "label")


def _gzip(path):
  with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as out:
    out.write(f.read())
  os.remove(path)
  return path + ".gz"


def _split_rows(rows, directory, count, pattern="part-{}.csv"):
  """Writes rows round-robin to `count` shards; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  return [
      write_rows(os.path.join(directory, pattern.format(i)), rows[i::count])
      for i in range(count)
  ]


def _encoder():
  return TextEncoder.wordpiece(
      vocab=make_vocab(), lower_case=True, max_seq_length=16
  )


def test_globs_lists_and_gzip_concatenate_in_sorted_order(tmp_path):
  rows = make_sentiment_rows(9, seed=5)
  write_rows(str(tmp_path / "a.csv"), rows[:3])
  _gzip(write_rows(str(tmp_path / "b.tsv"), rows[3:6]))
  write_rows(str(tmp_path / "c.jsonl"), rows[6:])
  spec = f"{tmp_path}/c.jsonl, {tmp_path}/[ab].*"
  examples = shards.read_examples(
      spec,
      text_column="text",
      text_pair_column=None,
      label_column="label",
      flag="--train_file",
  )
  assert examples.texts == [row["text"] for row in rows]
  assert examples.labels == [row["label"] for row in rows]
  # Messages name the shard and its own line.
  assert examples.where(4) == f"{tmp_path}/b.tsv.gz:3"
  with pytest.raises(
      ValueError, match=r"^--train_file='.*/nothing-\*' matches no file\.$"
  ):
    shards.expand(f"{tmp_path}/nothing-*", "--train_file")


def test_tfrecord_converter_keeps_multi_line_csv_text(tmp_path):
  rows = make_sentiment_rows(10, seed=6)
  rows[3]["text"] = 'a quoted "multi-line"\nfilm, with a comma'
  source = write_rows(str(tmp_path / "train.csv"), rows)
  result = run_python(
      [
          os.path.join(REPO, "scripts", "write_tfrecords.py"),
          f"--input={source}",
          f"--output_prefix={tmp_path}/tf/train",
          "--num_shards=3",
          "--gzip",
      ]
  )
  assert result.returncode == 0, result.stderr
  paths = shards.expand(f"{tmp_path}/tf/train-*", "--train_file")
  assert [os.path.basename(p) for p in paths] == [
      f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)
  ]
  examples = shards.read_examples(
      f"{tmp_path}/tf/train-*",
      text_column="text",
      text_pair_column=None,
      label_column="label",
      flag="--train_file",
  )
  # Round-robin shards: shard 0 holds rows 0, 3, 6, 9.
  expected = [rows[i] for shard in range(3) for i in range(shard, 10, 3)]
  assert examples.texts == [row["text"] for row in expected]
  assert examples.labels == [row["label"] for row in expected]
  assert examples.where(1) == f"{paths[0]}:2"  # The record number.


def test_bad_record_names_flag_shard_and_line_or_is_skipped(tmp_path):
  good = write_rows(str(tmp_path / "a.jsonl"), make_sentiment_rows(4, seed=1))
  bad = tmp_path / "b.csv"
  bad.write_text('text,label\n"fine, really",positive\nno,quote,here\n')
  with pytest.raises(ValueError) as raised:
    streaming.scan(
        [good, str(bad)],
        flag="--train_file",
        columns=COLUMNS,
        skip_bad_records=False,
    )
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(f"--train_file: {bad}:3: expected 2 fields")
  found = streaming.scan(
      [good, str(bad)],
      flag="--train_file",
      columns=COLUMNS,
      skip_bad_records=True,
  )
  assert (found.num_examples, found.skipped) == (5, 1)
  with pytest.raises(ValueError, match=r"--label_column='stars' is not a "):
    streaming.scan(
        [str(bad)],
        flag="--train_file",
        columns=shards.Columns("text", None, "stars"),
        skip_bad_records=True,
    )


def _split(paths, num_examples, *, label_vocab=("negative", "positive")):
  return streaming.StreamedSplit(
      shards=tuple(paths),
      flag="--train_file",
      columns=COLUMNS,
      encoder=_encoder(),
      label_vocab=label_vocab,
      num_examples=num_examples,
  )


def _batches(dataset):
  """Each batch as a list of examples: (input ids without padding, label)."""
  out = []
  for features, label_ids in dataset:
    ids = features["input_ids"].numpy()
    mask = features["attention_mask"].numpy()
    out.append(
        [
            (tuple(row[m == 1]), int(label))
            for row, m, label in zip(ids, mask, label_ids.numpy())
        ]
    )
  return out


def _training_batches(split, *, seed, steps, **kwargs):
  dataset = streaming.training_dataset(
      split,
      batch_size=8,
      steps_per_epoch=steps,
      bucketing=True,
      seed=seed,
      shuffle_buffer=16,
      **kwargs,
  )
  return _batches(dataset)


def test_an_epoch_streams_every_example_once(tmp_path):
  rows = make_sentiment_rows(45, seed=7)
  paths = _split_rows(rows, str(tmp_path), 4)
  split = _split(paths, len(rows))
  encoder = _encoder()
  expected = collections.Counter(
      (tuple(ids), int(row["label"] == "positive"))
      for ids, row in zip(
          encoder.encode_ragged(
              __import__("tensorflow").constant([r["text"] for r in rows])
          )[0].to_list(),
          rows,
      )
  )
  epoch = _training_batches(split, seed=3, steps=6)  # ceil(45 / 8) = 6.
  # One pass, as in memory: five full batches and a partial one.
  assert sorted(len(batch) for batch in epoch) == [5] + [8] * 5
  seen = collections.Counter(example for batch in epoch for example in batch)
  assert seen == expected
  # Seven steps: the epoch goes on into the next pass.
  assert len(_training_batches(split, seed=3, steps=7)) == 7
  # Reproducible for a seed; another seed, another order.
  assert _training_batches(split, seed=3, steps=6) == epoch
  assert _training_batches(split, seed=4, steps=6) != epoch


def test_each_worker_reads_its_own_shards(tmp_path):
  rows = make_sentiment_rows(40, seed=8)
  paths = _split_rows(rows, str(tmp_path), 5)
  assert streaming.worker_shards(paths, 2, 1) == ([paths[1], paths[3]], "file")
  assert streaming.worker_shards(paths[:1], 2, 1) == (paths[:1], "data")
  encoder = _encoder()
  texts_of = {
      tuple(
          encoder.encode_ragged(
              __import__("tensorflow").constant([row["text"]])
          )[0].to_list()[0]
      ): shard
      for shard in range(5)
      for row in rows[shard::5]
  }
  split = _split(paths, len(rows))
  batches = _training_batches(
      split, seed=1, steps=4, num_workers=2, worker_index=1
  )
  read = {texts_of[ids] for batch in batches for ids, _ in batch}
  assert read == {1, 3}


def test_streaming_is_refused_for_tasks_that_read_in_memory(tmp_path):
  data = config_lib.DataConfig(train_file="train.csv", streaming=True)
  with pytest.raises(ValueError, match=r"^--streaming reads data for"):
    config_lib.RunConfig(
        model_dir=str(tmp_path),
        data=data,
        model=config_lib.ModelConfig(model="bert"),
        task=config_lib.task_config("regression"),
    )
  with pytest.raises(ValueError, match=r"^--long_document=chunks reads its"):
    config_lib.RunConfig(
        model_dir=str(tmp_path),
        data=data,
        model=config_lib.ModelConfig(model="bert"),
        task=config_lib.task_config("classification", long_document="chunks"),
    )
  with pytest.raises(ValueError, match="--labels='a' must name at least two"):
    config_lib.DataConfig(train_file="train.csv", labels="a")


def test_input_past_the_threshold_streams(tmp_path):
  path = write_rows(str(tmp_path / "t.csv"), make_sentiment_rows(50, seed=1))
  size_mb = os.path.getsize(path) / 2**20
  below = config_lib.DataConfig(
      train_file=path, streaming_threshold_mb=size_mb * 1.01
  )
  above = config_lib.DataConfig(
      train_file=path, streaming_threshold_mb=size_mb * 0.99
  )
  assert not streaming.use_streaming(below, supported=True)
  assert streaming.use_streaming(above, supported=True)
  assert not streaming.use_streaming(above, supported=False)


def test_streaming_trains_like_in_memory(
    tmp_path, tiny_bert_dir, sentiment_files, capsys
):
  """Same label vocabulary, examples and steps exactly; evaluation of the
  same weights equal to 1e-5 both ways; metrics after training close (the
  batches come in another order)."""
  import dataclasses

  import numpy as np
  import tensorflow as tf
  from tf_finetune import artifacts, evaluation, predict, training
  from tf_finetune.data import readers
  from tf_finetune.tasks import text

  shard_dir = tmp_path / "shards"
  split_files = {}
  for split, path in sentiment_files.items():
    rows = readers.read_file(
        path, text_column="text", text_pair_column=None, label_column="label"
    ).rows
    paths = _split_rows(rows, str(shard_dir), 3, split + "-{}.csv")
    _gzip(paths[1])
    split_files[split] = f"{shard_dir}/{split}-*"
  # Bad records, skipped by the streamed run (absent from the in-memory
  # one): a row of three fields, a label that training never saw.
  with open(shard_dir / "train-2.csv", "a", encoding="utf-8") as f:
    f.write("one,field,too many\n")
  with open(shard_dir / "validation-0.csv", "a", encoding="utf-8") as f:
    f.write("the film,neutral\n")

  def run(name, files, **data):
    tf.keras.utils.set_random_seed(0)
    config = config_lib.RunConfig(
        model_dir=str(tmp_path / name),
        data=config_lib.DataConfig(
            train_file=files["train"],
            validation_file=files["validation"],
            test_file=files["test"],
            max_seq_length=32,
            batch_size=16,
            **data,
        ),
        model=config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean"),
        train=config_lib.TrainConfig(
            epochs=3,
            learning_rate=3e-3,
            warmup_ratio=0.1,
            early_stopping_patience=0,
            export=False,
            precision="fp32",
        ),
    )
    return config, training.train(config)

  memory_config, memory = run("memory", sentiment_files)
  cache_dir = tmp_path / "cache"
  streamed_config, streamed = run(
      "streamed",
      split_files,
      streaming=True,
      skip_bad_records=True,
      cache_dir=str(cache_dir),
  )
  # Tokenized once into the cache: training, validation, test predictions.
  cached = sorted(
      name.split("-")[0] + "-" + name.split("-")[2].split(".")[0]
      for name in os.listdir(cache_dir)
      if name.endswith(".index")
  )
  assert cached == ["test-labelled", "train-worker0", "validation-labelled"]
  with open(tmp_path / "streamed" / "summary.json") as f:
    assert json.load(f)["skipped_records"] == {
        "train": 1,
        "validation": 1,
        "test": 0,
    }
  for name in ("label_vocab.txt",):
    with open(tmp_path / "memory" / name) as a:
      with open(tmp_path / "streamed" / name) as b:
        assert a.read() == b.read()
  assert streamed.steps_per_epoch == memory.steps_per_epoch == 12  # 192 / 16
  assert streamed.global_steps == memory.global_steps
  for split in ("validation", "test"):
    got, want = streamed.eval_results[split], memory.eval_results[split]
    assert got["num_examples"] == want["num_examples"] == 64
    # Both learn (chance is 0.5). Their batches come in other orders, so a
    # tiny model's accuracies after 3 epochs differ by up to 8 of 64
    # examples from run to run; the readers themselves are compared
    # exactly below, on the same weights.
    assert got["accuracy"] >= 0.75 and want["accuracy"] >= 0.75

  # The streamed run's weights, evaluated through both readers (the
  # streamed one from the cache of the run).
  trained = artifacts.load_trained(str(tmp_path / "streamed"))
  task = trained.task
  examples = text.read_text_split(streamed_config.data, "test")
  in_memory = task.predict(
      trained.model, task.encode(examples, trained.encoder), batch_size=8
  )
  prepared = task.prepare(streamed_config)
  from_shards = task.predict(
      trained.model, prepared.encoded["test"], batch_size=8
  )
  np.testing.assert_allclose(from_shards, in_memory, atol=1e-5)
  # The evaluate binary's library call streams as the run did: a bad record
  # added since is skipped (--skip_bad_records), not refused.
  with open(shard_dir / "test-0.csv", "a", encoding="utf-8") as f:
    f.write("one,field,too many\n")
  evaluated = evaluation.evaluate_model_dir(
      str(tmp_path / "streamed"), eval_file=split_files["test"]
  )
  assert evaluated["num_examples"] == 64
  assert evaluated["accuracy"] == pytest.approx(
      streamed.eval_results["test"]["accuracy"], abs=1e-6
  )
  # predict --streaming: the validation shards, row by row, in input order.
  output = str(tmp_path / "predictions.jsonl")
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={tmp_path / 'streamed'}",
              f"--input_file={split_files['validation']}",
              f"--output_file={output}",
              "--streaming",
              "--batch_size=10",
          ],
      )
      == 0
  )
  with open(output, encoding="utf-8") as f:
    written = [json.loads(line) for line in f]
  validation = text.read_text_split(streamed_config.data, "validation")
  assert len(validation) == 65  # The "neutral" row too: no labels needed.
  assert [row["text"] for row in written] == validation.texts
  assert [row["label"] for row in written] == validation.labels
  probabilities = np.array(
      [
          [row["probabilities"][label] for label in ("negative", "positive")]
          for row in written
      ]
  )
  np.testing.assert_allclose(
      probabilities,
      task.predict(
          trained.model,
          task.encode(
              dataclasses.replace(validation, labels=None), trained.encoder
          ),
          batch_size=8,
      ),
      atol=1e-5,
  )
  # A bad record stops it in one line; the output is untouched.
  os.remove(output)
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={tmp_path / 'streamed'}",
              f"--input_file={split_files['test']}",
              f"--output_file={output}",
              "--streaming",
          ],
      )
      != 0
  )
  assert not os.path.exists(output)
  assert (
      f"--input_file: {shard_dir}/test-0.csv:24: expected 2 fields"
      in capsys.readouterr().err
  )
  metrics = task.metrics(examples, prepared.encoded["test"], from_shards)
  expected = streamed.eval_results["test"]
  assert metrics["confusion_matrix"] == expected["confusion_matrix"]
  for name in ("num_examples", "accuracy", "macro_f1", "loss"):
    assert metrics[name] == pytest.approx(expected[name], abs=1e-5)


def test_given_labels_and_steps_skip_the_counting_pass(tmp_path, tiny_bert_dir):
  import tensorflow as tf
  from tf_finetune import tasks, training

  rows = make_sentiment_rows(300, seed=9)
  train = write_rows(str(tmp_path / "train.csv"), rows)
  with open(train, "a", encoding="utf-8") as f:
    f.write("a,row,too long\n")  # Line 302, past the first 256 examples.

  def prepare(**data):
    config = config_lib.RunConfig(
        model_dir=str(tmp_path / "run"),
        data=config_lib.DataConfig(
            train_file=train, streaming=True, max_seq_length=32, **data
        ),
        model=config_lib.ModelConfig(model=tiny_bert_dir, pooling="mean"),
    )
    task = tasks.get_task(config.task)
    return config, task.prepare(config)

  with pytest.raises(ValueError, match=rf"^--train_file: {train}:302: "):
    prepare(labels="negative,positive")
  with pytest.raises(ValueError, match=r"label 'positive' .* not one of"):
    prepare(labels="negative,neutral", steps_per_epoch=5)
  config, prepared = prepare(labels="positive,negative", steps_per_epoch=5)
  assert prepared.task.state.label_vocab == ("positive", "negative")
  assert prepared.encoded["train"].num_examples is None
  plan = training.plan_batches(config, 0, tf.distribute.get_strategy())
  assert (plan.steps_per_epoch, plan.total_steps) == (
      5,
      5 * config.train.epochs,
  )


def test_cached_tokens_are_reused_and_keyed_by_inputs_and_tokenizer(
    tmp_path, tiny_bert_dir
):
  import dataclasses
  import glob

  from tf_finetune.models import backbone
  from tf_finetune.tasks import streamed_text

  rows = make_sentiment_rows(45, seed=7)
  paths = _split_rows(rows, str(tmp_path / "data"), 4)

  def prefix(fingerprint="tokenizer"):
    return streaming.cache_prefix(
        str(tmp_path / "cache"),
        "train",
        paths,
        columns=COLUMNS,
        label_vocab=("negative", "positive"),
        skip_bad_records=False,
        tokenizer_fingerprint=fingerprint,
    )

  split = dataclasses.replace(_split(paths, len(rows)), cache_prefix=prefix())
  first = collections.Counter(
      example
      for batch in _training_batches(split, seed=3, steps=6)
      for example in batch
  )
  assert sum(first.values()) == 45
  assert glob.glob(split.cache_prefix + "-worker0*")
  for path in paths:  # From now on only the cache can give the examples.
    os.remove(path)
  again = collections.Counter(
      example
      for batch in _training_batches(split, seed=5, steps=6)
      for example in batch
  )
  assert again == first

  # Other inputs or another tokenizer: another cache.
  _split_rows(rows[:-1], str(tmp_path / "data"), 4)
  assert prefix() != split.cache_prefix
  assert prefix("other tokenizer") != prefix()
  tokenizer = backbone.load_tokenizer(tiny_bert_dir)
  fingerprints = {
      streamed_text.tokenizer_fingerprint(
          tokenizer, TextEncoder.from_hf_tokenizer(tokenizer, length)
      )
      for length in (16, 32)
  }
  assert len(fingerprints) == 2


def test_a_shard_that_is_not_utf8_names_its_line(tmp_path):
  path = str(tmp_path / "b.csv.gz")
  with gzip.open(path, "wb") as f:
    f.write(b'text,label\r\n"two\r\nlines",positive\r\nok,negative\n')
    f.write(b"caf\xe9,positive\n" + b"more,negative\n" * 40000)
  with pytest.raises(ValueError) as raised:
    streaming.scan(
        [path], flag="--train_file", columns=COLUMNS, skip_bad_records=True
    )
  assert str(raised.value) == (
      f"--train_file: {path}:5: the file is not valid UTF-8 (byte 0xe9); "
      "save it as UTF-8."
  )


def test_predictions_are_not_written_to_compressed_or_tfrecord_files(tmp_path):
  from tf_finetune.data import readers, writers

  examples = readers.Examples("in.csv", ["a"], None, None, [2], [{"text": "a"}])
  for name in ("out.csv.gz", "out.tfrecord"):
    with pytest.raises(ValueError, match=r"predictions are written as plain"):
      writers.write_prediction_rows(
          str(tmp_path / name), examples, [{"predicted_label": "x"}]
      )
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "kill_at, cached, resumed_at",
    [
        # Backed up after step 16: pass 2 (epoch 2), 4 batches into it.
        ("Step 17/36", False, "after 16 batch(es): from pass 2 over the "),
        # Backed up after step 6, in the first pass, which wrote the token
        # cache (192 rows: it was read to the end for the first window).
        ("Step 7/36", True, "after 6 batch(es): from pass 1 over the "),
    ],
)
def test_killed_streaming_run_resumes_where_its_backup_was_taken(
    tmp_path,
    tiny_bert_dir,
    sentiment_files,
    caplog,
    kill_at,
    cached,
    resumed_at,
):
  """SIGKILL a --streaming run mid-epoch, rerun the same command: it skips
  the batches it trained on and ends with the weights of an uninterrupted
  streaming run (the same batches in the same order). No dropout: its
  masks come from the process's random state."""

  from tf_finetune import train as train_binary
  from tf_finetune.data import readers

  rows = readers.read_file(
      sentiment_files["train"],
      text_column="text",
      text_pair_column=None,
      label_column="label",
  ).rows
  _split_rows(rows, str(tmp_path / "shards"), 4)

  def command(name):
    return [
        f"--model={tiny_bert_dir}",
        f"--train_file={tmp_path}/shards/part-*.csv",
        f"--validation_file={sentiment_files['validation']}",
        f"--model_dir={tmp_path / name}",
        "--streaming",
        "--shuffle_buffer=64",  # A third of the 192 rows.
        "--max_seq_length=32",
        "--batch_size=16",
        "--epochs=3",
        "--learning_rate=3e-3",
        "--pooling=mean",
        "--early_stopping_patience=0",
        "--log_every_steps=1",
        "--precision=fp32",
        "--save_every_steps=2",
        "--dropout=0",
        "--noexport",
        *([f"--cache_dir={tmp_path / name}-cache"] if cached else []),
    ]

  args = command("run")
  kill_when_logged([sys.executable, "-m", "tf_finetune.train", *args], kill_at)
  assert os.listdir(tmp_path / "run" / "backup")
  caplog.set_level("INFO")
  assert run_binary(train_binary, args) == 0
  assert resumed_at in caplog.text
  assert "Step 2/36" not in caplog.text and "Step 36/36" in caplog.text
  if cached:  # The rerun read the killed run's cache.
    assert re.search(
        r"--train_file: tokenized examples read from .*/run-cache/", caplog.text
    )

  assert run_binary(train_binary, command("uninterrupted")) == 0
  expected = final_weights(tmp_path / "uninterrupted")
  got = final_weights(tmp_path / "run")
  assert len(expected) > 20 and got.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)


def test_a_cache_left_unfinished_by_a_killed_run_is_written_again(tmp_path):
  """SIGKILLed while writing the token cache, a run leaves tf.data's lock,
  which would make every later run fail; the next run writes the cache."""
  rows = make_sentiment_rows(2000, seed=5)
  paths = _split_rows(rows, str(tmp_path / "data"), 4)
  prefix = str(tmp_path / "cache" / "train")
  script = f"""
import os, signal, sys
sys.path.insert(0, {os.path.join(REPO, "tests")!r})
import dataclasses
import test_streaming
split = dataclasses.replace(
    test_streaming._split({paths!r}, {len(rows)}), cache_prefix={prefix!r}
)
dataset = test_streaming.streaming.training_dataset(
    split, batch_size=8, steps_per_epoch=250, bucketing=True, seed=3,
    shuffle_buffer=16,
)
batches = iter(dataset)
next(batches)  # A window of 400 examples of 2000 read, the cache open.
os.kill(os.getpid(), signal.SIGKILL)
"""
  result = run_python(["-c", script], cwd=REPO)
  assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  assert "train-worker0_0.lockfile" in os.listdir(tmp_path / "cache")

  split = dataclasses.replace(_split(paths, len(rows)), cache_prefix=prefix)
  epoch = _training_batches(split, seed=3, steps=250)
  assert sum(len(batch) for batch in epoch) == 2000
  assert sorted(os.listdir(tmp_path / "cache")) == [
      "train-worker0.data-00000-of-00001",
      "train-worker0.index",
  ]
