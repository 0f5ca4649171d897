"""Wake-ups when a file changes, from Linux's inotify (no dependency: ctypes on libc).

The bus tails the SQLite event log, which other processes (a CLI ingest, an Airflow
task, a feed bridge) append to.  Polling it every few milliseconds costs latency
(half the period on average) and, when idle, CPU; a watch on the log's folder wakes the
tailer as soon as any process writes the log or its WAL, and costs nothing in between.
Where inotify is not available (another OS, a restricted container), :func:`watch`
returns None and the bus polls as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080


class Watch:
    """A non-blocking inotify descriptor: readable when a watched file changed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def drain(self) -> None:
        """Read the pending events (they carry nothing the caller needs)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def watch(path: Path) -> Watch | None:
    """Watch ``path`` and its SQLite companions (``-wal``, ``-journal``) for writes.

    The folder is watched rather than the files, so a WAL created or recreated later is
    covered too; writes to other files of the folder wake the reader as well, which
    then finds nothing new (its change check is ~10 µs).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        folder = str(path.resolve().parent).encode()
        if libc.inotify_add_watch(fd, folder, _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, "inotify_add_watch")
    except (OSError, AttributeError) as e:  # no inotify here: the caller polls
        log.info("no file watch for %s (%s); polling", path, e)
        return None
    return Watch(fd)
