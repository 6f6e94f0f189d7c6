"""The binaries' console: TensorFlow's start-up notices filtered out.

Loading TensorFlow and running its first operations makes its C++ runtime
print lines a user does not act on: an absl notice that logging is not set
up yet, "oneDNN custom operations are on", "Could not find cuda drivers",
"failed call to cuInit" on a machine without an NVIDIA driver, oneDNN's
int64 fallback and the "rebuild TensorFlow with the appropriate compiler
flags" advice. They are written by C++ straight to file descriptor 2, most
of them before TensorFlow reads TF_CPP_MIN_LOG_LEVEL, so no log level hides
them, and raising the level would hide real errors too.

`filter_tensorflow_noise` sends file descriptor 2 through a small filter
process that drops exactly those lines (`NOISE`) and passes everything else
on at once: our logs, Python errors and every other TensorFlow warning or
error. The filter is a process of its own so that a crash's last words still
come out: it reads the pipe to its end even after the binary died. The
binaries call it unless the user set TF_CPP_MIN_LOG_LEVEL, in which case
TensorFlow's output is left as it is. TensorFlow's Python INFO lines
("Sharding callback duration") are hidden with it; its warnings are not.
"""

from __future__ import annotations

import atexit
import logging as std_logging
import os
import subprocess
import sys

from absl import logging as absl_logging

# absl's prefix of a C++ log line: "I0000 00:00:1796.160921   17906 ".
_PREFIX = r"^[IWE]\d{4} [\d:.]+\s+\d+ "

# Lines a user does not act on, as regexes searched in each line.
NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR$",
    _PREFIX + r"port\.cc:\d+\] oneDNN custom operations are on\.",
    _PREFIX + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your "
    r"machine, GPU will not be used\.$",
    _PREFIX + r"util\.cc:\d+\] oneDNN supports DT_\w+ only on platforms "
    r"with AVX-512\.",
    _PREFIX + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is "
    r"optimized to use available CPU instructions",
    r"^To enable the following instructions: .*, in other operations, "
    r"rebuild TensorFlow with the appropriate compiler flags\.$",
)

# Where there is no NVIDIA driver, CUDA cannot start and saying so is noise;
# with a driver, a failed cuInit is a real error and is shown.
NO_DRIVER_NOISE = (
    _PREFIX + r"cuda_platform\.cc:\d+\] failed call to cuInit: ",
)
NVIDIA_DRIVER = "/proc/driver/nvidia/version"

# The filter process: copies its stdin to its stdout line by line, dropping
# the lines that match a pattern given as an argument. A partial line is
# passed on after 0.1 s without more output (progress bars), and the rest
# of that line unfiltered.
_FILTER_PROGRAM = r"""
import os, re, select, sys
noise = [re.compile(p.encode()) for p in sys.argv[1:]]
pending, passed_partial = b"", False
while True:
  ready = select.select([0], [], [], 0.1 if pending else None)[0]
  if not ready:
    os.write(1, pending)
    pending, passed_partial = b"", True
    continue
  chunk = os.read(0, 65536)
  if not chunk:
    break
  *lines, pending = (pending + chunk).split(b"\n")
  for line in lines:
    if passed_partial or not any(p.search(line) for p in noise):
      os.write(1, line + b"\n")
    passed_partial = False
if pending:
  os.write(1, pending)
"""

_installed = False


def noise_patterns() -> tuple[str, ...]:
  """The patterns dropped on this machine."""
  if os.path.exists(NVIDIA_DRIVER):
    return NOISE
  return NOISE + NO_DRIVER_NOISE


def filter_tensorflow_noise() -> bool:
  """Filters NOISE out of this process's stderr from now on (once).

  Does nothing when the user set TF_CPP_MIN_LOG_LEVEL, off POSIX, or when
  the filter cannot start.

  Returns:
    Whether the filter is on.
  """
  global _installed
  if _installed:
    return True
  import tf_finetune  # pylint: disable=import-outside-toplevel

  if tf_finetune.USER_TF_LOG_LEVEL is not None or os.name != "posix":
    return False
  sys.stderr.flush()
  read_end, write_end = os.pipe()
  original = os.dup(2)
  try:
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM]
        + list(noise_patterns()),
        stdin=read_end,
        stdout=original,
        stderr=original,
    )
  except OSError:
    for fd in (read_end, write_end, original):
      os.close(fd)
    return False
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  atexit.register(_restore, original, process)
  # TensorFlow's Python INFO lines, logged through its own logger or through
  # absl's as ours are; its warnings and errors stay.
  std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
  absl_logging.get_absl_handler().addFilter(_without_tensorflow_info)
  _installed = True
  return True


_TENSORFLOW_DIR = os.sep + "tensorflow" + os.sep


def _without_tensorflow_info(record: std_logging.LogRecord) -> bool:
  """False for an INFO (or DEBUG) record logged by TensorFlow's code."""
  return (
      record.levelno >= std_logging.WARNING
      or _TENSORFLOW_DIR not in record.pathname
  )


def _restore(original: int, process: subprocess.Popen) -> None:
  """At exit: stderr back to the terminal; the filter drains the pipe."""
  try:
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  os.dup2(original, 2)
  os.close(original)
  try:
    process.wait(timeout=10)
  except subprocess.TimeoutExpired:
    pass  # A child of the binary still holds the pipe; the filter goes on.
