"""The one error family of blockhub.

Every error a user can cause or meet is a :class:`HubError` subclass that carries
its context as attributes.  The HTTP layer maps them to a status code and one
JSON body (``hub.api.errors``); the CLI prints ``error.message`` and the detail.
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


class QualityGateFailed(HubError):
    code = "quality_gate_failed"
    status = 422


class SuiteInvalid(HubError):
    """An expectation suite file is malformed or uses what the gate cannot run."""

    code = "invalid_suite"
    status = 422
