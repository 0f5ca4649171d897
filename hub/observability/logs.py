"""Log lines of a hub process: plain text for a person at a terminal, or one JSON object
per line for a log collector (``BLOCKHUB_LOG_FORMAT``; JSON by default in production).

Every line carries the current request's id (``catalog.requestid``) and goes through
:class:`Redactor`: the values of the settings' secrets (audit keys, the metrics token,
passwords of the database and event-log URLs) and the password of any URL in a message are
replaced by ``***`` before the line is written — a driver that prints its connection
string in an error cannot put a password in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from catalog import requestid

#: Fields of a record that the JSON line carries when a caller set them (``extra=``).
EXTRA_FIELDS = ("method", "route", "status", "duration_ms", "dataset", "run", "channel")

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?P<at>@)")
MASK = "***"


class Redactor:
    """Removes secrets from a formatted line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole; very short
        # values would mask ordinary words and are not secrets worth the name.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", text)


def url_password(url: str | None) -> str | None:
    """The password of a URL (``postgresql+psycopg://user:pw@host/db``), if it has one."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = requestid.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO), ``level``, ``logger``, ``message``,
    ``request_id`` (when in a request), the access log's fields, ``exc`` (a traceback)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid and rid != "-":
            out["request_id"] = rid
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(out, ensure_ascii=False, default=str))


class _Ours(logging.StreamHandler):
    """The handler this module installs (found again and replaced, never doubled)."""


def setup(
    *,
    level: str,
    fmt: str,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler | None:
    """Install the hub's handler on the root logger at ``level``.

    Like ``logging.basicConfig``, a root logger someone else has configured already (a
    test runner, Airflow) keeps its handlers; only the level is set then.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    others = [h for h in root.handlers if not isinstance(h, _Ours)]
    if others:
        return None
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _Ours(stream or sys.stderr)
    redact = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    return handler


def settings_secrets(settings: BaseSettings) -> list[str]:
    """The secret values a hub's settings hold: every ``SecretStr`` field (and list of
    them), the file of every ``<name>_file`` field whose ``<name>`` is a ``SecretStr``, and
    the passwords of the database and event-log URLs — what :class:`Redactor` masks.  A
    secret setting added later is masked without a change here."""
    out: list[str] = []
    fields = type(settings).model_fields
    for name in fields:
        value = getattr(settings, name, None)
        values = value if isinstance(value, list) else [value]
        out.extend(v.get_secret_value().strip() for v in values if isinstance(v, SecretStr))
        base = name.removesuffix("_file")
        secret_file = (
            base != name and base in fields and "SecretStr" in str(fields[base].annotation)
        )
        if secret_file and isinstance(value, Path):
            with contextlib.suppress(OSError, UnicodeDecodeError):  # its check names it
                out.append(value.read_text(encoding="utf-8").strip())
    for attr in ("catalog_db", "lake_db", "events_db"):
        pw = url_password(getattr(settings, attr, None))
        if pw:
            out.append(pw)
    return [s for s in out if s]
