"""What one process may assume about an output folder: it holds it alone, and the temp files of
writes killed before it started are its to remove.

* :class:`OutputLock`: an exclusive ``fcntl.flock`` on a lock file (e.g. per stage output folder
  and partition, per training OUTPUT_DIR). The OS releases it when the process dies, however it
  dies (SIGKILL included), so a killed run never leaves a stale lock; a second process asking for
  a held lock is refused with the holder's pid.
* :func:`remove_stale_temp_files`: delete the ``.<name>.<random>.tmp`` files that
  :func:`part_distillation.utils.io.atomic_write` leaves when killed mid-write, restricted to the
  caller's own file names and to files older than this process (a file written after this
  process started cannot be a leftover of a killed run).
"""
import errno
import fcntl
import fnmatch
import logging
import os
import time
from typing import Iterable, Optional

logger = logging.getLogger(__name__)


def process_start_time(pid: Optional[int] = None) -> float:
    """Start time of process ``pid`` (default: this one) in seconds since the epoch (Linux
    ``/proc/<pid>/stat`` field 22 + boot time); the current time where ``/proc`` is absent."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + float(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def remove_stale_temp_files(folder: str, names: Iterable[str]) -> int:
    """Delete the temp files of killed atomic writes of ``names`` in ``folder``: entries
    ``.<name>.<anything>.tmp`` where ``<name>`` matches one of the ``fnmatch`` patterns ``names``
    (e.g. ``"model_*.pth"``, ``"last_checkpoint"``) and whose mtime is older than this process
    (:func:`process_start_time`; whole seconds, so a file from this process's first second is kept).

    Returns:
        the number of files removed (each logged).
    """
    if not os.path.isdir(folder):
        return 0
    started = int(process_start_time())
    patterns = [f".{n}.*.tmp" for n in names]
    removed = 0
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False) or not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        try:
            if entry.stat().st_mtime < started:
                size = entry.stat().st_size
                os.unlink(entry.path)
                removed += 1
                logger.info("removed %s (%d bytes), left by a killed write", entry.path, size)
        except FileNotFoundError:
            continue
    return removed


class OutputLockHeld(RuntimeError):
    """Another live process holds the lock; the message names the lock file and its pid."""


class OutputLock:
    """Exclusive, non-blocking ``fcntl.flock`` on ``path`` (created with its folder); the file
    records the holder's pid and command line for the refusal message of a second process.

    Use as a context manager, or :meth:`acquire` / :meth:`release`. The lock belongs to the open
    file: it is released by :meth:`release`, at exit, or by the OS when the process is killed.

    Raises (:meth:`acquire`):
        OutputLockHeld: another process holds it.
    """

    def __init__(self, path: str, what: str = ""):
        self.path, self.what = path, what or os.path.dirname(os.path.abspath(path))
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown pid"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputLockHeld(
                f"{self.what} is in use by another process ({holder}; lock file {self.path}): "
                f"wait for it to end or stop it; two processes writing the same outputs would "
                f"overwrite each other's files") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
