"""Preparing a streamed whole-text run (--streaming): what the in-memory
`EncoderTask.prepare` does, with counting passes instead of reading.

The label vocabulary comes from --labels or from the counting pass over the
training shards (which also counts the rows, hence the steps per epoch);
validation and test shards are passed over once to check them and keep their
label ids (4 bytes per example) for the metrics. No split's texts are kept
beyond the first `streaming.SAMPLE_SIZE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from absl import logging

from tf_finetune.data import labels, shards, streaming
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks import base
from tf_finetune.text import families
from tf_finetune.text.tokenization import check_matches_tokenizer


def prepare(task, config) -> base.PreparedData:
  """Counts and checks the shards, binds the task, loads the encoder.

  Args:
    task: The `TextTask` (classification).
    config: The run config, its data resolved.

  Returns:
    PreparedData whose `encoded` splits are `streaming.StreamedSplit`s and
    whose `examples` are `streaming.SampledExamples` (a sample; `len()` is
    the split's size).

  Raises:
    ValueError: naming the flag, shard and line of the first bad record, or
      the flag of a bad setting.
  """
  data = config.data
  columns = shards.Columns(
      data.text_column, data.text_pair_column, data.label_column
  )
  paths = {
      split: shards.expand(spec, f"--{split}_file")
      for split in base.SPLITS
      if (spec := getattr(data, f"{split}_file"))
  }
  given = data.label_vocab
  count_rows = data.steps_per_epoch is None or given is None
  train_scan = streaming.scan(
      paths["train"],
      flag="--train_file",
      columns=columns,
      skip_bad_records=data.skip_bad_records,
      label_vocab=given,
      max_examples=None if count_rows else streaming.SAMPLE_SIZE,
  )
  label_vocab = given or labels.infer_label_vocab(
      list(train_scan.label_counts), "--train_file"
  )
  task.bind(
      base.TaskState(
          label_vocab=tuple(label_vocab),
          text_pair=data.text_pair_column is not None,
      )
  )
  logging.info(
      "Task %s (streaming); outputs (%d): %s",
      task.name,
      len(label_vocab),
      ", ".join(label_vocab),
  )
  scans = {"train": train_scan}
  for split in ("validation", "test"):
    if split in paths:
      scans[split] = streaming.scan(
          paths[split],
          flag=f"--{split}_file",
          columns=columns,
          skip_bad_records=data.skip_bad_records,
          label_vocab=label_vocab,
          keep_label_ids=True,
      )

  backbone_lib.check_model_source(
      config.model.model, config.model.allow_pickle_weights
  )
  family = backbone_lib.model_family(config.model.model)
  families.resolve_pooling(config.model.pooling, family)
  tokenizer = backbone_lib.load_tokenizer(config.model.model)
  encoder = task.text_encoder(
      tokenizer, data.max_seq_length, family, model=config.model.model
  )
  sample = train_scan.sample
  check_matches_tokenizer(encoder, tokenizer, sample.texts, sample.text_pairs)
  caches = {}
  if data.cache_dir:
    caches = {
        split: streaming.cache_prefix(
            data.cache_dir,
            split,
            paths[split],
            columns=columns,
            label_vocab=label_vocab,
            skip_bad_records=data.skip_bad_records,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer, encoder),
        )
        for split in scans
    }
  encoded = {
      split: streaming.StreamedSplit(
          shards=tuple(paths[split]),
          flag=f"--{split}_file",
          columns=columns,
          encoder=encoder,
          label_vocab=tuple(label_vocab),
          num_examples=found.num_examples
          if count_rows or split != "train"
          else None,
          label_ids=found.label_ids,
          skip_bad_records=data.skip_bad_records,
          skipped_records=found.skipped,
          cache_prefix=caches.get(split),
          shard_examples=found.shard_examples
          if count_rows or split != "train"
          else None,
      )
      for split, found in scans.items()
  }
  examples = {split: found.sample for split, found in scans.items()}
  if not count_rows:
    examples["train"] = dataclasses.replace(examples["train"], num_examples=0)
  return base.PreparedData(config, examples, encoded, tokenizer, encoder, task)


def evaluation_split(
    task, data, spec: str, encoder, *, flag: str = "--test_file"
) -> tuple[streaming.SampledExamples, streaming.StreamedSplit]:
  """A labelled split of a trained run, for streamed evaluation.

  One pass checks the shards and keeps the label ids (the run's vocabulary;
  --skip_bad_records as the run had it).

  Returns:
    (a sample of the examples, the split).
  """
  paths = shards.expand(spec, flag)
  columns = shards.Columns(
      data.text_column, data.text_pair_column, data.label_column
  )
  label_vocab = task.state.label_vocab
  found = streaming.scan(
      paths,
      flag=flag,
      columns=columns,
      skip_bad_records=data.skip_bad_records,
      label_vocab=label_vocab,
      keep_label_ids=True,
  )
  return found.sample, streaming.StreamedSplit(
      shards=tuple(paths),
      flag=flag,
      columns=columns,
      encoder=encoder,
      label_vocab=tuple(label_vocab),
      num_examples=found.num_examples,
      label_ids=found.label_ids,
      skip_bad_records=data.skip_bad_records,
      skipped_records=found.skipped,
  )


def tokenizer_fingerprint(tokenizer, encoder) -> str:
  """SHA-256 of what tokenizes and packs: the model tokenizer's own
  definition (vocabulary, normalization) and the encoder's template,
  max_seq_length and model inputs."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    definition = backend.to_str()
  else:
    definition = json.dumps(sorted(tokenizer.get_vocab().items()))
  described = json.dumps(
      [
          definition,
          repr(encoder.template),
          encoder.max_seq_length,
          list(encoder.model_inputs),
      ]
  )
  return hashlib.sha256(described.encode("utf-8")).hexdigest()


def skipped_records(prepared: base.PreparedData) -> dict[str, int]:
  """Split -> bad records skipped, for the splits of a streamed run."""
  return {
      split: found.skipped_records
      for split, found in prepared.encoded.items()
      if isinstance(found, streaming.StreamedSplit)
  }
