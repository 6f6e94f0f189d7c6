"""Streaming input: shards read a record at a time through tf.data.

For data sets larger than memory (--streaming, or input files past
--streaming_threshold_mb). Nothing here holds a split's texts: a counting
pass (`scan`) reads the shards once, in Python, for the row count, the label
vocabulary and the first bad record; the datasets then read the shards again
on every pass.

Each shard is parsed by a Python generator (`shards.iter_examples`, the
csv/json modules with the in-memory readers' strict checks; quoted CSV
fields may hold line breaks, which `tf.io.decode_csv` cannot read), one
generator per shard handing blocks of `_ENCODE_BATCH` examples to tf.data,
which interleaves the shards a block at a time. Tokenization and packing
(optionally cached in files, --cache_dir), length bucketing (length-sorted
windows of `pipeline.WINDOW_BATCHES` batches), shuffling (a buffer of
--shuffle_buffer examples) and padding run in the graph. Memory holds the
shuffle buffer, one window and the prefetched batches, whatever the number
of rows.

The training batches are a function of the seed and the pass over the
shards alone (`training_dataset`), so a resumed run skips to where its
backup was taken instead of saving tf.data's iterator state (a Python
generator's state cannot be saved).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
import time
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune.data import pipeline, readers, shards

# Examples read from a shard and tokenized per call in the pipeline.
_ENCODE_BATCH = 256
# Shards read at once by the training pipeline.
_CYCLE_LENGTH = 8
# The graph-level seed of each pass's shuffles (any constant but 0).
_GRAPH_SEED = 1
# How often the counting pass logs its progress.
_PROGRESS_SECONDS = 30.0
# Examples kept by the counting pass for the tokenizer check and the export.
SAMPLE_SIZE = 256
# Bad records named in the log when they are skipped.
_LOGGED_BAD_RECORDS = 5


@dataclasses.dataclass(frozen=True)
class SampledExamples(readers.Examples):
  """The first examples of a streamed split, and how many it holds.

  `texts`/`text_pairs` hold at most `SAMPLE_SIZE` examples (for the
  tokenizer check and the export's samples); `len()` is the split's size.
  """

  num_examples: int = 0

  def __len__(self) -> int:
    return self.num_examples


@dataclasses.dataclass(frozen=True)
class Scan:
  """What one counting pass over a split's shards found.

  Attributes:
    num_examples: Examples read (bad records skipped are not counted).
    label_counts: Label string -> examples.
    skipped: Bad records skipped (--skip_bad_records).
    sample: The first examples.
    label_ids: int32 [num_examples] label ids, when a vocabulary was given
      and asked for (evaluation splits).
    shard_examples: Examples of each shard, in shard order; None when the
      pass stopped early (`max_examples`).
  """

  num_examples: int
  label_counts: dict[str, int]
  skipped: int
  sample: SampledExamples
  label_ids: Optional[np.ndarray] = None
  shard_examples: Optional[tuple[int, ...]] = None


def use_streaming(data, *, supported: bool) -> bool:
  """Whether the run streams: --streaming, or input past the threshold.

  Args:
    data: The data config.
    supported: Whether the task can stream.
  """
  if data.streaming:
    return True
  if not data.train_file or not data.streaming_threshold_mb:
    return False
  paths = []
  for split in ("train", "validation", "test"):
    spec = getattr(data, f"{split}_file")
    if spec:
      paths += shards.expand(spec, f"--{split}_file")
  size = shards.total_bytes(paths)
  if size <= data.streaming_threshold_mb * 2**20:
    return False
  if not supported:
    logging.info(
        "The input files hold %.1f MB, past --streaming_threshold_mb=%g, but "
        "this task reads its files in memory.",
        size / 2**20,
        data.streaming_threshold_mb,
    )
    return False
  logging.info(
      "The input files hold %.1f MB, past --streaming_threshold_mb=%g: "
      "streaming them (as --streaming).",
      size / 2**20,
      data.streaming_threshold_mb,
  )
  return True


class _Labeller:
  """Checks a split's examples and maps labels to ids, skipping or refusing
  bad records; shared by the counting pass and the datasets, so both skip
  the same records."""

  def __init__(
      self,
      flag: str,
      columns: shards.Columns,
      label_vocab: Optional[Sequence[str]],
      skip_bad_records: bool,
      *,
      log_skipped: bool = True,
  ):
    self.flag = flag
    self.log_skipped = log_skipped
    self.columns = columns
    self.label_vocab = label_vocab
    self.index = (
        {label: i for i, label in enumerate(label_vocab)}
        if label_vocab is not None
        else None
    )
    self.skip_bad_records = skip_bad_records
    self.skipped = 0

  def examples(self, path: str):
    """(line, text, pair, label, label id) of the usable examples.

    Raises:
      ValueError: for a bad record (unless skipped) or an unreadable shard,
        naming the flag, the shard and the line.
    """
    try:
      yield from self._examples(path)
    except ValueError as e:
      if str(e).startswith(f"{self.flag}: "):
        raise
      raise ValueError(f"{self.flag}: {e}") from e

  def _examples(self, path: str):
    for line, example in shards.iter_examples(path, self.flag, self.columns):
      if not isinstance(example, shards.BadRecord):
        text, pair, label = example
        label_id = -1
        if self.index is not None and label is not None:
          label_id = self.index.get(label, -1)
          if label_id < 0:
            example = shards.BadRecord(
                f"{path}:{line}: label {label!r} (from {self.flag}) is not "
                f"one of the labels: {', '.join(self.label_vocab)}."
            )
      if isinstance(example, shards.BadRecord):
        if not self.skip_bad_records:
          raise ValueError(
              f"{self.flag}: {example} (--skip_bad_records skips such "
              "records.)"
          )
        self.skipped += 1
        if self.log_skipped and self.skipped <= _LOGGED_BAD_RECORDS:
          logging.warning("%s: skipped: %s", self.flag, example)
        continue
      yield line, text, pair, label, label_id


def scan(
    paths: Sequence[str],
    *,
    flag: str,
    columns: shards.Columns,
    skip_bad_records: bool,
    label_vocab: Optional[Sequence[str]] = None,
    keep_label_ids: bool = False,
    max_examples: Optional[int] = None,
) -> Scan:
  """The counting pass: reads every shard once, holding only counts.

  Args:
    paths: The split's shards.
    flag: The split's flag, for messages.
    columns: The columns to read.
    skip_bad_records: Skip bad records (counted) instead of raising.
    label_vocab: The known labels: others are bad records.
    keep_label_ids: Keep every example's label id (4 bytes per example;
      evaluation splits, for the metrics).
    max_examples: Stop after this many examples (a sample only).

  Raises:
    ValueError: naming the flag, shard and line of the first bad record
      (without `skip_bad_records`).
  """
  labeller = _Labeller(flag, columns, label_vocab, skip_bad_records)
  counts = collections.Counter()
  label_ids = []
  texts, pairs, labels, lines, rows, shard_of = [], [], [], [], [], []
  num_examples = 0
  shard_examples = []
  stopped_early = False
  last_log = time.monotonic()
  for shard_number, path in enumerate(paths):
    shard_examples.append(0)
    for line, text, pair, label, label_id in labeller.examples(path):
      num_examples += 1
      shard_examples[-1] += 1
      if label is not None:
        counts[label] += 1
      if keep_label_ids:
        label_ids.append(label_id)
      if len(texts) < SAMPLE_SIZE:
        texts.append(text)
        pairs.append(pair)
        labels.append(label)
        lines.append(line)
        rows.append({columns.text: text})
        shard_of.append(path)
      if max_examples and num_examples >= max_examples:
        stopped_early = True
        break
      if time.monotonic() - last_log > _PROGRESS_SECONDS:
        last_log = time.monotonic()
        logging.info(
            "Counting %s: %d examples so far, in shard %d of %d (%s).",
            flag,
            num_examples,
            shard_number + 1,
            len(paths),
            path,
        )
    if max_examples and num_examples >= max_examples:
      break
  if not num_examples:
    raise ValueError(f"{flag}: the shards hold no examples.")
  logging.info(
      "%s: %d examples in %d shard(s)%s.",
      flag,
      num_examples,
      len(paths),
      f", {labeller.skipped} bad record(s) skipped" if labeller.skipped else "",
  )
  sample = SampledExamples(
      ",".join(paths) if len(paths) > 1 else paths[0],
      texts,
      pairs if columns.text_pair else None,
      labels if columns.label else None,
      lines,
      rows,
      shard_of=shard_of,
      num_examples=num_examples,
  )
  return Scan(
      num_examples=num_examples,
      label_counts=dict(counts),
      skipped=labeller.skipped,
      sample=sample,
      label_ids=np.array(label_ids, np.int32) if keep_label_ids else None,
      shard_examples=None if stopped_early else tuple(shard_examples),
  )


@dataclasses.dataclass(frozen=True)
class StreamedSplit:
  """A split read from its shards on every pass; stands where the
  in-memory path has `pipeline.EncodedExamples`.

  Attributes:
    shards: The split's shards, sorted.
    flag: The split's flag, for messages.
    columns: The columns read.
    encoder: The in-graph `TextEncoder`.
    label_vocab: Label names by id, or None for unlabelled reading.
    num_examples: Examples, from the counting pass; None without one.
    label_ids: int32 [num_examples] label ids (evaluation splits), or None.
    skip_bad_records: Skip bad records, as the counting pass did.
    skipped_records: Bad records the counting pass skipped.
    cache_prefix: Where the tokenized examples are cached (a path prefix of
      tf.data cache files; see `cache_prefix`), or None.
    shard_examples: Examples of each shard (as `shards`), from the counting
      pass; None without one.
  """

  shards: tuple[str, ...]
  flag: str
  columns: shards.Columns
  encoder: Any
  label_vocab: Optional[tuple[str, ...]]
  num_examples: Optional[int]
  label_ids: Optional[np.ndarray] = None
  skip_bad_records: bool = False
  skipped_records: int = 0
  cache_prefix: Optional[str] = None
  shard_examples: Optional[tuple[int, ...]] = None

  def __len__(self) -> int:
    return self.num_examples or 0

  @property
  def model_inputs(self) -> tuple[str, ...]:
    return self.encoder.model_inputs

  @property
  def pad_id(self) -> int:
    return self.encoder.pad_id


def cache_prefix(
    cache_dir: str,
    split_name: str,
    paths: Sequence[str],
    *,
    columns: shards.Columns,
    label_vocab: Sequence[str],
    skip_bad_records: bool,
    tokenizer_fingerprint: str,
) -> str:
  """The path prefix of a split's tokenized-example cache.

  Named by a SHA-256 of what the tokenized examples depend on: each shard's
  path, size and modification time, the columns, the label vocabulary,
  whether bad records are skipped, and the tokenizer (its own fingerprint,
  which must cover the vocabulary, packing and max_seq_length).
  """
  described = {
      "shards": [
          [os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns]
          for p in paths
      ],
      "columns": dataclasses.astuple(columns),
      "labels": list(label_vocab),
      "skip_bad_records": skip_bad_records,
      "tokenizer": tokenizer_fingerprint,
  }
  digest = hashlib.sha256(json.dumps(described).encode("utf-8")).hexdigest()
  return os.path.join(cache_dir, f"{split_name}-{digest[:16]}")


def _cached(split: StreamedSplit, dataset, reading: str):
  """`dataset` of tokenized examples, cached in files if the split says so.

  tf.data writes the cache while a pass reads to the end and reads it
  instead of `dataset` afterwards (an unfinished pass writes nothing).
  `reading` names what is read ("worker0": a worker's shards; "labelled",
  "unlabelled": every shard, in order).
  """
  if split.cache_prefix is None:
    return dataset
  prefix = f"{split.cache_prefix}-{reading}"
  os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
  # A run killed while writing the cache leaves tf.data's lock behind, and
  # tf.data would refuse to write it again; the prefix is this reading's
  # own, so the lock is stale (one run uses a --cache_dir at a time).
  for lock in glob.glob(glob.escape(prefix) + "_*.lockfile"):
    logging.info("%s: removing the stale cache lock %s.", split.flag, lock)
    os.remove(lock)
    # And the unfinished cache it guarded.
    for unfinished in glob.glob(
        glob.escape(lock[: -len(".lockfile")]) + ".*.tempstate*"
    ):
      os.remove(unfinished)
  logging.info(
      "%s: tokenized examples %s %s.",
      split.flag,
      "read from" if os.path.exists(prefix + ".index") else "cached in",
      prefix,
  )
  return dataset.cache(prefix)


def _generate(split: StreamedSplit, with_labels: bool, path: bytes):
  """Blocks of up to `_ENCODE_BATCH` examples of one shard, in file order.

  Blocks, not examples: tf.data hands each generator value over from
  Python (tens of microseconds apiece), which one example at a time would
  make the slowest stage of the pipeline.
  """
  labeller = _Labeller(
      split.flag,
      split.columns
      if with_labels
      else dataclasses.replace(split.columns, label=None),
      split.label_vocab if with_labels else None,
      split.skip_bad_records,
      # The counting pass named them; every pass skips them again.
      log_skipped=split.num_examples is None,
  )
  texts, pairs, label_ids = [], [], []
  for _, text, pair, _, label_id in labeller.examples(path.decode("utf-8")):
    texts.append(text)
    pairs.append(pair or "")
    label_ids.append(label_id)
    if len(texts) == _ENCODE_BATCH:
      yield _block(texts, pairs, label_ids)
      texts, pairs, label_ids = [], [], []
  if texts:
    yield _block(texts, pairs, label_ids)


def _block(texts, pairs, label_ids):
  return (
      np.array(texts, dtype=object),
      np.array(pairs, dtype=object),
      np.array(label_ids, dtype=np.int32),
  )


def _shard_examples(split: StreamedSplit, with_labels: bool, path):
  """Blocks (texts, pairs, label ids) of one shard, each a [block] vector;
  pairs "" and ids -1 when not read."""
  return tf.data.Dataset.from_generator(
      functools.partial(_generate, split, with_labels),
      args=(path,),
      output_signature=(
          tf.TensorSpec([None], tf.string),
          tf.TensorSpec([None], tf.string),
          tf.TensorSpec([None], tf.int32),
      ),
  )


def _encoded(split: StreamedSplit, dataset: tf.data.Dataset):
  """The examples of blocks (`_shard_examples`) tokenized and packed in the
  graph, a block at a time: (input_ids, type_ids, length, label id), the
  ids int32 [length]."""
  encoder = split.encoder
  pair = split.columns.text_pair is not None

  def encode(texts, pairs, label_ids):
    second = encoder.tokenize(pairs) if pair else None
    input_ids, type_ids = encoder.pack(encoder.tokenize(texts), second)
    lengths = tf.cast(input_ids.row_lengths(), tf.int32)
    return input_ids, type_ids, lengths, label_ids

  return (
      dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
      .unbatch()
      .map(lambda *example: example)
  )


def worker_shards(
    paths: Sequence[str], num_workers: int, worker_index: int
) -> tuple[list[str], str]:
  """The shards one worker reads, and how the input is sharded.

  With at least as many shards as workers, each worker reads every
  num_workers-th shard ("file": tf.data's AutoShardPolicy.FILE, applied to
  the shard list, since tf.data cannot shard a Python-generator source by
  itself); otherwise every worker reads every shard and keeps its share of
  each batch ("data": AutoShardPolicy.DATA).
  """
  if num_workers > 1 and len(paths) >= num_workers:
    return list(paths[worker_index::num_workers]), "file"
  return list(paths), "data"


def worker_position(strategy: tf.distribute.Strategy) -> tuple[int, int]:
  """(this worker's index, number of workers) in a multi-worker run."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return 0, 1
  jobs = resolver.cluster_spec().as_dict()
  chiefs = len(jobs.get("chief", []))
  workers = chiefs + len(jobs.get("worker", []))
  if resolver.task_type == "chief":
    return 0, workers
  return chiefs + int(resolver.task_id), workers


def _with_shard_policy(dataset: tf.data.Dataset, policy: str):
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF
      if policy == "file"  # Already sharded by shard list.
      else tf.data.experimental.AutoShardPolicy.DATA
  )
  return dataset.with_options(options)


def training_dataset(
    split: StreamedSplit,
    *,
    batch_size: int,
    steps_per_epoch: int,
    bucketing: bool,
    seed: int,
    shuffle_buffer: int,
    num_batches: Optional[int] = None,
    start_batch: int = 0,
    num_workers: int = 1,
    worker_index: int = 0,
) -> tf.data.Dataset:
  """Shuffled, bucketed batches of the streamed split, pass after pass.

  Pass p over the shards (every example once, the last batch partial) is
  shuffled with seeds of its own, made from `seed` and p as the in-memory
  path makes an epoch's: the shard order, the --shuffle_buffer shuffle and
  the bucketed batches' shuffle, each with reshuffle_each_iteration=False.
  The shards are read `_CYCLE_LENGTH` at a time, interleaved
  deterministically, and the parallel maps keep their order; so the batches
  are the same in every process, and a resumed run skips the
  `start_batch` batches it trained on and sees exactly those an
  uninterrupted run would have seen from there. With a counting pass
  (`split.shard_examples`) the passes before the resumed one are skipped
  unread; without one, the skipped batches are read again.

  Keras takes the batches `steps_per_epoch` at a time; an epoch longer
  than a pass (a worker with fewer rows, or --steps_per_epoch) goes on into
  the next pass.

  Args:
    split: The training split, with labels.
    batch_size: Global batch size.
    steps_per_epoch: Batches per epoch.
    bucketing: Group examples of similar length (length-sorted windows of
      `pipeline.WINDOW_BATCHES` batches).
    seed: Seeds the shuffles.
    shuffle_buffer: Examples held by the shuffle buffer.
    num_batches: Batches in all (default: one epoch's).
    start_batch: Batches of the run already trained on (a resumed run).
    num_workers: Workers of a multi-worker run.
    worker_index: This worker's index.

  Returns:
    Dataset of (features, label_ids) as `pipeline.training_dataset`'s.
  """
  paths, policy = worker_shards(split.shards, num_workers, worker_index)
  if num_workers > 1:
    logging.info(
        "Worker %d of %d reads %d of %d shard(s) (sharded by %s): %s",
        worker_index,
        num_workers,
        len(paths),
        len(split.shards),
        policy,
        ", ".join(paths),
    )
  num_batches = num_batches or steps_per_epoch
  if policy == "file" and start_batch:
    # tf.distribute cuts each batch into a piece per replica; sharded by
    # file, a worker's replicas take every piece of its own batches, so
    # one batch lasts num_workers steps (by data, the workers share it).
    start_batch, piece = divmod(start_batch, num_workers)
    if piece:
      logging.warning(
          "The backup was taken %d step(s) into a batch of %d; the resumed "
          "run trains those pieces of it again.",
          piece,
          num_workers,
      )
  if split.shard_examples is not None:
    rows = dict(zip(split.shards, split.shard_examples))
    # At least one: a worker whose shards hold no usable row has no batch.
    batches_per_pass = max(
        1, math.ceil(sum(rows[path] for path in paths) / batch_size)
    )
    first_pass, skipped = divmod(start_batch, batches_per_pass)
  else:
    first_pass, skipped = 0, start_batch
  if start_batch:
    logging.info(
        "%s: resuming after %d batch(es): from pass %d over the shards, "
        "%d batch(es) into it%s.",
        split.flag,
        start_batch,
        first_pass + 1,
        skipped,
        ""
        if split.shard_examples
        else " (without a counting pass, the batches before are read again)",
    )
  if split.num_examples:
    shuffle_buffer = min(shuffle_buffer, split.num_examples)

  cached = None
  if split.cache_prefix is not None:
    # A cache holds one order of the shards; the shuffle buffer mixes it.
    cached = _cached(
        split,
        _encoded(
            split,
            _interleaved(
                split, tf.data.Dataset.from_tensor_slices(paths), len(paths)
            ),
        ),
        f"worker{worker_index}",
    )

  def one_pass(pass_number):
    # The pass's seeds are tensors; tf.data cannot take a tensor seed beside
    # a graph-level seed of 0 (it compares the pair with (0, 0) in Python).
    # This graph is the function's own: a constant graph-level seed keeps
    # the order a function of `seed` and the pass alone.
    tf.random.set_seed(_GRAPH_SEED)
    pass_seed = pipeline._epoch_seed(seed, pass_number)  # noqa: SLF001
    if cached is not None:
      examples = cached
    else:
      files = tf.data.Dataset.from_tensor_slices(paths).shuffle(
          len(paths), seed=pass_seed, reshuffle_each_iteration=False
      )
      examples = _encoded(split, _interleaved(split, files, len(paths)))
    dataset = examples.shuffle(
        shuffle_buffer, seed=pass_seed, reshuffle_each_iteration=False
    )
    if bucketing:
      dataset = dataset.ragged_batch(batch_size * pipeline.WINDOW_BATCHES)
      dataset = dataset.map(pipeline._sort_window).unbatch()  # noqa: SLF001
      dataset = dataset.map(lambda *example: example)
    dataset = dataset.padded_batch(
        batch_size, padding_values=(split.pad_id, 0, 0, 0)
    )
    if bucketing:
      # Without this, each window's batches would come shortest to longest.
      dataset = dataset.shuffle(
          pipeline.WINDOW_BATCHES,
          seed=pass_seed + 1,
          reshuffle_each_iteration=False,
      )
    return dataset

  # Every pass holds a batch at least: this many passes are enough.
  last_pass = first_pass + skipped + num_batches
  dataset = (
      tf.data.Dataset.range(first_pass, last_pass)
      .flat_map(one_pass)
      .skip(skipped)
      .take(num_batches)
      .map(
          functools.partial(pipeline._to_model_inputs, split.model_inputs),  # noqa: SLF001
          num_parallel_calls=tf.data.AUTOTUNE,
      )
  )
  return _with_shard_policy(dataset.prefetch(tf.data.AUTOTUNE), policy)


def _interleaved(
    split: StreamedSplit, files: tf.data.Dataset, num_files: int
) -> tf.data.Dataset:
  """The labelled examples of `files`, `_CYCLE_LENGTH` shards at a time, in
  an order fixed by the order of `files`."""
  return files.interleave(
      functools.partial(_shard_examples, split, True),
      cycle_length=min(num_files, _CYCLE_LENGTH),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
  )


def inference_dataset(
    split: StreamedSplit, *, batch_size: int, with_labels: bool
) -> tf.data.Dataset:
  """Batches in input order (shards sorted, each in file order).

  A split with label ids (an evaluation split) is read with its labels even
  for predictions, so that the same records are skipped
  (--skip_bad_records: an unknown or missing label) and the outputs line up
  with `split.label_ids`.

  Returns:
    Dataset of features (and label ids with `with_labels`), as
    `pipeline.inference_dataset`'s but not sorted by length.
  """
  if with_labels and split.label_vocab is None:
    raise ValueError(f"{split.flag}: evaluation examples need labels.")
  labelled = with_labels or split.label_ids is not None
  files = tf.data.Dataset.from_tensor_slices(list(split.shards))
  dataset = files.interleave(
      functools.partial(_shard_examples, split, labelled),
      cycle_length=1,
  )
  dataset = _cached(
      split,
      _encoded(split, dataset),
      "labelled" if labelled else "unlabelled",
  )
  dataset = dataset.padded_batch(
      batch_size, padding_values=(split.pad_id, 0, 0, 0)
  )
  if not with_labels:
    dataset = dataset.map(lambda ids, types, lengths, _: (ids, types, lengths))
  if split.num_examples:
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(
            math.ceil(split.num_examples / batch_size)
        )
    )
  dataset = dataset.map(
      functools.partial(pipeline._to_model_inputs, split.model_inputs)  # noqa: SLF001
  )
  return _with_shard_policy(dataset.prefetch(tf.data.AUTOTUNE), "data")
