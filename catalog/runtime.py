"""Process-wide settings of a blockhub process (the CLI, the server, Airflow tasks).

:func:`settle_heap` moves every object alive at start-up (modules, classes, the
libraries' own tables: ~230,000 objects once pyiceberg, DuckDB, pyarrow, SQLAlchemy and
FastAPI are imported) out of the garbage collector's reach with :func:`gc.freeze`.  They
live as long as the process anyway; what it saves is the full (generation 2) collection
pass that otherwise walks all of them — measured at ~100 ms, a third of a 50,000-row
incremental ingest (docs/decisions.md D22).  Objects created afterwards are collected as
usual.  Called by entry points, never by library code.
"""

from __future__ import annotations

import gc

_settled = False


def settle_heap() -> None:
    """Freeze what is alive now (start-up objects) out of the cyclic collector's passes.

    Once per process: a later call would also freeze the garbage made since, for good."""
    global _settled
    if not _settled:
        gc.freeze()
        _settled = True
