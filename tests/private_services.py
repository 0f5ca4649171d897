"""Private instances of the real servers, for tests that stop, restart or flush them.

The machine's shared Redis, PostgreSQL and Mosquitto serve everyone's tests at once and
must never be stopped or flushed; a test that needs a server to fail starts its own here,
on a free port in a temporary folder, and stops it afterwards (so it also runs on a fresh
machine with only the binaries installed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest
import redis

from hub.api.server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")


class PrivateRedis:
    """A redis-server of this test's own.

    ``persist``: ``none`` (a restart loses everything, like ``--save ''`` in a cache
    deployment), ``aof`` (append-only file fsynced on every write: a restart keeps
    everything acknowledged), ``rdb`` (snapshots only when :meth:`snapshot` is called: a
    restart after a kill goes back to the last snapshot, losing the writes made since).
    """

    def __init__(self, folder: Path, persist: Literal["none", "aof", "rdb"] = "none") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str = "bh") -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> PrivateRedis:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--save", "",
            "--dir", str(self.folder),
            "--dbfilename", "dump.rdb",
            "--appendonly", "yes" if self.persist == "aof" else "no",
            "--appendfsync", "always",
        ]  # fmt: skip
        with (self.folder / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError((self.folder / "redis.log").read_text()[-2000:]) from None
                return False

        _wait(up, f"redis-server on port {self.port}")
        return self

    def snapshot(self) -> None:
        """Write the data set to disk now (what an RDB save point does)."""
        self.client().save()

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown: the AOF is complete) or SIGKILL (a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None
        if self.persist == "none":
            (self.folder / "dump.rdb").unlink(missing_ok=True)

    def restart(self, *, kill: bool = False, down_s: float = 0.0) -> None:
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


class PrivateMosquitto:
    """A mosquitto broker of this test's own, persistent (sessions and queued QoS 1
    messages survive a clean stop and start, as in a production broker)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # As root mosquitto switches to its own user, which cannot write in pytest's
            # private temporary folder: the sessions would not be saved across a restart.
            "user root\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 1\n"
        )

    def start(self) -> PrivateMosquitto:
        with (self.folder / "mosquitto.log").open("ab") as out:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )

        def up() -> bool:
            import socket

            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "mosquitto.log").read_text()[-2000:])
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(up, f"mosquitto on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistence file
            self.proc.wait(20)
        self.proc = None


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own: initdb in a temporary folder, run as the
    ``postgres`` user (the server refuses to run as root) with pg_ctl, trust auth."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres", "postgres")
        os.chmod(folder, 0o700)
        self._run(
            str(PG_BIN / "initdb"),
            "-D", str(self.data),
            "-A", "trust",
            "-U", "postgres",
            "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stdout[-2000:]}")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PrivatePostgres:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -k {self.folder}"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D", str(self.data),
            "-o", opts,
            "-l", str(self.folder / "postgres.log"),
            "-w",
            "-t", "30",
            "start",
        )  # fmt: skip

        def up() -> bool:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        _wait(up, f"postgres on port {self.port}")
        return self

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: like a crash (recovery at start)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's temporary folder: pytest keeps its parents private to root (and
    # sets that again as it makes new ones), and the server runs as ``postgres``.
    root = Path(tempfile.mkdtemp(prefix="blockhub-pg-"))
    os.chmod(root, 0o755)
    server = PrivatePostgres(root / "cluster").start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
