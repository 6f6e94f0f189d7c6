"""SavedModel export for TF Serving: raw text in, labels and probabilities out.

Layout written under the export base directory:

  <export_dir>/<version>/saved_model.pb, variables/, assets/

Versions are integers (1, 2, ...) as TF Serving expects; an existing version
is never overwritten and a version directory appears only once complete (it
is written to a hidden sibling directory, verified, then renamed).

Signatures (classification; each task's module documents its own outputs):
  serving_default: text (string [batch]) [, text_pair (string [batch])]
      -> probabilities (float32 [batch, num_labels]), label (string [batch]),
         label_id (int32 [batch]).
  serve_token_ids: input_ids, attention_mask, token_type_ids
      (int32 [batch, seq_len]) -> the same outputs.
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

import os
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune import io_utils
from tf_finetune.models.classifier import INPUT_NAMES
from tf_finetune.tokenization import TRICKY_TEXTS, TextEncoder, check_matches_tokenizer

DEFAULT_SIGNATURE = "serving_default"
TOKEN_IDS_SIGNATURE = "serve_token_ids"
_VERSION_PATTERN = re.compile(r"^\d+$")
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 8, 64)


def text_signatures(server: tf.Module, *, text_pair: bool) -> dict:
  """serving_default on raw text and serve_token_ids on packed ids.

  Args:
    server: Has `serve(text[, text_pair])` and `serve_ids(input_ids,
      attention_mask, token_type_ids)`, both returning the same outputs.
    text_pair: Whether serving_default takes a second text.
  """
  text = tf.TensorSpec([None], tf.string, name="text")
  if text_pair:
    pair = tf.TensorSpec([None], tf.string, name="text_pair")
    serve_text = tf.function(
        lambda text, text_pair: server.serve(text, text_pair),
        input_signature=[text, pair])
  else:
    serve_text = tf.function(lambda text: server.serve(text),
                             input_signature=[text])
  ids = [tf.TensorSpec([None, None], tf.int32, name=name)
         for name in INPUT_NAMES]
  serve_ids = tf.function(server.serve_ids, input_signature=ids)
  return {DEFAULT_SIGNATURE: serve_text.get_concrete_function(),
          TOKEN_IDS_SIGNATURE: serve_ids.get_concrete_function()}


class ClassifierServer(tf.Module):
  """Wraps a trained classifier and its tokenizer for serving."""

  def __init__(self, model, encoder: TextEncoder, label_vocab: Sequence[str],
               *, text_pair: bool):
    super().__init__(name="classifier_server")
    self.model = model
    self.encoder = encoder
    self.text_pair = text_pair
    self.label_vocab = tf.constant(list(label_vocab), tf.string)
    # Not signatures: let a Python client (our `predict`) read the labels in
    # id order, e.g. to name probability columns, and the task.
    self.get_label_vocab = tf.function(lambda: self.label_vocab,
                                       input_signature=[])
    self.get_task = tf.function(lambda: tf.constant("classification"),
                                input_signature=[])

  def classify_ids(self, input_ids, attention_mask, token_type_ids):
    logits = self.model({"input_ids": input_ids,
                         "attention_mask": attention_mask,
                         "token_type_ids": token_type_ids}, training=False)
    label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32)),
            "label": tf.gather(self.label_vocab, label_id),
            "label_id": label_id}

  def classify(self, text, text_pair=None):
    features = self.encoder.encode(text, text_pair)
    return self.classify_ids(**features)

  serve = classify
  serve_ids = classify_ids

  def signatures(self) -> dict:
    return text_signatures(self, text_pair=self.text_pair)


def write_warmup_requests(saved_model_dir: str, texts: Sequence[str],
                          text_pairs: Optional[Sequence[str]] = None, *,
                          input_names: Sequence[str] = ("text", "text_pair")
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
        request.inputs[input_names[0]].CopyFrom(tf.make_tensor_proto(
            [texts[i].encode("utf-8") for i in rows], dtype=tf.string))
        if text_pairs is not None:
          request.inputs[input_names[1]].CopyFrom(tf.make_tensor_proto(
              [text_pairs[i].encode("utf-8") for i in rows], dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())
  return path


def next_version(export_base: str) -> int:
  if not os.path.isdir(export_base):
    return 1
  versions = [int(name) for name in os.listdir(export_base)
              if _VERSION_PATTERN.match(name)]
  return max(versions, default=0) + 1


def latest_version_dir(export_base: str) -> Optional[str]:
  if not os.path.isdir(export_base):
    return None
  versions = [int(name) for name in os.listdir(export_base)
              if _VERSION_PATTERN.match(name)]
  return os.path.join(export_base, str(max(versions))) if versions else None


def export_server(server: tf.Module, *, encoder: TextEncoder, text_pair: bool,
                  export_base: str, hf_tokenizer,
                  checked_output: str = "probabilities",
                  sample_texts: Sequence[str] = (),
                  sample_pairs: Optional[Sequence[str]] = None,
                  input_names: Sequence[str] = ("text", "text_pair")) -> str:
  """Exports a task's server as a SavedModel version; returns its directory.

  `input_names` are serving_default's inputs (a question-answering server
  takes a question and a context).

  Before writing, the in-graph tokenizer is checked against the model's own
  tokenizer on `sample_texts` plus built-in tricky texts; after writing, the
  SavedModel is reloaded and its `checked_output` must reproduce the
  in-memory model's. Either failure leaves no version directory behind.
  """
  texts = list(TRICKY_TEXTS) + list(sample_texts)
  pairs = None
  if text_pair:
    pairs = list(reversed(TRICKY_TEXTS)) + list(sample_pairs or sample_texts)
    pairs = pairs[:len(texts)] + [""] * (len(texts) - len(pairs))
  check_matches_tokenizer(encoder, hf_tokenizer, texts, pairs)

  version_dir = os.path.join(export_base, str(next_version(export_base)))
  inputs = {input_names[0]: tf.constant(texts[:16])}
  if text_pair:
    inputs[input_names[1]] = tf.constant(pairs[:16])
  expected = server.serve(**inputs)[checked_output].numpy()
  with io_utils.staged_directory(version_dir, replace=False) as staging:
    tf.saved_model.save(server, staging, signatures=server.signatures())
    write_warmup_requests(staging, texts, pairs, input_names=input_names)
    reloaded = tf.saved_model.load(staging)
    got = reloaded.signatures[DEFAULT_SIGNATURE](**inputs)[checked_output]
    if not np.allclose(got.numpy(), expected, atol=1e-5):
      raise RuntimeError(f"The reloaded SavedModel's {checked_output} differ "
                         "from the trained model's; the export was "
                         "discarded.")
  logging.info("Exported SavedModel version %s to %s.",
               os.path.basename(version_dir), version_dir)
  return version_dir
