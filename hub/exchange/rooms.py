"""Rooms: the DuckDB database a reader's SQL runs in, holding only what that reader may read.

A reader's effective access depends on its agency and on whether it is an admin, nothing
else (:func:`catalog.access.effective.decide`), so the readers of one agency (admins apart) share a
room: a DuckDB database of its own — not a schema or a set of views in a shared database —
whose catalog contains the datasets those readers may read, *as they may read them*:

- a dataset of the room's own agency (the owner reads everything) is the stored table as it
  is: an in-memory copy of a small version, the serving replica of a large latest version
  (:mod:`hub.exchange.replicas`) attached read-only, or until that exists a view over the lake —
  the room may read the table folders of its agency's datasets and no other file;
- any other dataset is a copy made for the access profile: only the visible columns, each
  personal-data column already masked, only the rows of the grants' row filters.  The
  loader (the exchange's own database, which may read the whole lake and never runs user
  SQL) computes it; a small one is copied into the room, a large one written to a DuckDB
  file that the room attaches read-only through a hard link in its own folder.

So a name, a path or a function the SQL check misjudged can still only reach what the
room's readers may read: there is no unmasked column, no row outside a grant's filter and
no other agency's table under any name in the room, and its file access ends at its own
folder and its agency's table folders (docs/security.md, "SQL").  A masked value exists
only masked, so no predicate, error or optimiser reordering can test the raw one, and rows
outside a row filter do not exist in the room at all.

An object is named ``<dataset>@v<version>#<profile digest>``; a query names datasets by
their plain names, which the exchange maps to objects with temporary views on the query's
own cursor (a cursor's temporary views are its own), so queries pinned to different
versions run side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow as pa

from catalog.access.effective import Access
from catalog.datasets.store import Version
from catalog.sqltext import quote_ident, quote_literal
from connectors.duck import connect

log = logging.getLogger(__name__)

_q = quote_ident

MAX_EXPRESSION_DEPTH = 250


def profile_digest(access: Access) -> str:
    """A short key of what ``access`` sees of a dataset (the owner's view is its own)."""
    shape = access.profile() + ("|owner" if access.via == "owner" else "")
    return hashlib.sha256(shape.encode()).hexdigest()[:12]


def table_dir(version: Version) -> str:
    """The folder of a version's Iceberg table (its metadata, data and delete files)."""
    location = version.metadata_location
    path = unquote(urlparse(location).path) if location.startswith("file:") else location
    return str(Path(path).parent.parent)


@dataclass
class Limits:
    """What every room of an exchange copies into memory (the exchange may change it)."""

    small_rows: int
    max_copies: int


@dataclass(frozen=True)
class RoomKey:
    """Who shares a room: the readers of one agency (admins in a room of their own), for
    one set of the agency's table folders (a new one makes a new room: DuckDB's file
    sandbox is fixed when the database opens)."""

    agency: str
    admin: bool
    lake_dirs: tuple[str, ...]


@dataclass
class RoomObject:
    """One dataset version as the room's readers see it."""

    name: str
    version: Version
    digest: str  # of the access profile it was made for
    source: str  # copy (a table in the room) | file (an attached profile copy) |
    # lake (a view over iceberg_scan, owners only) | replica (the attached serving replica)
    columns: tuple[str, ...] = ()
    attached: str | None = None
    link: Path | None = None
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)


class Loader(Protocol):
    """What a room needs from the loader (the exchange's database, which reads the lake)."""

    def profile_table(self, version: Version, access: Access) -> pa.Table:
        """A small version as ``access`` sees it, computed by the loader."""

    def profile_file(self, version: Version, access: Access) -> Path:
        """A DuckDB file whose table ``t`` is the version as ``access`` sees it."""

    def replica_file(self, version: Version) -> Path | None:
        """The serving replica of a version (the stored table as it is), if built."""


class Room:
    """One DuckDB database for the readers of one :class:`RoomKey`."""

    def __init__(
        self,
        key: RoomKey,
        folder: Path,
        *,
        limits: Limits,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.key = key
        self.folder = folder
        self.limits = limits
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tmp").mkdir(exist_ok=True)
        config: dict[str, str] = {
            "python_enable_replacements": "false",
            "preserve_insertion_order": "false",
            "max_expression_depth": str(MAX_EXPRESSION_DEPTH),
        }
        if threads:
            config["threads"] = str(threads)
        if memory_limit:
            config["memory_limit"] = memory_limit
        self.db = connect(*(("iceberg",) if key.lake_dirs else ()), config=config)
        self.db.execute("SET allowed_directories=?", [[str(folder), *key.lake_dirs]])
        self.db.execute(f"SET temp_directory={quote_literal(str(folder / 'tmp'))}")
        self.db.execute("SET enable_progress_bar=false")
        self.db.execute("SET enable_external_access=false")
        self.db.execute("SET lock_configuration=true")
        self._lock = threading.Lock()
        self._objects: dict[str, RoomObject] = {}
        self._building: dict[str, threading.Event] = {}
        self.in_use = 0
        self.closed = False
        self.generation = uuid.uuid4().hex[:8]  # plan caches are per room instance

    # -- objects --------------------------------------------------------------------

    def place(self, version: Version, access: Access, loader: Loader) -> RoomObject:
        """The room's object for ``version`` as ``access`` sees it, made if missing; the
        caller holds it (:meth:`release`) while a query uses it."""
        name = f"{version.dataset_id}@v{version.version}#{profile_digest(access)}"
        while True:
            with self._lock:
                obj = self._objects.get(name)
                if obj is not None:
                    if obj.source == "lake":
                        self._to_replica(obj, loader)
                    obj.in_use += 1
                    obj.last_used = time.monotonic()
                    return obj
                waiting = self._building.get(name)
                if waiting is None:
                    self._building[name] = threading.Event()
                    break
            waiting.wait()  # another query is making it: use theirs
        try:
            obj = self._make(name, version, access, loader)
            obj.columns = self._columns(obj.name)
        finally:
            with self._lock:
                self._building.pop(name).set()
        with self._lock:
            obj.in_use += 1
            self._objects[name] = obj
        return obj

    def release(self, obj: RoomObject) -> None:
        with self._lock:
            obj.in_use -= 1
            obj.last_used = time.monotonic()

    def _copies(self) -> int:
        return sum(1 for o in self._objects.values() if o.source == "copy")

    def _make(self, name: str, version: Version, access: Access, loader: Loader) -> RoomObject:
        small = (
            version.total_rows <= self.limits.small_rows and self._copies() < self.limits.max_copies
        )
        owner = access.via == "owner"
        cur = self.db.cursor()
        try:
            if owner and small:
                cur.execute(f"CREATE TABLE {_q(name)} AS {scan_sql(version)}")
                return RoomObject(name, version, profile_digest(access), "copy")
            if owner:
                obj = RoomObject(name, version, profile_digest(access), "replica")
                replica = loader.replica_file(version)
                if replica is not None:
                    try:
                        self._attach(cur, obj, replica)
                        return obj
                    except FileNotFoundError:  # superseded a moment ago: read the lake
                        pass
                cur.execute(f"CREATE VIEW {_q(name)} AS {scan_sql(version)}")
                obj.source = "lake"
                return obj
            if small:
                table = loader.profile_table(version, access)
                cur.register("__bh_load", table)
                try:
                    cur.execute(f"CREATE TABLE {_q(name)} AS SELECT * FROM __bh_load")
                finally:
                    cur.unregister("__bh_load")
                return RoomObject(name, version, profile_digest(access), "copy")
            obj = RoomObject(name, version, profile_digest(access), "file")
            try:
                self._attach(cur, obj, loader.profile_file(version, access))
            except FileNotFoundError:  # superseded and collected a moment ago: again
                self._attach(cur, obj, loader.profile_file(version, access))
            return obj
        finally:
            cur.close()

    def _columns(self, name: str) -> tuple[str, ...]:
        cur = self.db.cursor()
        try:
            return tuple(d[0] for d in cur.execute(f"SELECT * FROM {_q(name)} LIMIT 0").description)
        finally:
            cur.close()

    def _attach(self, cur: duckdb.DuckDBPyConnection, obj: RoomObject, path: Path) -> None:
        """Attach a DuckDB file read-only through a hard link in the room's own folder (the
        room may open no other file) and point the object's view at its table."""
        link = self.folder / f"{uuid.uuid4().hex}.duckdb"
        os.link(path, link)
        alias = f"{obj.name}$f"
        try:
            cur.execute(f"ATTACH {quote_literal(str(link))} AS {_q(alias)} (READ_ONLY)")
            cur.execute(f"CREATE OR REPLACE VIEW {_q(obj.name)} AS SELECT * FROM {_q(alias)}.t")
        except duckdb.Error:
            link.unlink(missing_ok=True)
            raise
        obj.attached, obj.link = alias, link

    def _to_replica(self, obj: RoomObject, loader: Loader) -> None:
        """A lake view of the owner's latest version: attach its replica once it is built
        (a query that bound the view before keeps reading the lake)."""
        replica = loader.replica_file(obj.version)
        if replica is None:
            return
        cur = self.db.cursor()
        try:
            self._attach(cur, obj, replica)
            obj.source = "replica"
        except (duckdb.Error, OSError):
            log.exception("could not attach the replica of %s", obj.name)
        finally:
            cur.close()

    def collect(self, keep: Callable[[RoomObject], bool]) -> int:
        """Drop the objects nobody uses that ``keep`` does not want; returns how many.
        Under the room's lock, so that a query cannot make an object of the same name
        while the old one is being dropped (a drop takes well under a millisecond)."""
        with self._lock:
            gone = [o for o in self._objects.values() if o.in_use == 0 and not keep(o)]
            for o in gone:
                del self._objects[o.name]
                self._drop(o)
        return len(gone)

    def _drop(self, obj: RoomObject) -> None:
        cur = self.db.cursor()
        try:
            kind = "TABLE" if obj.source == "copy" else "VIEW"
            cur.execute(f"DROP {kind} IF EXISTS {_q(obj.name)}")
            if obj.attached:
                cur.execute(f"DETACH DATABASE IF EXISTS {_q(obj.attached)}")
        except duckdb.Error:
            log.exception("could not drop %s from a room", obj.name)
        finally:
            cur.close()
        if obj.link is not None:
            obj.link.unlink(missing_ok=True)

    def objects(self) -> list[RoomObject]:
        with self._lock:
            return list(self._objects.values())

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(duckdb.Error):
            self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def scan_sql(version: Version) -> str:
    """The version read from the lake."""
    location = quote_literal(version.metadata_location)
    return f"SELECT * FROM iceberg_scan({location}, snapshot_from_id={version.snapshot_id})"


class Rooms:
    """The rooms of one exchange: made on first use, at most ``max_rooms`` kept (the least
    recently used one is closed once no query runs in it)."""

    def __init__(
        self,
        folder: Path,
        *,
        small_rows: int,
        max_copies: int,
        max_rooms: int = 32,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.folder = folder
        self.limits = Limits(small_rows, max_copies)
        self.max_rooms = max_rooms
        self.threads = threads
        self.memory_limit = memory_limit
        self._rooms: dict[RoomKey, Room] = {}
        self._retired: list[Room] = []
        self._lock = threading.Lock()
        self._making: dict[RoomKey, threading.Lock] = {}

    def hold(self, key: RoomKey) -> Room:
        with self._lock:
            room = self._rooms.pop(key, None)
            if room is not None:
                self._rooms[key] = room  # most recently used last
                room.in_use += 1
                return room
            making = self._making.setdefault(key, threading.Lock())
        with making:  # one opening per key (an open takes ~10-150 ms), others go on
            with self._lock:
                room = self._rooms.get(key)
                if room is not None:
                    room.in_use += 1
                    return room
            room = self._open(key)
            with self._lock:
                self._retire_stale(key)
                self._rooms[key] = room
                self._evict()
                room.in_use += 1
            return room

    def _open(self, key: RoomKey) -> Room:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:10]
        return Room(
            key,
            self.folder / f"{digest}-{uuid.uuid4().hex[:6]}",
            limits=self.limits,
            threads=self.threads,
            memory_limit=self.memory_limit,
        )

    def _retire_stale(self, key: RoomKey) -> None:
        """A room of the same readers for an older set of table folders is not used again."""
        for other in [k for k in self._rooms if (k.agency, k.admin) == (key.agency, key.admin)]:
            self._retire(self._rooms.pop(other))

    def _evict(self) -> None:
        while len(self._rooms) > self.max_rooms:
            oldest = next(iter(self._rooms))
            self._retire(self._rooms.pop(oldest))

    def _retire(self, room: Room) -> None:
        if room.in_use == 0:
            room.close()
        else:
            self._retired.append(room)

    def leave(self, room: Room) -> None:
        """A query in ``room`` ended."""
        with self._lock:
            room.in_use -= 1
            if room.in_use == 0 and room in self._retired:
                self._retired.remove(room)
                room.close()

    def all(self) -> list[Room]:
        with self._lock:
            return list(self._rooms.values())

    def close(self) -> None:
        with self._lock:
            rooms = [*self._rooms.values(), *self._retired]
            self._rooms.clear()
            self._retired.clear()
        for room in rooms:
            room.close()
