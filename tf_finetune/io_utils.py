"""Writing outputs so that a killed or failed run never half-writes them.

Every output is written under a hidden staging name in its final directory
and renamed into place once complete. Staging names carry the host and the
process id of their writer (`.<name>.tmp-<host>-<pid>-<random>`), so a later
writer can tell the leftovers of a killed process from the work of a live
one and remove them. Outputs get the modes an ordinary write would give
them (0666 for files and 0777 for directories, less the process umask), so
that another user (a TF Serving process) can read them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from typing import Iterator, Optional

# Errors that mean the disk (or the user's quota on it) is full.
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow's C++ writers report errno only in the message text.
_DISK_FULL_MESSAGES = tuple(os.strerror(code) for code in _DISK_FULL_ERRNOS)
_STAGING_PATTERN = re.compile(
    r"^\.(?P<name>.+)\.tmp-(?P<host>[^-]+)-(?P<pid>\d+)-[a-z0-9_]+$"
)


class DiskFullError(OSError):
  """Writing an output failed because its disk is full; nothing was left."""


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (an OSError or a TensorFlow error) means a full disk."""
  if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
    return True
  return any(message in str(error) for message in _DISK_FULL_MESSAGES)


def disk_full_error(what: str, error: BaseException) -> DiskFullError:
  """One line naming `what` was written, saying the disk is full and what
  to do."""
  del error  # Chained by the caller; its text names a hidden staging path.
  full = DiskFullError(
      f"Could not write {what}: the disk is full; nothing was written there "
      "and what was there before is intact. Free space on that disk (or "
      "write elsewhere) and rerun."
  )
  full.errno = errno.ENOSPC
  return full


def _umask() -> int:
  """The process umask, read without changing it where Linux allows."""
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  # os.umask can only be read by setting it: for a moment, files made by
  # other threads get 0o022.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def file_mode() -> int:
  """The mode of a file written with open(): 0o666 less the umask."""
  return 0o666 & ~_umask()


def directory_mode() -> int:
  """The mode of a directory made with os.mkdir: 0o777 less the umask."""
  return 0o777 & ~_umask()


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _staging_prefix(name: str) -> str:
  return f".{name}.tmp-{_host()}-{os.getpid()}-"


def _process_is_alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's live process.
  return True


def _remove(path: str) -> None:
  """Removes a file, a symlink (not what it points to) or a directory."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


def remove_stale_staging(directory: str, name: Optional[str] = None) -> list:
  """Removes what killed writers on this host left staged in `directory`.

  Only staging entries (of `name`, or of any name) whose process is gone
  are removed; complete outputs and the staging of live processes stay.

  Returns:
    The paths removed.
  """
  try:
    entries = os.listdir(directory)
  except FileNotFoundError:
    return []
  host = _host()
  removed = []
  for entry in entries:
    match = _STAGING_PATTERN.match(entry)
    if not match or (name is not None and match["name"] != name):
      continue
    if match["host"] != host:
      continue  # Another machine's writer: its pid means nothing here.
    if _process_is_alive(int(match["pid"])):
      continue
    path = os.path.join(directory, entry)
    _remove(path)
    removed.append(path)
  return removed


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename.

  Raises:
    DiskFullError: when the disk is full; `path` is then untouched.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  name = os.path.basename(path)
  remove_stale_staging(directory, name)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=_staging_prefix(name))
  try:
    os.fchmod(fd, file_mode())  # mkstemp makes it 0600.
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    if is_disk_full(e):
      raise disk_full_error(path, e) from e
    raise


@contextlib.contextmanager
def staging_directory(parent: str, name: str, what: str) -> Iterator[str]:
  """Yields a new hidden directory in `parent` for writing `what`.

  Stale staging of `name` left in `parent` by killed processes is removed
  first. If the body raises, the directory is removed; a full disk is
  reported as a `DiskFullError` naming `what` (the path users know). On
  success the caller moves the directory into place.
  """
  os.makedirs(parent, exist_ok=True)
  remove_stale_staging(parent, name)
  staging = tempfile.mkdtemp(dir=parent, prefix=_staging_prefix(name))
  try:
    os.chmod(staging, directory_mode())  # mkdtemp makes it 0700.
    yield staging
  except BaseException as e:
    shutil.rmtree(staging, ignore_errors=True)
    if is_disk_full(e):
      raise disk_full_error(what, e) from e
    raise


def _swap_into_place(new: str, final_path: str) -> None:
  """Renames `new` to `final_path`, moving an existing one aside first."""
  old = final_path + ".old"
  if os.path.lexists(final_path):
    _remove(old)
    os.rename(final_path, old)
  os.rename(new, final_path)
  _remove(old)


@contextlib.contextmanager
def staged_directory(final_path: str, *, replace: bool) -> Iterator[str]:
  """Yields a temporary sibling directory that becomes `final_path` on success.

  If the body raises, the temporary directory is removed and `final_path` is
  untouched. With `replace=False` an existing `final_path` is an error; with
  `replace=True` the old directory is swapped out only after the new one is
  complete (a `<final_path>.old` left by a crash mid-swap is recovered by
  `recover_staged_directory`).

  Raises:
    DiskFullError: when the disk is full; `final_path` is then untouched.
  """
  parent = os.path.dirname(os.path.abspath(final_path))
  if not replace and os.path.lexists(final_path):
    raise FileExistsError(
        f"{final_path} already exists; refusing to overwrite it."
    )
  name = os.path.basename(final_path)
  with staging_directory(parent, name, final_path) as staging:
    yield staging
  _swap_into_place(staging, final_path)


def link_directory(final_path: str, target: str) -> None:
  """Makes `final_path` a relative symlink to its sibling `target`.

  An existing `final_path` (a directory or a link) is replaced only once the
  new link exists, as `staged_directory` replaces directories.
  """
  parent = os.path.dirname(os.path.abspath(final_path))
  name = os.path.basename(final_path)
  remove_stale_staging(parent, name)
  while True:
    tmp_path = os.path.join(parent, _staging_prefix(name) + os.urandom(4).hex())
    try:
      os.symlink(os.path.relpath(target, parent), tmp_path)
      break
    except FileExistsError:
      continue
  try:
    _swap_into_place(tmp_path, final_path)
  except BaseException:
    _remove(tmp_path)
    raise


def recover_staged_directory(final_path: str) -> None:
  """Restores `<final_path>.old` if a crash happened between two renames."""
  old = final_path + ".old"
  if not os.path.lexists(final_path) and os.path.lexists(old):
    os.rename(old, final_path)


def remove_empty_directory(directory: str) -> None:
  """Removes `directory` if it exists and is empty."""
  with contextlib.suppress(FileNotFoundError):
    try:
      os.rmdir(directory)
    except OSError as e:
      if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
        raise


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
