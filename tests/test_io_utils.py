import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import tf_keras

from tf_finetune import artifacts, callbacks

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def _umask(mask):
  old = os.umask(mask)
  try:
    yield
  finally:
    os.umask(old)


def _modes(directory):
  """Relative path -> permission bits of `directory` and all below it."""
  found = {".": stat.S_IMODE(os.stat(directory).st_mode)}
  for parent, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(parent, name)
      found[os.path.relpath(path, directory)] = stat.S_IMODE(
          os.lstat(path).st_mode
      )
  return found


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_outputs_get_the_modes_of_an_ordinary_write(
    tmp_path, mask, file_mode, dir_mode
):
  """Staging with mkstemp/mkdtemp would leave 0600 files and 0700
  directories that a server running as another user cannot read."""
  model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
  with _umask(mask):
    json_path = artifacts.write_json(str(tmp_path), "summary.json", {"a": 1})
    weights_dir = str(tmp_path / "checkpoints" / "best")
    callbacks.save_weights_atomically(model, weights_dir)
  assert stat.S_IMODE(os.stat(json_path).st_mode) == file_mode
  modes = _modes(weights_dir)
  assert modes.pop(".") == dir_mode
  assert set(modes) == {
      "checkpoint",
      "weights.index",
      "weights.data-00000-of-00001",
  }
  assert set(modes.values()) == {file_mode}


_FULL_DISK_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, {tests_dir!r})
import numpy as np
import tf_keras
from conftest import export_length_server
from tf_finetune import callbacks, flag_definitions, io_utils

root = sys.argv[1]
model = tf_keras.Sequential([tf_keras.layers.Dense(64, input_shape=(64,))])
model.compile(optimizer="adam", loss="mse")
best_dir = os.path.join(root, "run", "checkpoints", "best")
best = callbacks.BestWeightsCheckpoint(best_dir, "val_loss", "min")
best.set_model(model)
best.on_epoch_begin(0)
best.on_epoch_end(0, {{"val_loss": 1.0, "loss": 1.0}})
saved = model.get_weights()
export_base = os.path.join(root, "export")
export_length_server(export_base)

# Fill the disk to its last byte.
fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_CREAT)
for size in (1 << 16, 1):
  try:
    while True:
      os.write(fd, b"\0" * size)
  except OSError:
    pass
os.close(fd)

model.set_weights([w + 1.0 for w in saved])
errors = {{}}
attempts = {{
    "best": lambda: best.on_epoch_end(1, {{"val_loss": 0.5, "loss": 1.0}}),
    "final": lambda: callbacks.save_weights_atomically(
        model, os.path.join(root, "run", "checkpoints", "final")),
    "export": lambda: export_length_server(export_base),
    "history": lambda: io_utils.write_text_atomically(
        os.path.join(root, "run", "history.json"), "{{}}" * 4096),
}}
for name, attempt in attempts.items():
  try:
    attempt()
    errors[name] = None
  except io_utils.DiskFullError as e:
    errors[name] = str(e)
# A binary prints the error as one line and exits with 2.
try:
  flag_definitions.run_main(
      "export", ["export"], lambda: export_length_server(export_base))
except SystemExit as e:
  errors["exit_code"] = e.code
os.remove(os.path.join(root, "filler"))

restored = tf_keras.Sequential([tf_keras.layers.Dense(64, input_shape=(64,))])
restored.load_weights(os.path.join(best_dir, "weights"))
listing = sorted(
    os.path.relpath(os.path.join(parent, name), root)
    for parent, dirs, files in os.walk(root)
    for name in dirs + files
)
print(json.dumps({{
    "errors": errors,
    "listing": listing,
    "best_intact": all(
        np.array_equal(a, b) for a, b in zip(restored.get_weights(), saved)),
    "best_record": json.load(open(os.path.join(best_dir, "best.json"))),
}}))
"""


def _tmpfs_command(mount_point, size):
  """Runs a command with a small tmpfs at `mount_point`, without root
  (in a user and mount namespace), or None where that is not allowed."""
  unshare = shutil.which("unshare")
  if not unshare:
    return None
  probe = subprocess.run(
      [unshare, "-rm", "mount", "-t", "tmpfs", "tmpfs", str(mount_point)],
      capture_output=True,
  )
  if probe.returncode:
    return None
  return [
      unshare,
      "-rm",
      "sh",
      "-c",
      f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"',
      str(mount_point),
  ]


def test_a_full_disk_half_writes_nothing_and_says_so(tmp_path):
  """A real full disk (a 4 MB tmpfs): the checkpoint and the export that
  fail leave nothing behind, the previous best checkpoint and version stay
  intact, and the error is one line naming the path."""
  disk = tmp_path / "disk"
  disk.mkdir()
  command = _tmpfs_command(disk, "4m")
  assert command is not None, "unshare -rm cannot mount a tmpfs here"
  script = tmp_path / "full_disk.py"
  script.write_text(_FULL_DISK_SCRIPT.format(tests_dir=TESTS_DIR))
  result = subprocess.run(
      command + [sys.executable, str(script), str(disk)],
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  errors = report["errors"]
  where = {
      "best": f"{disk}/run/checkpoints/best",
      "final": f"{disk}/run/checkpoints/final",
      "export": f"a new version in {disk}/export",
      "history": f"{disk}/run/history.json",
  }
  for name, path in where.items():
    assert errors[name] == (
        f"Could not write {path}: the disk is full; nothing was written "
        "there and what was there before is intact. Free space on that "
        "disk (or write elsewhere) and rerun."
    ), name
  assert errors["exit_code"] == 2
  printed = [
      line for line in result.stderr.splitlines() if line.startswith("export")
  ]
  assert printed == [f"export: error: {errors['export']}"]
  # No staging directory, no partial version or checkpoint: only what was
  # complete before the disk filled.
  version = [
      "export/1",
      "export/1/assets",
      "export/1/assets.extra",
      "export/1/assets.extra/tf_serving_warmup_requests",
      "export/1/fingerprint.pb",
      "export/1/saved_model.pb",
      "export/1/variables",
      "export/1/variables/variables.data-00000-of-00001",
      "export/1/variables/variables.index",
  ]
  best = [
      f"run/checkpoints/best/{name}"
      for name in (
          "best.json",
          "checkpoint",
          "weights.data-00000-of-00001",
          "weights.index",
      )
  ]
  assert report["listing"] == sorted(
      ["export", "run", "run/checkpoints", "run/checkpoints/best"]
      + version
      + best
  )
  assert report["best_intact"]
  assert report["best_record"]["epoch"] == 1
