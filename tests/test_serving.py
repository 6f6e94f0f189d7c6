import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import transformers

from conftest import run_python
from tf_finetune import artifacts, prediction, serving

TEXTS = [
    "the movie was good and fun",
    "a dull and boring plot",
    "",
    "Superb! The ACTOR was wonderful.",
]


def _export_dir(model_dir):
  return serving.latest_version_dir(os.path.join(model_dir, "export"))


def test_fresh_process_without_transformers_gives_the_same_probabilities(
    trained_run,
):
  script = f"""
import json, sys
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({_export_dir(trained_run)!r})
outputs = model.signatures["serving_default"](text=tf.constant({TEXTS!r}))
assert "transformers" not in sys.modules and "tf_finetune" not in sys.modules
print(json.dumps({{"probabilities": outputs["probabilities"].numpy().tolist(),
                  "label": [l.decode() for l in outputs["label"].numpy()]}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  in_process = prediction.Predictor.from_model_dir(trained_run).predict(TEXTS)
  np.testing.assert_allclose(served["probabilities"], in_process, atol=1e-5)
  vocab = ["negative", "positive"]
  assert served["label"] == [vocab[i] for i in in_process.argmax(axis=1)]


def test_saved_model_cli_lists_both_signatures(trained_run):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run(
      [cli, "show", "--dir", _export_dir(trained_run), "--all"],
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "signature_def['serving_default']" in result.stdout
  assert "signature_def['serve_token_ids']" in result.stdout
  for name in (
      "inputs['text']",
      "inputs['input_ids']",
      "outputs['probabilities']",
      "outputs['label']",
  ):
    assert name in result.stdout


def test_every_op_is_registered_by_tensorflow_and_tensorflow_text(trained_run):
  script = f"""
import json, os
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
saved = saved_model_pb2.SavedModel()
path = os.path.join({_export_dir(trained_run)!r}, "saved_model.pb")
with open(path, "rb") as f:
  saved.ParseFromString(f.read())
graph = saved.meta_graphs[0].graph_def
ops = {{node.op for node in graph.node}}
for function in graph.library.function:
  ops |= {{node.op for node in function.node_def}}
functions = {{f.signature.name for f in graph.library.function}}
ops -= functions
core = {{op for op in ops if op_def_registry.get(op) is not None}}
import tensorflow_text
text_ops = {{op for op in ops - core if op_def_registry.get(op) is not None}}
print(json.dumps({{"unregistered": sorted(ops - core - text_ops),
                  "text_ops": sorted(text_ops), "count": len(ops)}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["unregistered"] == []
  # Exactly the tensorflow-text ops the README tells TF Serving users about.
  assert report["text_ops"] == [
      "FastWordpieceTokenizeWithOffsets",
      "NormalizeUTF8",
      "RegexSplitWithOffsets",
  ]
  assert report["count"] > 20


@pytest.fixture(scope="module")
def trained(trained_run):
  return artifacts.load_trained(trained_run)


def _export(trained, export_base):
  return trained.task.export(trained, export_base=str(export_base))


def test_token_id_signature_agrees_with_the_text_signature(trained, tmp_path):
  path = _export(trained, tmp_path)
  loaded = tf.saved_model.load(path)
  by_text = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
  features = trained.encoder.encode(tf.constant(TEXTS))
  by_ids = loaded.signatures["serve_token_ids"](**features)
  np.testing.assert_allclose(
      by_text["probabilities"].numpy(),
      by_ids["probabilities"].numpy(),
      atol=1e-6,
  )
  assert os.path.basename(path) == "1"


def test_answers_empty_many_and_very_long_texts(trained):
  server = trained.task.server(trained)
  serve = server.signatures()["serving_default"]
  many = serve(text=tf.constant(["good film"] * 1000))
  assert many["probabilities"].shape == (1000, 2)
  long_text = "the movie was good " * 25_000  # 100,000 characters.
  outputs = serve(text=tf.constant(["", long_text]))
  assert outputs["probabilities"].shape == (2, 2)
  np.testing.assert_allclose(
      outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5
  )


def test_versions_increment_and_are_never_overwritten(trained, tmp_path):
  first = _export(trained, tmp_path)
  mtime = os.path.getmtime(os.path.join(first, "saved_model.pb"))
  second = _export(trained, tmp_path)
  assert [os.path.basename(p) for p in (first, second)] == ["1", "2"]
  assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == mtime


def test_failed_export_leaves_no_version_behind(trained, tmp_path, monkeypatch):
  def broken_save(*args, **kwargs):
    raise OSError("No space left on device")

  monkeypatch.setattr(tf.saved_model, "save", broken_save)
  with pytest.raises(OSError, match="No space left"):
    _export(trained, tmp_path)
  assert os.listdir(tmp_path) == []


def test_export_refuses_a_tokenizer_it_cannot_reproduce(trained, tmp_path):
  cased = transformers.BertTokenizerFast(
      os.path.join(trained.tokenizer.name_or_path, "vocab.txt"),
      do_lower_case=False,
  )
  with pytest.raises(ValueError, match="differs from the model's tokenizer"):
    _export(dataclasses.replace(trained, tokenizer=cased), tmp_path)
  assert not os.path.exists(tmp_path / "1")


def test_warmup_requests_replay_against_the_saved_model(trained_run):
  from tensorflow_serving.apis import prediction_log_pb2

  export_dir = _export_dir(trained_run)
  loaded = tf.saved_model.load(export_dir)
  batch_sizes = []
  for record in tf.data.TFRecordDataset(
      os.path.join(export_dir, serving.WARMUP_PATH)
  ):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    signature = loaded.signatures[request.model_spec.signature_name]
    inputs = {
        name: tf.constant(tf.make_ndarray(proto))
        for name, proto in request.inputs.items()
    }
    outputs = signature(**inputs)
    batch_sizes.append(int(inputs["text"].shape[0]))
    assert outputs["probabilities"].shape == (batch_sizes[-1], 2)
  assert batch_sizes == [1, 1, 8, 8, 64, 64]
