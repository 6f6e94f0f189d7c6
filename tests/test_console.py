"""The binaries' console: TensorFlow's start-up notices are filtered out of
stderr; our logs, Python errors, other TensorFlow errors and a crash's last
words are not."""

import os
import re
import subprocess
import sys

from conftest import make_sentiment_rows, write_rows
from tf_finetune import console

# What TensorFlow prints on this kind of machine without the filter (see
# tf_finetune/console.py), as substrings.
NOISE_TEXTS = (
    "absl::InitializeLog",
    "oneDNN",
    "cuda drivers",
    "cuInit",
    "rebuild TensorFlow",
    "Sharding callback duration",
)


def _env(**values):
  """This process's environment without TF_CPP_MIN_LOG_LEVEL (which the
  test session sets), plus `values`."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(values)
  return env


def _python(code, **env):
  return subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      timeout=120,
      env=_env(**env),
  )


FILTERED_WRITES = r"""
import os, sys
from tf_finetune import console
print(console.filter_tensorflow_noise(), flush=True)
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is "
            b"called are written to STDERR\n")
os.write(2, b"I0000 00:00:1796.16   17906 port.cc:153] oneDNN custom "
            b"operations are on. You may see slightly different results.\n")
os.write(2, b"E0000 00:00:1796.17   17906 op_kernel.cc:12] a real error\n")
print("a Python warning", file=sys.stderr, flush=True)
os.write(2, b"I0000 00:00:1796.18   17906 cudart_stub.cc:31] Could not "
            b"find cuda drivers on your machine, GPU will not be used.\n")
os.write(2, b"last words before a crash\n")
os.abort()
"""


def test_filter_drops_the_notices_and_passes_the_rest_even_on_a_crash():
  result = _python(FILTERED_WRITES)
  assert result.returncode != 0  # Aborted.
  assert result.stdout.strip() == "True"
  assert result.stderr.splitlines() == [
      "E0000 00:00:1796.17   17906 op_kernel.cc:12] a real error",
      "a Python warning",
      "last words before a crash",
  ]


def test_a_tensorflow_log_level_set_by_the_user_leaves_stderr_alone():
  result = _python(FILTERED_WRITES, TF_CPP_MIN_LOG_LEVEL="0")
  assert result.stdout.strip() == "False"
  assert "oneDNN custom operations are on" in result.stderr
  assert "last words before a crash" in result.stderr


def test_train_binary_starts_with_our_first_log_line(tmp_path, tiny_bert_dir):
  """A fresh `python -m tf_finetune.train` as a newcomer runs it: TensorFlow
  loads and starts CUDA (or fails to) without a word on stderr, and the
  first line there is ours."""
  train_file = write_rows(
      str(tmp_path / "train.csv"), make_sentiment_rows(16, seed=1)
  )
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "tf_finetune.train",
          f"--model={tiny_bert_dir}",
          f"--train_file={train_file}",
          f"--model_dir={tmp_path / 'run'}",
          "--epochs=1",
          "--batch_size=16",
          "--max_seq_length=16",
          "--pooling=mean",
          "--precision=fp32",
          "--noexport",
      ],
      capture_output=True,
      text=True,
      timeout=600,
      env=_env(),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert (
      "Task classification; outputs (2): negative, positive" in lines[0]
  ), lines[:5]
  for line in lines:
    assert not any(text in line for text in NOISE_TEXTS), line
    assert not any(re.search(p, line) for p in console.noise_patterns()), line
  # Our later lines are all there.
  assert any("Trained weights after 1 steps" in line for line in lines)
