"""Process-wide settings of a blockhub process (the CLI, the server, Airflow tasks).

:func:`settle_heap` keeps the cyclic garbage collector's pauses short:

- every object alive at start-up (modules, classes, the libraries' own tables: ~230,000
  objects once pyiceberg, DuckDB, pyarrow, SQLAlchemy and FastAPI are imported) is moved
  out of its reach with :func:`gc.freeze` — they live as long as the process anyway, and a
  full pass over them cost ~100 ms, a third of a 50,000-row incremental ingest;
- the thresholds are raised from (700, 10, 10) to (10,000, 20, 100): a server holding 1,000
  websocket connections has ~1M objects made after start-up, and each full pass over them
  took 100–200 ms, every ~30 s, which is what the slowest deliveries waited for (measured
  with ``bench/ws.py``: p99 at 20 msg/s 1.26–7.0× the floor before, 1.06–1.34× after).
  Young garbage is still collected every 10,000 net allocations; reference counting frees
  everything that is not in a cycle at once, as always.

docs/decisions.md D22.  Called by entry points, never by library code.

:class:`ProcessLock` is a lock for the threads of one process in front of a database's
own write lock (D35).
"""

from __future__ import annotations

import gc
import os
import threading

_settled = False


def settle_heap() -> None:
    """Freeze the start-up objects and raise the collector's thresholds, once per process
    (a later freeze would also keep the garbage made since, for good)."""
    global _settled
    if not _settled:
        gc.freeze()
        gc.set_threshold(10_000, 20, 100)
        _settled = True


class ProcessLock:
    """A lock for the threads of this process, queued and handed on as soon as it is free.

    In front of a SQLite write lock: threads of one process that meet at the database's
    lock wait in its busy handler's sleeps (1, 2, 5, 10 … ms) even when the lock was free
    again after a fraction of a millisecond; here they queue on this lock instead, and
    only other processes are met at the database's.  A forked child makes its own (a lock
    copied while another thread of the parent held it would never be released there).
    """

    def __init__(self) -> None:
        self._lock, self._pid = threading.Lock(), os.getpid()

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            self._lock, self._pid = threading.Lock(), os.getpid()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
