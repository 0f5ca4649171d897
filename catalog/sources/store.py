"""What an agency may read: file roots and connection profiles, configured by an admin.

A manifest names ``source.root`` (a file root of its agency) plus a relative
``source.options.path``, or ``source.profile`` (a connection profile of its agency: a
database, an HTTP API, an MQTT broker).  It never names a host, a URL, a file path of
its own or a secret, and cannot read the environment.  The guard
(:mod:`catalog.sources.guard`) turns a manifest into the connector's options — at
registration, and
again at every read, so a root or profile removed, a symlink swapped in, or a manifest
stored before these rules all meet the same check — or refuses it with a
:class:`~catalog.errors.SourceRefused` naming the file and the field.

Roots and profiles live in the catalog database (docs/decisions.md, "D-sources"):
settings in ``settings_json``, secrets in ``secrets_json``, which no listing, API answer,
log line or error message shows.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import DateTime, String, Text, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Mapped, mapped_column

from catalog.audit.log import AuditTx
from catalog.datasets.manifest import _ID
from catalog.datasets.store import CatalogStore
from catalog.db import Base, utcnow
from catalog.errors import Conflict, InvalidRequest, NotFound
from catalog.identity.store import SYSTEM, Actor, record_as
from catalog.sources.locations import (
    DatabaseTarget,
    HttpOrigin,
    forbidden_address,
    normalize_s3,
    overlaps,
)

SourceKind = Literal["files", "postgres", "mysql", "http", "mqtt", "none", "custom"]
PROFILE_KINDS: tuple[str, ...] = ("postgres", "mysql", "http", "mqtt", "custom")

#: The source kind of each built-in connector; any other (third-party) name is "custom":
#: the hub cannot know what its options name, so everything comes from a profile.
BUILTIN_KINDS: dict[str, str] = {
    "csv": "files",
    "excel": "files",
    "json": "files",
    "parquet": "files",
    "postgres": "postgres",
    "mysql": "mysql",
    "http_api": "http",
    "mqtt": "mqtt",
    "push": "none",
    "gbt2260": "none",
}

_FEED_OPTIONS = {"topics", "qos", "flush_rows", "flush_seconds"}
#: Options a manifest may set, per kind.  Everything else is refused: an allowlist, so
#: that a new libpq keyword or reader option cannot become a way to name a location.
MANIFEST_OPTIONS: dict[str, frozenset[str]] = {
    "files": frozenset(
        {
            "path",
            "encoding",
            "null_values",
            "rename",
            "time_zone",
            "timestamp_format",
            "date_format",
            "delimiter",
            "quote",
            "header",
            "skip_rows",
            "sheet",
        }
    ),
    "postgres": frozenset({"table", "query", "connect_timeout_s", "statement_timeout_s"}),
    "mysql": frozenset({"table", "query", "time_zone"}),
    "http": frozenset(
        {"path", "params", "records", "pagination", "since_param", "retry", "rate_limit"}
        | {"timeout_s"}
    ),
    "mqtt": frozenset(_FEED_OPTIONS),
    "none": frozenset(_FEED_OPTIONS),
    "custom": frozenset(),
}

WHY_NOT: dict[str, str] = {
    "dsn": "the database is the connection profile's (source.profile); secrets live there",
    "url": "the URL is the profile's base_url plus source.options.path",
    "headers": "headers (and the secrets in them) live in the connection profile",
    "host": "the server is the connection profile's (source.profile)",
    "port": "the server is the connection profile's (source.profile)",
    "username": "credentials live in the connection profile",
    "user": "credentials live in the connection profile",
    "password": "credentials live in the connection profile",
    "s3": "the bucket, endpoint and keys are the file root's (source.root)",
    "root": "name the root in source.root",
    "client_id": "the hub names its MQTT session itself (blockhub-<installation>-<feed>): a "
    "chosen id could take over another feed's persistent session and its subscriptions",
}

#: Settings (shown) and secrets (never shown) each profile kind takes.
PROFILE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    # kind: (required settings, optional settings, secrets)
    "postgres": (
        frozenset({"host", "database"}),
        frozenset({"port", "user", "sslmode"}),
        frozenset({"password"}),
    ),
    "mysql": (
        frozenset({"host", "database"}),
        frozenset({"port", "user"}),
        frozenset({"password"}),
    ),
    "http": (frozenset({"base_url"}), frozenset({"verify_tls"}), frozenset({"headers"})),
    "mqtt": (
        frozenset({"host"}),
        frozenset({"port", "topic_prefix", "username"}),
        frozenset({"password"}),
    ),
    "custom": (frozenset(), frozenset(), frozenset()),
}
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SAFE_WORD = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:")


def connector_kind(name: str) -> str:
    return BUILTIN_KINDS.get(name, "custom")


# -- storage ---------------------------------------------------------------------------


class SourceRootRow(Base):
    __tablename__ = "source_roots"
    agency_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(Text)
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    secrets_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SourceProfileRow(Base):
    __tablename__ = "source_profiles"
    agency_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    secrets_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class FileRoot:
    """A folder (its real path) or ``s3://bucket/prefix`` an agency's manifests may read."""

    agency: str
    name: str
    location: str
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def public(self) -> dict[str, Any]:
        """What listings show: settings, and only the names of the secrets."""
        return {
            "agency": self.agency,
            "name": self.name,
            "location": self.location,
            "settings": dict(self.settings),
            "secrets": sorted(self.secrets),
        }


@dataclass(frozen=True)
class Profile:
    """A connection an agency's manifests may use: a database, an HTTP API, a broker."""

    agency: str
    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "agency": self.agency,
            "name": self.name,
            "kind": self.kind,
            "settings": dict(self.settings),
            "secrets": sorted(self.secrets),
        }

    @property
    def target(self) -> str:
        """Where it points, for audit entries and messages (never a secret)."""
        s = self.settings
        if self.kind in ("postgres", "mysql"):
            port = f":{s['port']}" if s.get("port") else ""
            return f"{self.kind}://{s['host']}{port}/{s['database']}"
        if self.kind == "http":
            return str(s["base_url"])
        if self.kind == "mqtt":
            prefix = f"/{s['topic_prefix']}" if s.get("topic_prefix") else ""
            return f"mqtt://{s['host']}:{s.get('port', 1883)}{prefix}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Protected:
    """The hub's own places, never a source: real paths (home, lake, database files),
    S3 prefixes (an S3 warehouse) and databases (catalog, lake catalog, event log)."""

    paths: tuple[str, ...] = ()
    s3: tuple[str, ...] = ()
    databases: tuple[DatabaseTarget, ...] = ()


def _check_profile_fields(
    kind: str, settings: Mapping[str, Any], secrets: Mapping[str, Any]
) -> None:
    if kind not in PROFILE_FIELDS:
        raise InvalidRequest(
            f"unknown profile kind {kind!r}; allowed: {', '.join(PROFILE_KINDS)}", field="kind"
        )
    required, optional, secret_names = PROFILE_FIELDS[kind]
    if kind == "custom":
        return
    unknown = sorted(set(settings) - required - optional)
    if unknown:
        raise InvalidRequest(
            f"a {kind} profile has no setting(s) {', '.join(unknown)}; settings: "
            f"{', '.join(sorted(required | optional))}",
            field=unknown[0],
        )
    missing = sorted(required - set(settings))
    if missing:
        raise InvalidRequest(f"a {kind} profile needs {', '.join(missing)}", field=missing[0])
    bad_secrets = sorted(set(secrets) - secret_names)
    if bad_secrets:
        raise InvalidRequest(
            f"a {kind} profile has no secret(s) {', '.join(bad_secrets)}; secrets: "
            f"{', '.join(sorted(secret_names)) or 'none'}",
            field=bad_secrets[0],
        )
    if "port" in settings:
        try:
            port = int(settings["port"])
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise InvalidRequest("port must be a number from 1 to 65535", field="port")
    for key in ("host", "database", "user", "username"):
        value = settings.get(key)
        if value is not None and (not str(value) or not set(str(value)) <= _SAFE_WORD):
            raise InvalidRequest(
                f"{key} may hold only letters, digits and . _ - : (got {value!r})", field=key
            )
    host = str(settings.get("host", ""))
    if host.startswith(("/", ".")):
        raise InvalidRequest("host must be a server name or address, not a path", field="host")
    if kind == "postgres" and settings.get("sslmode", "prefer") not in _SSLMODES:
        raise InvalidRequest(f"sslmode must be one of {', '.join(_SSLMODES)}", field="sslmode")
    if kind == "mysql" and any(ch.isspace() for ch in str(secrets.get("password", ""))):
        raise InvalidRequest("a mysql profile's password may not hold spaces", field="password")
    if kind == "http":
        try:
            HttpOrigin.parse(str(settings["base_url"]))
        except ValueError as e:
            raise InvalidRequest(str(e), field="base_url") from None
        headers = secrets.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidRequest("headers must map names to text values", field="headers")
    if kind == "mqtt":
        prefix = str(settings.get("topic_prefix", ""))
        if any(ch in prefix for ch in "#+\x00") or prefix.startswith(("$", "/")):
            raise InvalidRequest(
                "topic_prefix may not hold wildcards or start with $ or /", field="topic_prefix"
            )


class SourceStore:
    """File roots and connection profiles per agency, in the catalog database."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        for model in (SourceRootRow, SourceProfileRow):
            # Another process opening the same catalog may create it meanwhile.
            with contextlib.suppress(OperationalError, ProgrammingError):
                model.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]

    # -- roots ---------------------------------------------------------------------

    def add_root(
        self,
        agency: str,
        name: str,
        location: str,
        *,
        protected: Protected,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
        by: Actor = SYSTEM,
    ) -> FileRoot:
        """Add (or move) a root.  A local folder is stored as its real path and must
        exist; no root may overlap the hub's own places or another agency's root.
        Recorded (``source.config``, ``root.add``) with the root before and after, the
        names of its secrets and never their values."""
        self.store.identity.get_agency(agency)
        _check_name(name)
        settings = dict(settings or {})
        secrets = dict(secrets or {})
        if location.startswith("s3://"):
            try:
                key = normalize_s3(location)
            except ValueError as e:
                raise InvalidRequest(str(e), field="location") from None
            location = "s3://" + key
            unknown = sorted(set(settings) - {"endpoint", "region"}) + sorted(
                set(secrets) - {"access_key", "secret_key"}
            )
            if unknown:
                raise InvalidRequest(
                    f"an S3 root takes endpoint, region, access_key and secret_key, not "
                    f"{', '.join(unknown)}",
                    field=unknown[0],
                )
            for p in protected.s3:
                if overlaps(key, p):
                    raise InvalidRequest(
                        f"{location} overlaps the hub's own storage s3://{p}", field="location"
                    )
        else:
            if settings or secrets:
                raise InvalidRequest("a local root takes no settings or secrets", field="location")
            if not os.path.isabs(location):
                raise InvalidRequest("a local root must be an absolute path", field="location")
            real = os.path.realpath(location)
            if not os.path.isdir(real):
                raise InvalidRequest(f"{location} is not a folder", field="location")
            for p in protected.paths:
                if overlaps(real, p):
                    raise InvalidRequest(
                        f"{location} ({real}) overlaps the hub's own {p}; a root holds only "
                        "an agency's exports",
                        field="location",
                    )
            location = real
        for other in self.roots():
            if other.agency != agency and _roots_overlap(location, other.location):
                raise Conflict(
                    f"{location} overlaps root {other.name!r} of agency {other.agency!r}",
                    field="location",
                )
        root = FileRoot(agency, name, location, settings, secrets)
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(SourceRootRow, (agency, name))
            before = _root(row).public() if row is not None else None
            if row is None:
                row = SourceRootRow(agency_id=agency, name=name)
                s.add(row)
            row.location = location
            row.settings_json = json.dumps(settings, sort_keys=True)
            row.secrets_json = json.dumps(secrets, sort_keys=True)
            _config_entry(tx, by, "root.add", "source_roots", before, root.public())
        return root

    def remove_root(self, agency: str, name: str, *, by: Actor = SYSTEM) -> None:
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(SourceRootRow, (agency, name))
            if row is None:
                raise NotFound(f"agency {agency!r} has no root {name!r}", agency=agency, root=name)
            before = _root(row).public()
            s.delete(row)
            _config_entry(tx, by, "root.remove", "source_roots", before, None)

    def roots(self, agency: str | None = None) -> list[FileRoot]:
        q = select(SourceRootRow).order_by(SourceRootRow.agency_id, SourceRootRow.name)
        if agency is not None:
            q = q.where(SourceRootRow.agency_id == agency)
        with self.store.session() as s:
            return [_root(r) for r in s.scalars(q)]

    def get_root(self, agency: str, name: str) -> FileRoot | None:
        with self.store.session() as s:
            row = s.get(SourceRootRow, (agency, name))
            return _root(row) if row is not None else None

    # -- profiles --------------------------------------------------------------------

    def add_profile(
        self,
        agency: str,
        name: str,
        kind: str,
        *,
        protected: Protected,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
        by: Actor = SYSTEM,
    ) -> Profile:
        """Add (or replace) a profile; a database profile may not name the hub's own.
        Recorded (``source.config``, ``profile.add``) like a root."""
        self.store.identity.get_agency(agency)
        _check_name(name)
        settings = dict(settings or {})
        secrets = dict(secrets or {})
        if "port" in settings:
            settings["port"] = _int(settings["port"])
        _check_profile_fields(kind, settings, secrets)
        profile = Profile(agency, name, kind, settings, secrets)
        problem = profile_problem(profile, protected)
        if problem:
            raise InvalidRequest(problem, field="host")
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(SourceProfileRow, (agency, name))
            before = _profile_view(profile_of(row)) if row is not None else None
            if row is None:
                row = SourceProfileRow(agency_id=agency, name=name)
                s.add(row)
            row.kind = kind
            row.settings_json = json.dumps(settings, sort_keys=True)
            row.secrets_json = json.dumps(secrets, sort_keys=True)
            after = _profile_view(profile)
            _config_entry(tx, by, "profile.add", "source_profiles", before, after)
        return profile

    def remove_profile(self, agency: str, name: str, *, by: Actor = SYSTEM) -> None:
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(SourceProfileRow, (agency, name))
            if row is None:
                raise NotFound(
                    f"agency {agency!r} has no profile {name!r}", agency=agency, profile=name
                )
            before = _profile_view(profile_of(row))
            s.delete(row)
            _config_entry(tx, by, "profile.remove", "source_profiles", before, None)

    def profiles(self, agency: str | None = None) -> list[Profile]:
        q = select(SourceProfileRow).order_by(SourceProfileRow.agency_id, SourceProfileRow.name)
        if agency is not None:
            q = q.where(SourceProfileRow.agency_id == agency)
        with self.store.session() as s:
            return [profile_of(r) for r in s.scalars(q)]

    def get_profile(self, agency: str, name: str) -> Profile | None:
        with self.store.session() as s:
            row = s.get(SourceProfileRow, (agency, name))
            return profile_of(row) if row is not None else None


def _profile_view(p: Profile) -> dict[str, Any]:
    """A profile as its audit entry shows it: where it points and the names of its
    secrets (custom profiles' settings may hold anything, so only their keys)."""
    view = {**p.public(), "target": p.target}
    if p.kind == "custom":
        view["settings"] = sorted(p.settings)
    return view


def _config_entry(
    tx: AuditTx,
    by: Actor,
    op: str,
    table_name: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """``source.config``: an admin changed what an agency's manifests may read (never a
    secret's value: the views name secrets only)."""
    about = after or before
    assert about is not None
    detail: dict[str, Any] = {"op": op, "agency": about["agency"], "name": about["name"]}
    if before is not None:
        detail["before"] = before
    if after is not None:
        detail["after"] = after
    record_as(
        tx,
        by,
        action="source.config",
        detail=detail,
        binds=[(table_name, (about["agency"], about["name"]))],
    )


def _int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _check_name(name: str) -> None:
    if not _ID.match(name):
        raise InvalidRequest(
            f"{name!r}: a root or profile name starts with a-z and holds a-z, 0-9 and _",
            field="name",
        )


def _roots_overlap(a: str, b: str) -> bool:
    if a.startswith("s3://") != b.startswith("s3://"):
        return False
    if a.startswith("s3://"):
        return overlaps(a[len("s3://") :], b[len("s3://") :])
    return overlaps(a, b)


def _root(r: SourceRootRow) -> FileRoot:
    return FileRoot(
        r.agency_id, r.name, r.location, json.loads(r.settings_json), json.loads(r.secrets_json)
    )


def profile_of(r: SourceProfileRow) -> Profile:
    return Profile(
        r.agency_id, r.name, r.kind, json.loads(r.settings_json), json.loads(r.secrets_json)
    )


def profile_problem(profile: Profile, protected: Protected) -> str | None:
    """Why a profile may not be used (now): it names the hub's own database, or a host
    no source may reach.  None when it may."""
    s = profile.settings
    if profile.kind in ("postgres", "mysql"):
        target = DatabaseTarget(str(s["host"]), s.get("port"), str(s["database"]))
        default = 5432 if profile.kind == "postgres" else 3306
        for own in protected.databases:
            mine = DatabaseTarget(target.host, target.port or default, target.database)
            if own.same_as(mine):
                return f"{profile.target} is the hub's own database; it is never a source"
        return forbidden_address(str(s["host"]))
    if profile.kind == "http":
        return forbidden_address(HttpOrigin.parse(str(s["base_url"])).host)
    if profile.kind == "mqtt":
        return forbidden_address(str(s["host"]))
    return None
