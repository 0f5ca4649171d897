"""The lake's object store: one description of an S3 warehouse for every reader and writer.

A lake on S3 is written by pyiceberg (metadata, through its FileIO), by pyarrow (staged
Parquet files, position deletes, orphan sweeps) and read by DuckDB (``iceberg_scan`` in
the exchange's loader and rooms, the quality gate's scan).  Each of the three takes its
endpoint, region, credentials and addressing style in its own vocabulary; :class:`S3Lake`
holds them once (built from ``BLOCKHUB_S3_*`` by ``StorageSettings.s3_lake``) and
speaks each dialect, so that no reader can be configured differently from the writer.

The secret never appears in ``repr``, logs or error texts: DuckDB's ``CREATE SECRET`` is
the one statement that carries it, and a failure of that statement is reported without
DuckDB's text (which would quote the statement).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from catalog.errors import ConfigError
from catalog.sqltext import quote_literal

S3_SCHEME = "s3://"


def is_s3(location: str) -> bool:
    return location.startswith(S3_SCHEME)


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → ``("bucket", "some/prefix")``."""
    if not is_s3(location):
        raise ValueError(f"{location!r} is not an s3:// location")
    bucket, _, key = location[len(S3_SCHEME) :].partition("/")
    return bucket, key.strip("/")


def s3_dir(location: str) -> str:
    """An S3 folder as DuckDB's sandbox compares it: ``s3://bucket/prefix/`` (one trailing
    slash, so that ``…/ds1/`` never admits ``…/ds10/``)."""
    bucket, key = split_s3(location)
    return f"{S3_SCHEME}{bucket}/{key}/" if key else f"{S3_SCHEME}{bucket}/"


@dataclass(frozen=True)
class S3Lake:
    """How to reach an S3-compatible object store holding the lake.

    ``endpoint`` is a URL (``http://minio:9000``) or None for AWS itself; ``path_style``
    addresses buckets as ``endpoint/bucket/key`` (MinIO, moto, most on-premises stores)
    rather than ``bucket.endpoint/key``.  The settings require credentials (DuckDB's httpfs has no
    default chain without the ``aws`` extension, which blockhub does not ship).
    """

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = True

    def __repr__(self) -> str:
        return (
            f"S3Lake(endpoint={self.endpoint!r}, region={self.region!r}, "
            f"access_key_id={self.access_key_id!r}, secret_access_key="
            f"{'***' if self.secret_access_key else None}, path_style={self.path_style})"
        )

    @property
    def _scheme(self) -> str:
        return urlparse(self.endpoint).scheme if self.endpoint else "https"

    @property
    def _host(self) -> str | None:
        """The endpoint without its scheme (``host:port``), as pyarrow and DuckDB take it."""
        if not self.endpoint:
            return None
        parsed = urlparse(self.endpoint)
        return (parsed.netloc or parsed.path).rstrip("/")

    # -- pyarrow ---------------------------------------------------------------------

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem (staged files, deletes, quarantine, orphan sweeps)."""
        kwargs: dict[str, Any] = {
            "region": self.region,
            "force_virtual_addressing": not self.path_style,
        }
        if self.endpoint:
            kwargs["endpoint_override"] = self._host
            kwargs["scheme"] = self._scheme
        if self.access_key_id and self.secret_access_key:
            kwargs["access_key"] = self.access_key_id
            kwargs["secret_key"] = self.secret_access_key
            if self.session_token:
                kwargs["session_token"] = self.session_token
        return pafs.S3FileSystem(**kwargs)

    # -- pyiceberg -------------------------------------------------------------------

    def iceberg_properties(self) -> dict[str, str]:
        """The SQL catalog's FileIO properties (pyiceberg passes a catalog's properties to
        every table's FileIO).  pyarrow's FileIO, so that pyiceberg and our own writes
        go through the same S3 client."""
        props = {
            "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
            "s3.region": self.region,
            "s3.force-virtual-addressing": "false" if self.path_style else "true",
        }
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key_id and self.secret_access_key:
            props["s3.access-key-id"] = self.access_key_id
            props["s3.secret-access-key"] = self.secret_access_key
            if self.session_token:
                props["s3.session-token"] = self.session_token
        return props

    # -- DuckDB ----------------------------------------------------------------------

    def duckdb_secret(self, con: Any, scopes: Sequence[str]) -> None:
        """Give a DuckDB connection (httpfs loaded) credentials valid for ``scopes`` only:
        one temporary secret per scope (an ``s3://bucket/prefix/`` folder), so that a
        connection reaching one dataset's folder holds no credential for the rest of the
        bucket.  Call before the connection's configuration is locked."""
        for scope in scopes:
            opts = [
                "TYPE s3",
                f"REGION {quote_literal(self.region)}",
                f"URL_STYLE {quote_literal('path' if self.path_style else 'vhost')}",
                f"USE_SSL {'true' if self._scheme == 'https' else 'false'}",
                f"SCOPE {quote_literal(s3_dir(scope))}",
            ]
            if self._host:
                opts.append(f"ENDPOINT {quote_literal(self._host)}")
            if self.access_key_id and self.secret_access_key:
                opts.append(f"KEY_ID {quote_literal(self.access_key_id)}")
                opts.append(f"SECRET {quote_literal(self.secret_access_key)}")
                if self.session_token:
                    opts.append(f"SESSION_TOKEN {quote_literal(self.session_token)}")
            name = f"bh_lake_{uuid.uuid4().hex[:12]}"
            try:
                con.execute(f"CREATE TEMPORARY SECRET {name} ({', '.join(opts)})")
            except Exception as e:
                # DuckDB's text may quote the statement, and with it the secret.
                raise ConfigError(
                    f"DuckDB refused the S3 lake's settings ({type(e).__name__}); check "
                    "BLOCKHUB_S3_ENDPOINT, BLOCKHUB_S3_REGION and the credentials",
                    setting="BLOCKHUB_S3_ENDPOINT",
                ) from None
