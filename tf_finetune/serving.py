"""SavedModel export for TF Serving: raw text in, labels and probabilities out.

Layout written under the export base directory:

  <export_dir>/<version>/saved_model.pb, variables/, assets/

Versions are integers (1, 2, ...) as TF Serving expects; an existing version
is never overwritten and a version directory appears only once complete: it
is written to a hidden directory in the export base, verified, then renamed
to the next free number (of two concurrent exporters, each gets its own
number). Staging directories of killed exporters are removed by the next
export. Files and directories get the modes of an ordinary write (0644 and
0755 under umask 022), so a TF Serving process of another user can read
them.

Signatures (each task's server documents its own outputs):
  serving_default: text (string [batch]) [, text_pair (string [batch])]
      -> the task's outputs.
  serve_token_ids (encoder tasks): input_ids, attention_mask and, for
      families with segment ids (BERT, ALBERT, ELECTRA, DeBERTa),
      token_type_ids (int32 [batch, seq_len]) -> the same outputs. A model
      that reads long texts in windows (--long_document=chunks) pools its
      windows in serving_default; here each row is one window.
Every export also has two functions that are not signatures, for Python
clients such as `predict`: `get_label_vocab()` and `get_task()`.
Tokenization runs in the graph with tensorflow-text ops, so a loading process
needs `import tensorflow_text` (TF Serving links those ops).

Each version also carries `assets.extra/tf_serving_warmup_requests`:
`PredictionLog` records for `serving_default` at batch sizes 1, 8 and 64 and
short and long texts, which TF Serving replays when it loads the version, so
the first live request does not pay for graph initialization.
"""

from __future__ import annotations

import abc
import errno
import os
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune import io_utils
from tf_finetune.text.long_documents import CHUNK_MASK
from tf_finetune.text.tokenization import TextEncoder

DEFAULT_SIGNATURE = "serving_default"
TOKEN_IDS_SIGNATURE = "serve_token_ids"
_VERSION_PATTERN = re.compile(r"^\d+$")
# A version being written is `.version.tmp-<host>-<pid>-<random>` in the
# export base until it is complete and verified.
STAGING_NAME = "version"
_MAX_VERSION_ATTEMPTS = 100
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 8, 64)


class Server(tf.Module, metaclass=abc.ABCMeta):
  """The `tf.Module` plumbing every export shares.

  A task's server implements `serve(*texts)` on string tensors [batch] named
  `input_names` and returns a dict of output tensors. Every export also has
  two functions that are not signatures, for Python clients such as
  `predict`: `get_label_vocab()` and `get_task()`.
  """

  def __init__(
      self,
      *,
      task_name: str,
      label_vocab: Sequence[str] = (),
      input_names: Sequence[str] = ("text",),
  ):
    super().__init__(name=f"{task_name}_server")
    self.input_names = tuple(input_names)
    self.label_vocab = tf.constant(
        list(label_vocab), tf.string, shape=[len(label_vocab)]
    )
    task = tf.constant(task_name)
    self.get_label_vocab = tf.function(
        lambda: self.label_vocab, input_signature=[]
    )
    self.get_task = tf.function(lambda: task, input_signature=[])

  @abc.abstractmethod
  def serve(self, *texts: tf.Tensor) -> dict[str, tf.Tensor]:
    """Outputs for string tensors [batch], one per input name."""

  def signatures(self) -> dict:
    """serving_default on raw text, named by `input_names`."""
    specs = [
        tf.TensorSpec([None], tf.string, name=name) for name in self.input_names
    ]
    if len(specs) == 1:
      serve_text = tf.function(
          lambda text: self.serve(text), input_signature=specs
      )
    else:
      serve_text = tf.function(
          lambda text, text_pair: self.serve(text, text_pair),
          input_signature=specs,
      )
    return {DEFAULT_SIGNATURE: serve_text.get_concrete_function()}


class EncoderServer(Server):
  """A pretrained encoder with a head: raw text and packed token ids in.

  Adds `serve_token_ids` (int32 [batch, seq_len] inputs named as the
  encoder's family takes them: input_ids, attention_mask and, where the
  family has segment ids, token_type_ids) beside serving_default; by
  default serving_default packs the text (and pair) in the graph and
  answers as `serve_ids`, whose `token_type_ids` is None for families
  without segment ids. An encoder that reads long texts in windows gives
  [batch, windows, seq_len] inputs and CHUNK_MASK, which `serve_ids` passes
  to the model as `chunk_mask` (one pooled row of logits per text).
  """

  def __init__(
      self,
      model,
      encoder: TextEncoder,
      *,
      task_name: str,
      label_vocab: Sequence[str] = (),
      input_names: Sequence[str] = ("text",),
  ):
    super().__init__(
        task_name=task_name, label_vocab=label_vocab, input_names=input_names
    )
    self.model = model
    self.encoder = encoder

  def logits(
      self, input_ids, attention_mask, token_type_ids=None, chunk_mask=None
  ) -> tf.Tensor:
    """The head's float32 outputs for packed inputs (per text, pooled over
    its windows, when given `chunk_mask`)."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
      inputs["token_type_ids"] = token_type_ids
    if chunk_mask is not None:
      inputs[CHUNK_MASK] = chunk_mask
    logits = self.model(inputs, training=False)
    return tf.cast(logits, tf.float32)

  @abc.abstractmethod
  def serve_ids(
      self, input_ids, attention_mask, token_type_ids
  ) -> dict[str, tf.Tensor]:
    """Outputs for packed token ids."""

  def serve(self, text, text_pair=None):
    features = self.encoder.encode(text, text_pair)
    windows = {}
    if CHUNK_MASK in features:
      windows["chunk_mask"] = features[CHUNK_MASK]
    return self.serve_ids(
        features["input_ids"],
        features["attention_mask"],
        features.get("token_type_ids"),
        **windows,
    )

  def signatures(self) -> dict:
    names = self.encoder.model_inputs
    ids = [tf.TensorSpec([None, None], tf.int32, name=name) for name in names]
    if "token_type_ids" in names:
      serve_ids = tf.function(self.serve_ids, input_signature=ids)
    else:
      serve_ids = tf.function(
          lambda input_ids, attention_mask: self.serve_ids(
              input_ids, attention_mask, None
          ),
          input_signature=ids,
      )
    return dict(
        super().signatures(),
        **{TOKEN_IDS_SIGNATURE: serve_ids.get_concrete_function()},
    )


def write_warmup_requests(
    saved_model_dir: str,
    texts: Sequence[str],
    text_pairs: Optional[Sequence[str]] = None,
    *,
    input_names: Sequence[str] = ("text", "text_pair"),
) -> str:
  """Writes TF Serving warmup records for `serving_default`; returns the path.

  Args:
    saved_model_dir: The version directory.
    texts: Sample texts; each batch size gets a short and a long batch.
    text_pairs: Second texts, for sentence-pair models.
  """
  from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

  by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
  path = os.path.join(saved_model_dir, WARMUP_PATH)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for batch_size in WARMUP_BATCH_SIZES:
      for picks in (by_length[:batch_size], by_length[-batch_size:]):
        rows = [picks[i % len(picks)] for i in range(batch_size)]
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = DEFAULT_SIGNATURE
        request.inputs[input_names[0]].CopyFrom(
            tf.make_tensor_proto(
                [texts[i].encode("utf-8") for i in rows], dtype=tf.string
            )
        )
        if text_pairs is not None:
          request.inputs[input_names[1]].CopyFrom(
              tf.make_tensor_proto(
                  [text_pairs[i].encode("utf-8") for i in rows], dtype=tf.string
              )
          )
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        writer.write(log.SerializeToString())
  return path


def next_version(export_base: str) -> int:
  if not os.path.isdir(export_base):
    return 1
  versions = [
      int(name)
      for name in os.listdir(export_base)
      if _VERSION_PATTERN.match(name)
  ]
  return max(versions, default=0) + 1


def publish_version(staging: str, export_base: str) -> str:
  """Renames the complete `staging` directory to the next free version.

  rename(2) never replaces a non-empty directory, so of two exporters that
  take the same number one wins and the other takes the next: neither
  replaces the other's version.

  Returns:
    The version directory.
  """
  for _ in range(_MAX_VERSION_ATTEMPTS):
    version_dir = os.path.join(export_base, str(next_version(export_base)))
    if os.path.lexists(version_dir):
      continue  # Appeared since the listing; list again.
    try:
      os.rename(staging, version_dir)
    except OSError as e:
      if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
        continue  # Another exporter took this number first.
      raise
    return version_dir
  raise RuntimeError(
      f"Could not take a new version number in {export_base}: other "
      f"exporters took {_MAX_VERSION_ATTEMPTS} in a row; export again."
  )


def latest_version_dir(export_base: str) -> Optional[str]:
  if not os.path.isdir(export_base):
    return None
  versions = [
      int(name)
      for name in os.listdir(export_base)
      if _VERSION_PATTERN.match(name)
  ]
  return os.path.join(export_base, str(max(versions))) if versions else None


def export_server(
    server: Server,
    *,
    export_base: str,
    sample_inputs: dict[str, Sequence[str]],
    checked_output: str,
    exact: bool = False,
) -> str:
  """Exports a task's server as a SavedModel version; returns its directory.

  The SavedModel is written to a hidden sibling, reloaded, and its
  `checked_output` on the first 16 `sample_inputs` must reproduce the
  in-memory server's (to 1e-5, or exactly with `exact`); otherwise no
  version directory is left behind. Warmup records replay the samples.

  Args:
    server: The task's server.
    export_base: Directory of the numbered versions.
    sample_inputs: serving_default input name -> sample texts (equal
      lengths), in `server.input_names` order.
    checked_output: The output compared after reloading.
    exact: Compare for equality (strings) instead of closeness.

  Raises:
    RuntimeError: when the reloaded SavedModel answers differently.
    io_utils.DiskFullError: when the disk is full; no version is left.
  """
  names = list(server.input_names)
  inputs = {name: tf.constant(list(sample_inputs[name])[:16]) for name in names}
  expected = server.serve(*inputs.values())[checked_output].numpy()
  with io_utils.staging_directory(
      export_base, STAGING_NAME, f"a new version in {export_base}"
  ) as staging:
    tf.saved_model.save(server, staging, signatures=server.signatures())
    write_warmup_requests(
        staging, *[sample_inputs[name] for name in names], input_names=names
    )
    reloaded = tf.saved_model.load(staging)
    got = reloaded.signatures[DEFAULT_SIGNATURE](**inputs)[checked_output]
    same = (
        np.array_equal(got.numpy(), expected)
        if exact
        else np.allclose(got.numpy(), expected, atol=1e-5)
    )
    if not same:
      raise RuntimeError(
          f"The reloaded SavedModel's {checked_output} differ "
          "from the trained model's; the export was "
          "discarded."
      )
    version_dir = publish_version(staging, export_base)
  logging.info(
      "Exported SavedModel version %s to %s.",
      os.path.basename(version_dir),
      version_dir,
  )
  return version_dir
