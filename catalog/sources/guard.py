"""The source guard: a manifest's source resolved against its agency's file roots and
connection profiles (:mod:`catalog.sources.store`) into the options its connector gets —
at registration and again at every read — or refused naming the file and the field.

Also the connection strings made from a profile (``postgres_dsn``, ``mysql_dsn``) and the
hub's own databases that no profile may name (``protected_places``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from catalog.audit.log import AuditLog
from catalog.datasets.manifest import Manifest
from catalog.errors import SourceRefused
from catalog.sources.locations import (
    Confinement,
    DatabaseTarget,
    HttpOrigin,
    LocationRefused,
    deepest_existing,
    devices,
    is_within,
    overlaps,
    posix_join,
    relative_path_problem,
    s3_key_problem,
    split_pattern,
    url_path_problem,
)
from catalog.sources.store import (
    MANIFEST_OPTIONS,
    WHY_NOT,
    FileRoot,
    Protected,
    SourceStore,
    connector_kind,
    profile_problem,
)


@dataclass(frozen=True)
class ResolvedSource:
    """A manifest's source as the connector gets it.

    ``options`` may hold secrets (from the profile or root): it is handed to the
    connector and to nothing else.  ``location`` says where the read goes, for the audit
    log and for messages.
    """

    connector: str
    kind: str
    options: dict[str, Any] = field(repr=False)
    location: str
    root: str | None = None
    profile: str | None = None
    confinement: Confinement | None = None
    s3_prefix: str | None = None
    origin: HttpOrigin | None = None

    def audit_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"connector": self.connector, "location": self.location}
        if self.root:
            detail["root"] = self.root
        if self.profile:
            detail["profile"] = self.profile
        return detail


def _env_refs(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        return [path] if "${" in value else []
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _env_refs(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _env_refs(v, f"{path}[{i}]")]
    return []


def source_problems(manifest: Manifest) -> list[dict[str, Any]]:
    """What is wrong with a manifest's source on its own (no roots or profiles needed):
    the problems ``blockhub validate`` reports and registration refuses."""
    src = manifest.source
    kind = connector_kind(src.connector)
    problems: list[dict[str, Any]] = []

    def bad(field_: str, message: str) -> None:
        problems.append({"field": field_, "message": message})

    for where in _env_refs(src.options, "source.options"):
        bad(
            where,
            "holds an environment reference (${...}); manifests cannot read the "
            "environment: secrets live in the connection profile (source.profile)",
        )
    allowed = MANIFEST_OPTIONS[kind]
    for key in sorted(set(src.options) - allowed):
        why = WHY_NOT.get(key) or (
            f"not an option a manifest may set for connector {src.connector!r}; allowed: "
            f"{', '.join(sorted(allowed)) or 'none (a third-party connector takes everything '}"
            + ("from its profile)" if not allowed else "")
        )
        bad(f"source.options.{key}", why)
    if kind == "files":
        if src.profile:
            bad("source.profile", "a file source reads a root (source.root), not a profile")
        if not src.root:
            bad(
                "source.root",
                f"connector {src.connector!r} reads files: name one of your "
                "agency's file roots here, and the path inside it in source.options.path",
            )
        if "path" not in src.options:
            bad("source.options.path", "required: the file or pattern inside the root")
        else:
            problem = relative_path_problem(src.options["path"])
            if problem:
                bad("source.options.path", problem)
    elif kind == "none":
        if src.root:
            bad("source.root", f"connector {src.connector!r} reads no files")
        if src.profile:
            bad("source.profile", f"connector {src.connector!r} takes no profile")
    else:
        if src.root:
            bad("source.root", f"connector {src.connector!r} uses a profile, not a file root")
        if not src.profile:
            bad(
                "source.profile",
                f"connector {src.connector!r} needs one of your agency's "
                "connection profiles: the server and its secrets live there",
            )
        if kind == "http" and "path" in src.options:
            problem = url_path_problem(src.options["path"])
            if problem:
                bad("source.options.path", problem)
        if kind in ("mqtt", "none"):
            for i, topic in enumerate(src.options.get("topics") or []):
                if not isinstance(topic, str) or not topic or topic.startswith(("$", "/")):
                    bad(
                        f"source.options.topics[{i}]",
                        "a topic filter is relative to the "
                        "profile's topic_prefix and may not start with $ or /",
                    )
    return problems


class SourceGuard:
    """Resolves manifests' sources against the agency's roots and profiles, or refuses.

    Built at the edge with the hub's own places (:class:`Protected`); called when a
    manifest is registered (:meth:`check`) and each time a source is opened
    (:meth:`resolve`).
    """

    def __init__(
        self, sources: SourceStore, protected: Protected, audit: AuditLog | None = None
    ) -> None:
        self.sources = sources
        self.protected = protected
        self.audit = audit

    def record(
        self,
        manifest: Manifest,
        resolved: ResolvedSource | None,
        *,
        outcome: str = "ok",
        run_id: str | None = None,
        trigger: str | None = None,
        reason: str | None = None,
        principal: str = "hub",
    ) -> None:
        """Put a source read on the audit chain (action ``source.read``): the agency, the
        dataset and the resolved location (never a secret); ``denied`` with the reason
        when the read was refused."""
        if self.audit is None:
            return
        detail: dict[str, Any] = (
            resolved.audit_detail()
            if resolved is not None
            else {"connector": manifest.source.connector}
        )
        if resolved is None and manifest.source.root:
            detail["root"] = manifest.source.root
        if resolved is None and manifest.source.profile:
            detail["profile"] = manifest.source.profile
        for key, value in (("run", run_id), ("trigger", trigger), ("reason", reason)):
            if value is not None:
                detail[key] = value
        self.audit.append(
            action="source.read",
            principal=principal,
            agency=manifest.agency,
            datasets={manifest.id: None},
            dataset_agencies={manifest.id: manifest.agency},
            outcome=outcome,
            detail=detail,
        )

    def check(self, manifest: Manifest, *, file: str) -> ResolvedSource:
        """Resolve at registration: refused → :class:`SourceRefused` (nothing registered)."""
        return self.resolve(manifest, file=file)

    def resolve(self, manifest: Manifest, *, file: str | None = None) -> ResolvedSource:
        where = file or f"<dataset {manifest.id}>"
        problems = source_problems(manifest)
        if problems:
            raise SourceRefused(where, problems)
        src = manifest.source
        kind = connector_kind(src.connector)
        try:
            if kind == "files":
                assert src.root is not None
                return self._files(manifest, src.root, str(src.options["path"]))
            if kind == "none":
                return ResolvedSource(src.connector, kind, dict(src.options), src.connector)
            assert src.profile is not None
            return self.profile_of(manifest, kind, src.profile)
        except _Refusal as e:
            raise SourceRefused(where, [{"field": e.field, "message": e.message}]) from None

    # -- files -------------------------------------------------------------------

    def _denied_for(self, agency: str) -> list[str]:
        others = [
            r.location
            for r in self.sources.roots()
            if r.agency != agency and not r.location.startswith("s3://")
        ]
        return [*self.protected.paths, *others]

    def _files(self, manifest: Manifest, root_name: str, rel: str) -> ResolvedSource:
        root = self.sources.get_root(manifest.agency, root_name)
        if root is None:
            names = [r.name for r in self.sources.roots(manifest.agency)]
            raise _Refusal(
                "source.root",
                f"agency {manifest.agency!r} has no file root {root_name!r} "
                f"(its roots: {', '.join(names) or 'none'}; an admin adds one with "
                "`blockhub source root add`)",
            )
        options = {k: v for k, v in manifest.source.options.items() if k != "path"}
        if root.is_s3:
            return self._s3(manifest, root, rel, options)
        denied = self._denied_for(manifest.agency)
        confinement = Confinement(
            root=root.location, denied=tuple(denied), link_devices=devices(denied)
        )
        for d in denied:
            if is_within(root.location, d):
                raise _Refusal(
                    "source.root",
                    f"root {root_name!r} ({root.location}) is inside {d}, which is never a source",
                )
        if os.path.realpath(root.location) != root.location:
            raise _Refusal(
                "source.root",
                f"root {root_name!r} ({root.location}) has been replaced by a link since it "
                "was configured; an admin must add it again",
            )
        full = posix_join(root.location, rel)
        fixed, rest = split_pattern(rel)
        base = posix_join(root.location, fixed)
        # The deepest existing folder on the way (a new export folder may not exist yet).
        real = deepest_existing(base)
        try:
            confinement.check_real(real, f"source.options.path {rel!r}")
            if not rest and os.path.lexists(base):
                confinement.check_real(os.path.realpath(base), f"source.options.path {rel!r}")
        except LocationRefused as e:
            raise _Refusal("source.options.path", e.reason) from None
        return ResolvedSource(
            manifest.source.connector,
            "files",
            {**options, "path": full},
            location=full,
            root=root_name,
            confinement=confinement,
        )

    def _s3(
        self, manifest: Manifest, root: FileRoot, rel: str, options: dict[str, Any]
    ) -> ResolvedSource:
        prefix = root.location[len("s3://") :]
        key = posix_join(prefix, rel)
        problem = s3_key_problem(key)
        if problem or not is_within(key, prefix):
            raise _Refusal("source.options.path", f"{rel!r} leaves the root s3://{prefix}")
        for p in self.protected.s3:
            if overlaps(key, p):
                raise _Refusal("source.options.path", f"s3://{key} is the hub's own storage")
        s3 = {**root.settings, **root.secrets}
        return ResolvedSource(
            manifest.source.connector,
            "files",
            {**options, "path": "s3://" + key, "s3": s3},
            location="s3://" + key,
            root=root.name,
            s3_prefix=prefix,
        )

    # -- profiles ----------------------------------------------------------------

    def profile_of(self, manifest: Manifest, kind: str, name: str) -> ResolvedSource:
        profile = self.sources.get_profile(manifest.agency, name)
        if profile is None:
            names = [p.name for p in self.sources.profiles(manifest.agency)]
            raise _Refusal(
                "source.profile",
                f"agency {manifest.agency!r} has no connection profile {name!r} (its profiles: "
                f"{', '.join(names) or 'none'}; an admin adds one with "
                "`blockhub source profile add`)",
            )
        if profile.kind != kind:
            raise _Refusal(
                "source.profile",
                f"profile {name!r} is a {profile.kind} profile; connector "
                f"{manifest.source.connector!r} needs a {kind} one",
            )
        problem = profile_problem(profile, self.protected)
        if problem:
            raise _Refusal("source.profile", problem)
        options = dict(manifest.source.options)
        s, secrets = profile.settings, profile.secrets
        origin = None
        if kind == "postgres":
            options["dsn"] = postgres_dsn(s, secrets)
        elif kind == "mysql":
            options["dsn"] = mysql_dsn(s, secrets)
        elif kind == "http":
            origin = HttpOrigin.parse(str(s["base_url"]))
            options["url"] = origin.join(str(options.pop("path", "") or ""))
            options["headers"] = dict(secrets.get("headers", {}))
            if "verify_tls" in s:
                options["verify_tls"] = bool(s["verify_tls"])
        elif kind == "mqtt":
            prefix = str(s.get("topic_prefix", "")).strip("/")
            topics = [str(t) for t in options.get("topics") or []]
            options["topics"] = [f"{prefix}/{t}" if prefix else t for t in topics]
            options["host"] = str(s["host"])
            options["port"] = int(s.get("port", 1883))
            if "username" in s:
                options["username"] = str(s["username"])
            if "password" in secrets:
                options["password"] = str(secrets["password"])
        else:  # custom: the profile is the whole configuration
            options = {**s, **secrets}
        location = options["url"] if kind == "http" else profile.target
        return ResolvedSource(
            manifest.source.connector,
            kind,
            options,
            location=str(location).split("?")[0],
            profile=name,
            origin=origin,
        )


class _Refusal(Exception):
    def __init__(self, field_: str, message: str) -> None:
        super().__init__(message)
        self.field = field_
        self.message = message


def _pg_quote(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def postgres_dsn(settings: Mapping[str, Any], secrets: Mapping[str, Any]) -> str:
    """A libpq connection string built only from a profile's known fields, every value
    quoted: nothing in it can add a keyword (``passfile``, ``service``, ``sslrootcert``)."""
    parts = [f"host={_pg_quote(settings['host'])}", f"dbname={_pg_quote(settings['database'])}"]
    if settings.get("port"):
        parts.append(f"port={int(settings['port'])}")
    if settings.get("user"):
        parts.append(f"user={_pg_quote(settings['user'])}")
    if secrets.get("password"):
        parts.append(f"password={_pg_quote(secrets['password'])}")
    if settings.get("sslmode"):
        parts.append(f"sslmode={_pg_quote(settings['sslmode'])}")
    return " ".join(parts)


def mysql_dsn(settings: Mapping[str, Any], secrets: Mapping[str, Any]) -> str:
    """DuckDB's mysql connection string from a profile (its values were checked to hold no
    space, so none can add a keyword such as ``ssl_ca``)."""
    parts = [f"host={settings['host']}", f"database={settings['database']}"]
    if settings.get("port"):
        parts.append(f"port={int(settings['port'])}")
    if settings.get("user"):
        parts.append(f"user={settings['user']}")
    if secrets.get("password"):
        parts.append(f"password={secrets['password']}")
    return " ".join(parts)


def protected_places(
    *,
    home: str,
    files: Iterable[str] = (),
    warehouse: str | None = None,
    database_urls: Iterable[str] = (),
) -> Protected:
    """The hub's own places from its settings: the home folder, local database files and
    lake, an S3 warehouse, and databases named by URL (SQLAlchemy URLs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    paths = {os.path.realpath(home)}
    s3: list[str] = []
    dbs: list[DatabaseTarget] = []
    for f in files:
        paths.add(os.path.realpath(f))
    if warehouse:
        if warehouse.startswith("s3://"):
            s3.append(warehouse[len("s3://") :].strip("/"))
        elif warehouse.startswith("file://"):
            paths.add(os.path.realpath(warehouse[len("file://") :]))
        elif "://" not in warehouse:
            paths.add(os.path.realpath(warehouse))
    for url in database_urls:
        try:
            u = make_url(url)
        except ArgumentError:
            continue
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                paths.add(os.path.realpath(u.database))
        elif u.host and u.database:
            dbs.append(DatabaseTarget(u.host, u.port, u.database))
    return Protected(tuple(sorted(paths)), tuple(s3), tuple(dbs))
