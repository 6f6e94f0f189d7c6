"""Writing outputs so that a killed or failed run never half-writes them."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      dir=directory, prefix=f".{os.path.basename(path)}."
  )
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


@contextlib.contextmanager
def staged_directory(final_path: str, *, replace: bool) -> Iterator[str]:
  """Yields a temporary sibling directory that becomes `final_path` on success.

  If the body raises, the temporary directory is removed and `final_path` is
  untouched. With `replace=False` an existing `final_path` is an error; with
  `replace=True` the old directory is swapped out only after the new one is
  complete (a `<final_path>.old` left by a crash mid-swap is recovered by
  `recover_staged_directory`).
  """
  parent = os.path.dirname(os.path.abspath(final_path))
  os.makedirs(parent, exist_ok=True)
  if not replace and os.path.exists(final_path):
    raise FileExistsError(
        f"{final_path} already exists; refusing to " "overwrite it."
    )
  staging = tempfile.mkdtemp(
      dir=parent, prefix=f".{os.path.basename(final_path)}.tmp-"
  )
  try:
    yield staging
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  old = final_path + ".old"
  if os.path.exists(final_path):
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final_path, old)
  os.rename(staging, final_path)
  shutil.rmtree(old, ignore_errors=True)


def recover_staged_directory(final_path: str) -> None:
  """Restores `<final_path>.old` if a crash happened between two renames."""
  old = final_path + ".old"
  if not os.path.exists(final_path) and os.path.isdir(old):
    os.rename(old, final_path)


# Written and synced by the writability check: a disk without a free block
# fails here, not hours later at the first checkpoint.
_WRITE_CHECK_BYTES = 4096


def check_writable(directory: str, flag: str) -> None:
  """Fails early, naming `flag`, if `directory` cannot be written."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=directory, prefix=".write-check-"
    ) as probe:
      probe.write(b"\0" * _WRITE_CHECK_BYTES)
      probe.flush()
      os.fsync(probe.fileno())
  except OSError as e:
    raise ValueError(
        f"{flag}={directory!r} is not writable: " f"{e.strerror or e}."
    ) from e
