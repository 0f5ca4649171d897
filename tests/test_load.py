"""200 concurrent clients for 30 s against a real `blockhub serve` (its own process) over
a seeded hub: mixed queries, exports, rows pages, samples, descriptions and catalog
searches (bench/load.py).  Every answer is a 2xx or a 429 with ``Retry-After``, no
transport error, no traceback in the server's log; the server's resident memory stays
under a bound, and it answers /healthz and a query afterwards.

Slow (about a minute): marker ``load``, in the full run and CI, not in ``make quick``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import run_load, seed, start_server

pytestmark = pytest.mark.load

CLIENTS = 200
SECONDS = 30.0
RSS_BOUND_MB = 1536
"""DuckDB's memory limit for the run (1 GB, bench/load.py) plus the Python process around
it; measured peaks: ~600 MB (docs/performance.md, "Load")."""


def test_200_clients_for_30_s_get_answers_or_429_and_the_server_stays_healthy(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    tokens = seed(home)
    server = start_server(home)
    try:
        report = run_load(server, tokens, CLIENTS, SECONDS)
    finally:
        server.stop()
    summary = report.to_dict()
    assert report.error_count == 0, summary
    assert set(report.statuses) <= {200, 429}, summary
    assert report.missing_retry_after == 0, summary
    assert report.statuses[200] >= 100, summary  # the server served, not only refused
    assert report.statuses[429] >= 1, summary  # the limits were reached
    assert report.healthy_after, summary
    assert report.server_tracebacks == 0, summary
    assert report.rss_peak_mb < RSS_BOUND_MB, summary
