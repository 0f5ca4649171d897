"""Leases: which replica of a hub does a job that must be done once, not once per replica.

Several ``blockhub serve`` processes (replicas) share one catalog, lake and event log.
Most of what a replica does is per connection and needs no agreement; consuming a live
feed does: an MQTT feed read by every replica would put every event on the log once per
replica, and every replica would flush it to the lake.  A feed is therefore *led* by the
replica holding the lease ``feed:<id>``: it alone runs the feed's MQTT subscriber and its
lake flusher (docs/decisions.md, D50).  Any replica still accepts HTTP pushes.

Two backends, chosen by the event log the replicas share (:func:`open_leases`):

- :class:`RedisLeases` (the Redis bus, replicas on any number of machines): a key
  ``<prefix>:lease:<name>`` holding the holder's name with a time to live; taking,
  renewing and giving up are each one Lua script that looks at the holder first, so a
  replica can only renew or drop a lease it holds.  A leader that dies stops renewing and
  the lease runs out after ``ttl_s``; a leader that cannot reach Redis steps down itself
  before that (:class:`Leadership`).
- :class:`FileLeases` (the embedded SQLite log, every process on one machine): an
  ``flock`` on ``<home>/leases/<name>.lock``, held while the process lives; the kernel
  drops it the moment the process dies, so takeover waits only for the next attempt.

A holder is ``<replica id>/<nonce>``: the nonce tells a restarted replica from its
previous process (which may still hold the lease until it runs out), and two processes
misconfigured with one replica id from each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# KEYS: the lease.  ARGV: holder, ttl in ms.  1 if the holder has it now (taken or renewed).
_TAKE = """
local h = redis.call('GET', KEYS[1])
if h == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if h == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: the lease.  ARGV: holder.  Drops the lease only if the holder has it.
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


def holder_name(replica: str) -> str:
    """This process as a lease holder: the replica id and a nonce of this process."""
    return f"{replica}/{uuid.uuid4().hex[:8]}"


def replica_of(holder: str | None) -> str | None:
    """The replica id part of a holder name."""
    return holder.rsplit("/", 1)[0] if holder else None


class Leases(Protocol):
    """What a replica needs to hold a job: take or renew, give up, ask who holds it."""

    holder: str
    ttl_s: float

    def take(self, name: str) -> bool:
        """Take the lease or renew it; True when this process holds it afterwards.  A
        server that cannot be reached raises (the caller decides what an outage means)."""
        ...

    def drop(self, name: str) -> None:
        """Give the lease up if this process holds it (another replica may take it at once)."""
        ...

    def holder_of(self, name: str) -> str | None:
        """The holder of a lease now, None when nobody holds it."""
        ...

    def close(self) -> None: ...


def _check(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a lease name: {name!r}")
    return name


class RedisLeases:
    """Leases in the Redis of the event log, under its key prefix."""

    def __init__(self, client: Any, prefix: str, holder: str, ttl_s: float) -> None:
        self.redis, self.prefix, self.holder, self.ttl_s = client, prefix, holder, ttl_s
        self._take = client.register_script(_TAKE)
        self._drop = client.register_script(_DROP)

    def _key(self, name: str) -> str:
        return f"{self.prefix}:lease:{_check(name)}"

    def take(self, name: str) -> bool:
        ms = max(1, int(self.ttl_s * 1000))
        return bool(self._take(keys=[self._key(name)], args=[self.holder, ms]))

    def drop(self, name: str) -> None:
        self._drop(keys=[self._key(name)], args=[self.holder])

    def holder_of(self, name: str) -> str | None:
        value = self.redis.get(self._key(name))
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        return None  # the connection pool is the event log's


class FileLeases:
    """Leases as ``flock``s on files of one folder: for processes of one machine."""

    def __init__(self, folder: Path, holder: str, ttl_s: float) -> None:
        self.folder, self.holder, self.ttl_s = folder, holder, ttl_s
        self._held: dict[str, int] = {}  # name → the open file descriptor holding the lock

    def _path(self, name: str) -> Path:
        return self.folder / f"{_check(name).replace(':', '_')}.lock"

    def take(self, name: str) -> bool:
        if name in self._held:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.holder.encode(), 0)
        self._held[name] = fd
        return True

    def drop(self, name: str) -> None:
        fd = self._held.pop(name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    def holder_of(self, name: str) -> str | None:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:  # a shared lock that can be had means nobody holds the exclusive one
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return path.read_text(encoding="utf-8").strip() or None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        for name in list(self._held):
            self.drop(name)


def open_leases(log_backend: object, home: Path, holder: str, ttl_s: float) -> Leases:
    """Leases where every replica sharing this event log finds them: in its Redis, or (the
    embedded log, one machine) in files under the hub's home."""
    from eventlog.redislog import RedisEventLog

    if isinstance(log_backend, RedisEventLog):
        return RedisLeases(log_backend.redis, log_backend.prefix, holder, ttl_s)
    return FileLeases(home / "leases", holder, ttl_s)


class Leadership:
    """One lease held by this process, renewed every third of its time to live, and the
    rule for an outage: a holder that has not renewed for two thirds of ``ttl_s`` (the
    server cannot be reached) takes itself for stepped down — before the lease runs out
    and another replica may take it."""

    def __init__(self, leases: Leases, name: str, clock: Any = time.monotonic) -> None:
        self.leases, self.name, self._clock = leases, name, clock
        self.held = False
        self._renewed = 0.0

    def attempt(self) -> bool:
        """Take or renew; True while this process holds the lease."""
        try:
            got = self.leases.take(self.name)
        except Exception as e:
            if self.held and self._clock() - self._renewed > self.leases.ttl_s * 2 / 3:
                log.warning("lease %s not renewed (%s); stepping down", self.name, e)
                self.held = False
            return self.held
        if got:
            self._renewed = self._clock()
        elif self.held:
            log.warning("lease %s taken by %s; stepping down", self.name, self.holder())
        self.held = got
        return got

    def holder(self) -> str | None:
        try:
            return self.leases.holder_of(self.name)
        except Exception:
            return None

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.leases.drop(self.name)
            except Exception as e:  # it runs out by itself
                log.warning(
                    "lease %s not given up (%s); it runs out in %.0f s",
                    self.name,
                    e,
                    self.leases.ttl_s,
                )
