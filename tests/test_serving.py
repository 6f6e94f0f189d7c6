import dataclasses
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import transformers

from conftest import export_length_server, run_python
from tf_finetune import artifacts, io_utils, prediction, serving

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

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
  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(tf.saved_model, "save", full_disk)
  with pytest.raises(io_utils.DiskFullError) as raised:
    _export(trained, tmp_path)
  assert str(raised.value) == (
      f"Could not write a new version in {tmp_path}: the disk is full; "
      "nothing was written there and what was there before is intact. Free "
      "space on that disk (or write elsewhere) and rerun."
  )
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


def test_export_is_readable_by_other_users(tmp_path):
  """With umask 022 a version is 0755 with 0644 files, as TF Serving
  running as another user needs; staging would leave 0700."""
  old = os.umask(0o022)
  try:
    version_dir = export_length_server(str(tmp_path))
  finally:
    os.umask(old)
  modes = {"1": stat.S_IMODE(os.stat(version_dir).st_mode)}
  for parent, dirs, files in os.walk(version_dir):
    for name in dirs + files:
      path = os.path.join(parent, name)
      modes[os.path.relpath(path, tmp_path)] = stat.S_IMODE(
          os.stat(path).st_mode
      )
  assert "1/saved_model.pb" in modes and "1/variables/variables.index" in modes
  for path, mode in modes.items():
    expected = 0o755 if os.path.isdir(tmp_path / path) else 0o644
    assert mode == expected, (path, oct(mode))


_EXPORTER = """
import os, sys, time
sys.path.insert(0, {tests_dir!r})
from conftest import export_length_server
export_base, scale, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.01)
print(export_length_server(export_base, float(scale)))
"""


def _start_exporter(tmp_path, export_base, scale, name):
  ready = tmp_path / f"{name}.ready"
  process = subprocess.Popen(
      [
          sys.executable,
          "-c",
          _EXPORTER.format(tests_dir=TESTS_DIR),
          str(export_base),
          str(scale),
          str(ready),
          str(tmp_path / "go"),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
  )
  return process, ready


def _wait_for(paths, processes, seconds=240):
  deadline = time.time() + seconds
  while not all(os.path.exists(path) for path in paths):
    for process in processes:
      if process.poll() is not None:
        pytest.fail(process.stderr.read()[-3000:])
    assert time.time() < deadline, "the exporters did not start in time"
    time.sleep(0.05)


def test_concurrent_exports_each_get_their_own_version(tmp_path):
  """Two processes export into one base at the same moment: both versions
  survive, each complete and each answering as its own server."""
  export_base = tmp_path / "export"
  started = [
      _start_exporter(tmp_path, export_base, scale, f"exporter{scale}")
      for scale in (2, 3)
  ]
  processes = [process for process, _ in started]
  try:
    _wait_for([ready for _, ready in started], processes)
    (tmp_path / "go").touch()  # Both take a version number now.
    outputs = [process.communicate(timeout=240) for process in processes]
  finally:
    for process in processes:
      process.kill()
      process.wait()
  for process, (_, err) in zip(processes, outputs):
    assert process.returncode == 0, err[-3000:]
  paths = [out.strip().splitlines()[-1] for out, _ in outputs]
  assert sorted(os.path.basename(path) for path in paths) == ["1", "2"]
  assert sorted(os.listdir(export_base)) == ["1", "2"]
  for path, scale in zip(paths, (2, 3)):
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](text=tf.constant(["abcd"]))
    assert got["length"].numpy().tolist() == [4.0 * scale]
    assert os.path.isfile(os.path.join(path, serving.WARMUP_PATH))


def test_export_removes_the_staging_of_a_killed_export(tmp_path):
  """SIGKILL while a version is staged leaves a hidden directory; the next
  export removes it, but not the staging of a live exporter, nor a
  version."""
  export_base = tmp_path / "export"
  process, ready = _start_exporter(tmp_path, export_base, 1, "killed")
  (tmp_path / "go").touch()
  deadline = time.time() + 240
  staged = []
  try:
    while not staged:
      assert process.poll() is None, process.stderr.read()[-3000:]
      assert time.time() < deadline, "no staging directory appeared"
      if export_base.is_dir():
        staged = [n for n in os.listdir(export_base) if n.startswith(".")]
    process.send_signal(signal.SIGKILL)
  finally:
    process.kill()
    process.wait()
  assert os.listdir(export_base) == staged  # Left behind: no version.
  assert staged[0].startswith(f".{serving.STAGING_NAME}.tmp-")
  # A live exporter's staging (here: a sleeping child's) stays.
  with subprocess.Popen(["sleep", "60"]) as live:
    live_staging = staged[0].replace(f"-{process.pid}-", f"-{live.pid}-")
    os.mkdir(export_base / live_staging)
    try:
      first = export_length_server(str(export_base))
      second = export_length_server(str(export_base))
    finally:
      live.kill()
  assert sorted(os.listdir(export_base)) == sorted([live_staging, "1", "2"])
  assert [os.path.basename(p) for p in (first, second)] == ["1", "2"]
