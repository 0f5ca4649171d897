"""Pull an iterator in a thread while the caller uses what it already gave.

Reading (DuckDB, a source's driver) and what the caller does with the items (Parquet
encoding in the lake, sending an answer in the server) both release the GIL, so the two
overlap on two cores.  At most ``depth`` items wait in between, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def prefetch(
    items: Iterable[T], depth: int = 2, name: str = "blockhub-read"
) -> Generator[T, None, None]:
    """Yield ``items`` as a thread pulls them ahead; an error of the source is raised here,
    in the caller, where it happened in the sequence.

    Closing the returned generator early stops the thread after the item it is pulling,
    closes the source there (so a generator's ``finally`` runs in that thread, not the
    caller's) and waits for it.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    source = iter(items)

    def pump() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                q.put(_DONE)
        except BaseException as e:
            q.put(e)
        finally:
            close = getattr(source, "close", None)
            if stop.is_set() and close is not None:
                close()

    worker = threading.Thread(target=pump, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)
