r"""Streaming at 100k, 1M and 10M rows: memory, input rate against training.

  python benchmarks/streaming_scale.py --write --root=/work/exp/streaming
  nice -n 19 python benchmarks/streaming_scale.py --root=/work/exp/streaming

`--write` makes the corpora once: Rotten Tomatoes snippets
(assets/rotten_tomatoes/train.csv), resampled with their labels, to 100k,
1M and 10M rows, each in 16 CSV shards (`ROOT/rows-N/train-KK-of-16.csv`).

Then, each in a fresh process:
* pipeline: one full pass of the streamed training input
  (`training.prepare` with --streaming, then `training.training_dataset`:
  reading, parsing, tokenization in the graph with the MiniLM tokenizer,
  bucketing, --shuffle_buffer, batching at 32, max_seq_length 128): the
  examples per second and the process's peak resident memory;
* training: real MiniLM training steps (the run's model and optimizer) on
  batches of 32 x 128 tokens, the examples per second over `--train_steps`
  steps after 3 warm-up steps;
* first step: seconds from the start of `training.prepare` to the end of
  the first training step at 10M rows, with the counting pass, without it
  (--labels and --steps_per_epoch), and with a warm --cache_dir (at
  `--cache_rows`; the cache is written by one pass first, not timed).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SNIPPETS = os.path.join(_REPO, "assets", "rotten_tomatoes", "train.csv")
_MODEL = os.path.join(_REPO, "assets", "minilm")
_SHARDS = 16
_BATCH = 32
_SEQ = 128


def corpus_dir(root: str, rows: int) -> str:
  return os.path.join(root, f"rows-{rows}")


def write_corpus(root: str, rows: int) -> str:
  """`rows` resampled snippets in `_SHARDS` CSV shards; kept if present."""
  directory = corpus_dir(root, rows)
  if os.path.exists(os.path.join(directory, "DONE")):
    return directory
  os.makedirs(directory, exist_ok=True)
  with open(_SNIPPETS, newline="", encoding="utf-8") as f:
    snippets = [(row["text"], row["label"]) for row in csv.DictReader(f)]
  rng = random.Random(rows)
  files = [
      open(
          os.path.join(directory, f"train-{i:02d}-of-{_SHARDS}.csv"),
          "w",
          newline="",
          encoding="utf-8",
      )
      for i in range(_SHARDS)
  ]
  writers = [csv.writer(f) for f in files]
  for writer in writers:
    writer.writerow(["text", "label"])
  for i in range(rows):
    writers[i % _SHARDS].writerow(rng.choice(snippets))
  for f in files:
    f.close()
  open(os.path.join(directory, "DONE"), "w").close()
  return directory


def _config(
    directory: str, model_dir: str, *, counted: bool, rows: int, cache_dir=None
):
  from tf_finetune.config import DataConfig, ModelConfig, RunConfig, TrainConfig

  given = (
      {}
      if counted
      else {
          "labels": "fresh,rotten",
          "steps_per_epoch": math.ceil(rows / _BATCH),
      }
  )
  return RunConfig(
      model_dir=model_dir,
      data=DataConfig(
          train_file=os.path.join(directory, "train-*.csv"),
          streaming=True,
          max_seq_length=_SEQ,
          batch_size=_BATCH,
          cache_dir=cache_dir,
          **given,
      ),
      model=ModelConfig(model=_MODEL),
      train=TrainConfig(epochs=1, export=False, seed=0),
  )


def _peak_rss_mb() -> float:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def measure_pipeline(directory: str, rows: int, cache_dir=None) -> dict:
  """One full streamed pass of the training input, no model."""
  from tf_finetune import training

  with tempfile.TemporaryDirectory() as model_dir:
    config = _config(
        directory, model_dir, counted=False, rows=rows, cache_dir=cache_dir
    )
    prepared = training.prepare(config)
    plan = training.plan_batches(
        prepared.config, rows, training.get_strategy(config.train.distribution)
    )
    dataset = training.training_dataset(prepared.config, prepared, plan)
    rss_before = _peak_rss_mb()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    examples = 0
    for _, label_ids in dataset:
      examples += int(label_ids.shape[0])
    seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_before
  return {
      "rows": rows,
      "examples": examples,
      "seconds": round(seconds, 1),
      "examples_per_second": round(examples / seconds),
      # The machine is shared: examples per second of CPU time as well.
      "cpu_seconds": round(cpu_seconds, 1),
      "examples_per_cpu_second": round(examples / cpu_seconds),
      "peak_rss_mb_before_pass": rss_before,
      "peak_rss_mb": _peak_rss_mb(),
  }


def _timing_callback(ends: list, cpu_at_ends: list, stop_after: int):
  import tf_keras

  class Timing(tf_keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      ends.append(time.perf_counter())
      cpu_at_ends.append(_cpu_seconds())
      if len(ends) >= stop_after:
        self.model.stop_training = True

  return Timing()


def measure_training(
    directory: str,
    rows: int,
    *,
    counted: bool,
    steps: int,
    cache_dir=None,
    fixed_length=False,
) -> dict:
  """Real training steps; the seconds to the first one from `prepare`."""
  import tensorflow as tf
  from tf_finetune import training

  with tempfile.TemporaryDirectory() as model_dir:
    start = time.perf_counter()
    config = _config(
        directory, model_dir, counted=counted, rows=rows, cache_dir=cache_dir
    )
    strategy = training.get_strategy(config.train.distribution)
    prepared = training.prepare(config)
    config = prepared.config
    plan = training.plan_batches(
        config, len(prepared.encoded["train"]) or rows, strategy
    )
    dataset = training.training_dataset(config, prepared, plan)
    if fixed_length:
      # Every batch padded to max_seq_length: 32 x 128 tokens per step.
      features, labels = next(iter(dataset))
      features = {
          name: tf.pad(value, [[0, 0], [0, _SEQ - value.shape[1]]])
          for name, value in features.items()
      }
      dataset = tf.data.Dataset.from_tensors((features, labels)).repeat()
    ends, cpu_at_ends = [], []
    with strategy.scope():
      model = training.build_model(config, prepared, plan)
      model.fit(
          dataset,
          epochs=1,
          steps_per_epoch=plan.steps_per_epoch,
          callbacks=[_timing_callback(ends, cpu_at_ends, steps + 3)],
          verbose=0,
      )
  timed = ends[3:]
  return {
      "rows": rows,
      "counted": counted,
      "cache_dir": bool(cache_dir),
      "first_step_seconds": round(ends[0] - start, 1),
      "steps": len(timed) - 1,
      "examples_per_second": round(
          _BATCH * (len(timed) - 1) / (timed[-1] - timed[0]), 1
      )
      if len(timed) > 1
      else None,
      "examples_per_cpu_second": round(
          _BATCH * (len(timed) - 1) / (cpu_at_ends[-1] - cpu_at_ends[3]), 1
      )
      if len(timed) > 1
      else None,
  }


def _child(args: list) -> dict:
  began = time.perf_counter()
  result = subprocess.run(
      [sys.executable, __file__, "--child", json.dumps(args)],
      capture_output=True,
      text=True,
  )
  if result.returncode:
    sys.stderr.write(result.stderr[-4000:])
    raise SystemExit(f"child {args} failed")
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  measured["process_seconds"] = round(time.perf_counter() - began, 1)
  print(json.dumps(measured), flush=True)
  return measured


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="/tmp/streaming_scale")
  parser.add_argument("--rows", default="100000,1000000,10000000")
  parser.add_argument(
      "--write", action="store_true", help="Write the corpora and stop."
  )
  parser.add_argument("--train_steps", type=int, default=30)
  parser.add_argument("--cache_rows", type=int, default=1_000_000)
  parser.add_argument("--first_step_rows", type=int, default=10_000_000)
  parser.add_argument("--only", default="pipeline,training,first_step")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child is not None:
    kind, *rest = json.loads(args.child)
    if kind == "pipeline":
      print(json.dumps(measure_pipeline(*rest)))
    else:
      directory, rows, options = rest
      print(json.dumps(measure_training(directory, rows, **options)))
    return
  sizes = [int(r) for r in args.rows.split(",")]
  if args.write:
    for rows in sizes:
      began = time.perf_counter()
      write_corpus(args.root, rows)
      print(
          f"{rows} rows written in {time.perf_counter() - began:.0f} s",
          flush=True,
      )
    return
  only = args.only.split(",")
  # The largest pass last: the cheaper measurements come first.
  if "pipeline" in only:
    for rows in sizes[:-1]:
      _child(["pipeline", corpus_dir(args.root, rows), rows])
  if "training" in only:
    _child(
        [
            "training",
            corpus_dir(args.root, sizes[0]),
            sizes[0],
            {"counted": False, "steps": args.train_steps, "fixed_length": True},
        ]
    )
  if "first_step" in only:
    first = corpus_dir(args.root, args.first_step_rows)
    for counted in (True, False):
      _child(
          [
              "training",
              first,
              args.first_step_rows,
              {"counted": counted, "steps": 1},
          ]
      )
    cache_dir = os.path.join(args.root, "cache")
    shutil.rmtree(cache_dir, ignore_errors=True)
    cached = corpus_dir(args.root, args.cache_rows)
    _child(["pipeline", cached, args.cache_rows, cache_dir])  # Writes it.
    _child(
        [
            "training",
            cached,
            args.cache_rows,
            {"counted": False, "steps": 1, "cache_dir": cache_dir},
        ]
    )
  if "pipeline" in only:
    _child(["pipeline", corpus_dir(args.root, sizes[-1]), sizes[-1]])


if __name__ == "__main__":
  main()
