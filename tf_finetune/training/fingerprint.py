"""The fingerprint of a run: what its trained weights depend on.

A run records its fingerprint with its backup (backup/fingerprint.json) and
with the record of a finished fit (training_finished.json). A rerun in the
same model_dir resumes the backup or reuses the finished weights only if
its own fingerprint is the same; otherwise it stops, naming what changed,
before it changes anything (`check_unchanged`).

The fingerprint holds every setting whose value changes the trained
weights (fields made by `setting(..., changes_weights=True)`, the default;
not where outputs go, nor what only evaluation or export use), the number
of replicas, and the data read for training and validation: size and
SHA-256 of each file, or of the encoded examples of a TensorFlow Datasets
split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tf_finetune import artifacts, callbacks, io_utils
from tf_finetune.config import CHANGES_WEIGHTS, HELP, RunConfig
from tf_finetune.data import shards, streaming
from tf_finetune.data.pipeline import EncodedExamples

FILENAME = "fingerprint.json"
# The splits whose contents shape the weights: training, and validation
# (best epoch, early stopping).
_SPLITS = ("train", "validation")
_CHUNK = 1 << 20


def _weight_settings(config: RunConfig) -> dict[str, Any]:
  """Flag name -> value of every setting that changes the weights."""
  settings = {}
  for group in (config, config.data, config.model, config.train, config.task):
    for field in dataclasses.fields(group):
      if HELP in field.metadata and field.metadata.get(CHANGES_WEIGHTS, True):
        settings[f"--{field.name}"] = getattr(group, field.name)
  return settings


def file_digest(path: str) -> dict[str, Any]:
  """{"path", "bytes", "sha256"} of the file at `path`."""
  digest = hashlib.sha256()
  size = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
      size += len(chunk)
  return {"path": path, "bytes": size, "sha256": digest.hexdigest()}


def _update(digest, values) -> None:
  if isinstance(values, tf.RaggedTensor):
    _update(digest, values.flat_values)
    _update(digest, values.row_splits)
  elif values is not None:
    digest.update(np.ascontiguousarray(np.asarray(values)).tobytes())


def examples_digest(encoded: EncodedExamples) -> dict[str, Any]:
  """{"examples", "sha256"} of encoded examples: ids, types and targets."""
  digest = hashlib.sha256()
  for values in (encoded.input_ids, encoded.token_type_ids, encoded.label_ids):
    _update(digest, values)
  return {"examples": len(encoded), "sha256": digest.hexdigest()}


def _shard_stats(spec: str, flag: str) -> list[dict[str, Any]]:
  """[{"path", "bytes", "mtime_ns"}] of the shards `spec` names."""
  stats = []
  for path in shards.expand(spec, flag):
    stat = os.stat(path)
    stats.append(
        {"path": path, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    )
  return stats


def _split_files(config: RunConfig, split: str) -> dict[str, str]:
  """Flag name -> path of the files a split is read from."""
  files = {}
  for group, name in (
      (config.data, f"{split}_file"),
      (config.task, f"{split}_target_file"),
  ):
    path = getattr(group, name, None)
    if path:
      files[f"--{name}"] = path
  return files


def run_fingerprint(
    config: RunConfig,
    encoded: dict[str, EncodedExamples],
    replicas: int,
) -> dict[str, Any]:
  """What the trained weights of `config` depend on, as JSON values.

  Args:
    config: The run's (resolved) config.
    encoded: Split name -> its encoded examples.
    replicas: Replicas in sync (they set the global batch).
  """
  data = {}
  for split in _SPLITS:
    files = _split_files(config, split)
    if isinstance(encoded.get(split), streaming.StreamedSplit):
      # Data past memory: each shard's size and modification time (hashing
      # it all on every rerun would take as long as an epoch's reading).
      data.update(
          {flag: _shard_stats(spec, flag) for flag, spec in files.items()}
      )
    elif files:
      for flag, spec in files.items():
        paths = shards.expand(spec, flag)
        data[flag] = (
            file_digest(paths[0])
            if len(paths) == 1
            else [file_digest(path) for path in paths]
        )
    elif split in encoded:
      data[f"{split} examples"] = examples_digest(encoded[split])
  return {
      "settings": _weight_settings(config),
      "replicas": replicas,
      "data": data,
  }


def _show(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """What differs between two fingerprints, in words; [] if nothing."""
  found = []
  old, new = recorded.get("settings", {}), current["settings"]
  for name in list(new) + [name for name in old if name not in new]:
    if name not in old or name not in new or old[name] != new[name]:
      found.append(
          f"{name} changed from {_show(old.get(name))} to "
          f"{_show(new.get(name))}"
      )
  if recorded.get("replicas") != current["replicas"]:
    found.append(
        f"the replicas changed from {recorded.get('replicas')} to "
        f"{current['replicas']} (devices, workers or --distribution)"
    )
  old, new = recorded.get("data", {}), current["data"]
  for name in list(new) + [name for name in old if name not in new]:
    before, after = old.get(name), new.get(name)
    if before == after:
      continue
    if isinstance(before, list) and isinstance(after, list):
      # Shards (streamed: size and modification time; else digests).
      found.append(f"{name}: {_shard_change(before, after)}")
      continue
    if isinstance(before, list) or isinstance(after, list):
      found.append(f"the data of {name} changed")
      continue
    if before and after and before.get("sha256") == after.get("sha256"):
      continue
    if before and after and "bytes" in before and "bytes" in after:
      found.append(
          f"{name}={after['path']!r} changed ({before['bytes']} bytes, "
          f"SHA-256 {before['sha256'][:12]}... then; {after['bytes']} "
          f"bytes, SHA-256 {after['sha256'][:12]}... now)"
      )
    else:
      found.append(f"the data of {name} changed")
  return found


def _shard_change(before: list[dict], after: list[dict]) -> str:
  """The first difference between two lists of shard records, in words."""
  paths_before = [shard.get("path") for shard in before]
  paths_after = [shard.get("path") for shard in after]
  if paths_before != paths_after:
    return (
        f"the shards changed ({len(before)} then, {len(after)} now; "
        f"added: {sorted(set(paths_after) - set(paths_before)) or 'none'}, "
        f"gone: {sorted(set(paths_before) - set(paths_after)) or 'none'})"
    )
  changed = next(was for was, now in zip(before, after) if was != now)
  return f"shard {changed['path']!r} changed since"


def read(path: str) -> Optional[dict[str, Any]]:
  """The fingerprint recorded in the JSON file at `path`, or None."""
  record = callbacks.read_json_record(path)
  fingerprint = (record or {}).get("fingerprint")
  return fingerprint if isinstance(fingerprint, dict) else None


def backup_path(model_dir: str) -> str:
  return os.path.join(model_dir, artifacts.BACKUP_DIR, FILENAME)


def write_backup_record(model_dir: str, fingerprint: dict[str, Any]) -> None:
  """Records the fingerprint of the run that backs up to model_dir/backup."""
  os.makedirs(os.path.join(model_dir, artifacts.BACKUP_DIR), exist_ok=True)
  io_utils.write_text_atomically(
      backup_path(model_dir),
      json.dumps({"fingerprint": fingerprint}, indent=2) + "\n",
  )


def has_backup(model_dir: str) -> bool:
  """Whether model_dir/backup holds a checkpoint to resume from."""
  return bool(
      tf.train.latest_checkpoint(
          os.path.join(model_dir, artifacts.BACKUP_DIR, "chief")
      )
  )


def check_unchanged(model_dir: str, fingerprint: dict[str, Any]) -> None:
  """Refuses to resume or reuse a run in `model_dir` that was another run.

  Compares `fingerprint` with the one recorded with the backup, if there
  is one to resume, else with the record of a finished fit.

  Raises:
    ValueError: in one line, naming what changed and what to do.
  """
  if has_backup(model_dir):
    recorded, state = read(backup_path(model_dir)), "was interrupted"
  else:
    path = os.path.join(model_dir, artifacts.FIT_RECORD_FILENAME)
    if not os.path.isfile(path):
      return
    recorded, state = read(path), "finished"
  fix = (
      "pass --overwrite_model_dir to start fresh or choose a new "
      "--model_dir."
  )
  if recorded is None:
    raise ValueError(
        f"The run in {model_dir} {state} without a record of its settings "
        f"and data, so it cannot be told apart from another run; {fix}"
    )
  found = changes(recorded, fingerprint)
  if found:
    raise ValueError(
        f"{', '.join(found)} since the run in {model_dir} {state}; {fix}"
    )
