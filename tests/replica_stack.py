"""Several ``blockhub serve`` replicas behind ``blockhub proxy``, as real processes.

Used by tests/test_hub_replicas.py and the production end-to-end test
(tests/test_e2e_production.py).  Every replica gets the same ``BLOCKHUB_*`` environment
(the stack's: one home, one catalog, one lake, one event log) plus its own
``BLOCKHUB_REPLICA_ID``; the proxy (a process too) joins clients to them in turn.
Everything started here is stopped by the fixture that made it (SIGKILL at the end: a
test may already have killed some).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventlog.redislog import RedisEventLog
from hub.api.server import free_port

BLOCKHUB = str(Path(sys.executable).with_name("blockhub"))


def start_serving(
    args: list[str], env: dict[str, str], base: str, log_path: Path, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Start a ``blockhub serve`` process; return once ``/healthz`` answers (its stderr
    goes to ``log_path``, whose tail a start that fails shows)."""
    # The log goes to a file: an unread pipe fills up and blocks the server.
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{base}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"blockhub serve on {base} did not start within {timeout_s:g} s")


class Replica:
    """One ``blockhub serve`` process."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        self.name, self.folder, self.env = name, folder, env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"replica-{self.name}.log"

    def start(self, timeout_s: float = 60) -> Replica:
        env = {**os.environ, **self.env, "BLOCKHUB_REPLICA_ID": self.name}
        args = [BLOCKHUB, "serve", "--port", str(self.port)]
        self.proc = start_serving(args, env, self.base, self.log_path, timeout_s)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, no lease is given up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ProxyProc:
    """``blockhub proxy`` in front of the replicas."""

    def __init__(self, folder: Path, replicas: list[Replica]) -> None:
        self.folder, self.replicas = folder, replicas
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ProxyProc:
        args = [BLOCKHUB, "proxy", "--listen", self.base]
        for r in self.replicas:
            args += ["--backend", r.base]
        with (self.folder / "proxy.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "proxy.log").read_text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError("blockhub proxy did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class Stack:
    """Replicas and a proxy sharing one environment; :meth:`close` stops them all."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.replicas: list[Replica] = []
        self.proxy: ProxyProc | None = None

    def start(self, names: list[str]) -> Stack:
        self.replicas = [Replica(n, self.folder, self.env) for n in names]
        for r in self.replicas:
            r.start()
        self.proxy = ProxyProc(self.folder, self.replicas).start()
        return self

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for r in self.replicas:
            r.kill()


@pytest.fixture
def redis_bus() -> Iterator[str]:
    """An event log URL on the machine's Redis under a prefix of this test's own (the keys
    are deleted afterwards; the shared server is never flushed)."""
    url = f"redis://127.0.0.1:6379/0?prefix=bhrep-{uuid.uuid4().hex[:10]}"
    yield url
    log = RedisEventLog(url)
    log.delete_all()  # leases too: every key of the prefix
    log.dispose()


def feed_status(base: str, token: str, feed: str) -> dict[str, Any]:
    r = httpx.get(
        f"http://{base}/v1/feeds/{feed}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(check: Any, what: str, timeout_s: float = 30, period_s: float = 0.1) -> Any:
    """Call ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # a replica restarting, a server not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(period_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s (last: {last!r})")
