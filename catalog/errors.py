"""The one error family of blockhub.

Every error a user can cause or meet is a :class:`HubError` subclass that carries
its context as attributes.  The HTTP layer maps them to a status code and one
JSON body (``hub.api.common.errors``); the CLI prints ``error.message`` and the detail.
"""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Root of every blockhub error."""

    code: str = "error"
    status: int = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = {k: v for k, v in detail.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class ManifestError(HubError):
    """A dataset manifest is malformed; names the file, the field and what is allowed."""

    code = "invalid_manifest"
    status = 422

    def __init__(self, file: str, problems: list[dict[str, Any]]) -> None:
        lines = [f"{p['field']}: {p['message']}" for p in problems]
        super().__init__(f"{file}: " + "; ".join(lines), file=file, problems=problems)
        self.file = file
        self.problems = problems


class SourceRefused(ManifestError):
    """A manifest's source names what its agency was not given (docs/security.md,
    "Sources"): a path outside the agency's file roots, an unknown root or profile, a
    location or secret of its own.  Names the file and field; nothing is registered or read.
    """

    code = "source_refused"
    status = 403


class ConfigError(HubError):
    """A setting that cannot work, naming the variable: the process refuses to start."""

    code = "config_error"
    status = 500


class InvalidRequest(HubError):
    code = "invalid_request"
    status = 400


class Unauthenticated(HubError):
    code = "unauthenticated"
    status = 401


class AccessDenied(HubError):
    code = "forbidden"
    status = 403


class NotFound(HubError):
    code = "not_found"
    status = 404


class DatasetNotFound(NotFound):
    code = "dataset_not_found"

    def __init__(self, dataset: str) -> None:
        super().__init__(f"no dataset {dataset!r}", dataset=dataset)
        self.dataset = dataset


class VersionNotFound(NotFound):
    code = "version_not_found"

    def __init__(self, dataset: str, version: int) -> None:
        super().__init__(
            f"dataset {dataset!r} has no version {version}", dataset=dataset, version=version
        )


class Conflict(HubError):
    code = "conflict"
    status = 409


class QueryRejected(HubError):
    """User SQL that the sandbox refuses before it runs."""

    code = "query_rejected"
    status = 400


class QueryFailed(HubError):
    """User SQL that DuckDB refused or could not finish."""

    code = "query_failed"
    status = 400


class QueryTimeout(HubError):
    code = "query_timeout"
    status = 408


class ConnectorError(HubError):
    """A source could not be read: names the source and the reason."""

    code = "connector_error"
    status = 502

    def __init__(self, message: str, *, connector: str, dataset: str | None = None, **kw: Any):
        super().__init__(message, connector=connector, dataset=dataset, **kw)
        self.connector = connector


class SchemaDrift(HubError):
    code = "schema_drift"
    status = 409


class SuiteInvalid(HubError):
    """An expectation suite file is malformed or uses what the gate cannot run."""

    code = "invalid_suite"
    status = 422


class ServiceUnavailable(HubError):
    """A server blockhub depends on (the catalog database, the event log's Redis, the
    lake's catalog) cannot be reached right now; the same request may succeed later.
    Answered as 503 with ``Retry-After``; the detail names the service, never its
    address or credentials (those go to the server log)."""

    code = "service_unavailable"
    status = 503

    def __init__(self, service: str, *, retry_after_s: int = 5, **detail: Any) -> None:
        super().__init__(
            f"the {service} is unavailable; try again in a few seconds",
            service=service,
            retry_after_s=retry_after_s,
            **detail,
        )
        self.service = service
        self.retry_after_s = retry_after_s


class CommitUnsettled(ServiceUnavailable):
    """A run's lake commit may have landed but the catalog could not record it (the
    catalog or the lake's catalog went away mid-commit).  Nothing was deleted: the next
    run of the dataset, or the hub's sweep of expired runs, records the version if the
    commit landed and closes the run either way."""

    code = "commit_unsettled"

    def __init__(self, dataset: str, run: str, service: str = "catalog database") -> None:
        super().__init__(service, dataset=dataset, run=run)
        self.message = (
            f"the {service} went away while run {run} of {dataset!r} was committing; "
            "nothing was deleted, and the run is settled (its version recorded if the commit "
            "landed) once the catalog is back"
        )


# Drivers' errors that mean "the server is not there right now", by module and class name:
# catalog imports none of the drivers (redis-py only comes with a Redis event log).
# Connection exception; insufficient resources (too many connections); the server shutting
# down or starting up.
_UNAVAILABLE_SQLSTATE = ("08", "53", "57P")


def unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The :class:`ServiceUnavailable` an exception of a driver means, or None when it means
    something else (a bug, bad SQL, a constraint) and is an internal error.

    Covers SQLAlchemy's connection errors (PostgreSQL refused, shut down, the connection
    lost mid-query; SQLite busy or locked past its timeout), the event log's own
    :class:`~eventlog.message.LogUnavailable`, and redis-py's connection and timeout errors
    (a Redis down, restarting or still loading its data)."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # the error, or what it was raised from
        seen.add(id(e))
        found = _classify(e)
        if found is not None:
            return found
        e = e.__cause__ or e.__context__
    return None


def _classify(e: BaseException) -> ServiceUnavailable | None:
    mod, name = type(e).__module__, type(e).__name__
    if name == "LogUnavailable" or (
        mod.startswith("redis") and name in ("ConnectionError", "TimeoutError", "BusyLoadingError")
    ):
        return ServiceUnavailable("event log")
    if mod.startswith("sqlalchemy"):
        if getattr(e, "connection_invalidated", False):
            return ServiceUnavailable("catalog database")
        orig = getattr(e, "orig", None)
        if orig is not None:
            return _classify_driver(orig)
        if name in ("DisconnectionError", "TimeoutError"):  # the pool's own
            return ServiceUnavailable("catalog database")
    return _classify_driver(e)


def _classify_driver(e: BaseException) -> ServiceUnavailable | None:
    mod, name = type(e).__module__, type(e).__name__
    if mod.startswith("psycopg"):
        state = getattr(e, "sqlstate", None) or ""
        if name in ("OperationalError", "InterfaceError") and (
            not state or state.startswith(_UNAVAILABLE_SQLSTATE)
        ):
            return ServiceUnavailable("catalog database")
    if mod == "sqlite3" and name == "OperationalError":
        text = str(e).lower()
        if "locked" in text or "busy" in text:
            return ServiceUnavailable("catalog database", retry_after_s=1)
    if mod.startswith("pymysql") and name == "OperationalError":
        return ServiceUnavailable("catalog database")
    return None
