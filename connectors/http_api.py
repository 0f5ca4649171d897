"""HTTP JSON APIs read page by page into Arrow batches (docs/connectors.md, ``http_api``).

One GET per page through httpx: the records sit at a dotted path of the response
(``records: data.items``), pages follow one of four styles (``page``, ``offset``,
``cursor``, ``next_link``), 429 and 5xx answers are retried with exponential
backoff (``Retry-After`` honoured) a bounded number of times, and requests are
spaced to a rate limit.  Header values usually carry a secret resolved from
``${ENV}`` by the caller: they are never logged nor put into an error.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from catalog.errors import ConnectorError, SourceRefused
from catalog.sources.guard import ResolvedSource
from catalog.sources.locations import LocationRefused
from connectors.base import Connector, CursorValue

log = logging.getLogger(__name__)

PageStyle = Literal["none", "page", "offset", "cursor", "next_link"]
PAGE_STYLES: tuple[str, ...] = ("none", "page", "offset", "cursor", "next_link")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def dig(doc: Any, path: str | None) -> Any:
    """The value at a dotted path (``data.items``) of a JSON document; None when absent."""
    node = doc
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _public_url(url: str) -> str:
    """The URL without its query string: query values may be secrets (api keys)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


@dataclass
class RateLimiter:
    """Spaces calls at least ``1 / per_second`` apart (None: no limit)."""

    per_second: float | None
    _next: float = 0.0

    def wait(self) -> None:
        if not self.per_second:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + 1.0 / self.per_second


@dataclass(frozen=True)
class Page:
    records: list[Any]
    doc: Any
    response: httpx.Response


class HttpApiConnector(Connector):
    """A JSON API whose responses hold a list of records, possibly over many pages.

    Options (all but ``url`` optional): ``url``; ``params`` (fixed query parameters);
    ``headers`` (e.g. ``Authorization: "Bearer ${BEDS_TOKEN}"``); ``records`` (dotted
    path to the list, default: the response itself); ``pagination`` (``style`` and the
    style's parameter names, ``max_pages``); ``since_param`` (query parameter that
    carries the last cursor value); ``retry`` (``attempts``, ``backoff_s``,
    ``max_backoff_s``); ``rate_limit`` (requests per second); ``timeout_s``.
    """

    name = "http_api"

    def __init__(self, options: dict[str, Any], *, batch_rows: int = 100_000) -> None:
        super().__init__(options, batch_rows=batch_rows)
        self.url = str(self.option("url", required=True))
        pag = self.option("pagination", {}) or {}
        if not isinstance(pag, dict):
            raise self._bad("pagination", "must be a mapping with a 'style'")
        self.pagination: dict[str, Any] = pag
        self.style = str(pag.get("style", "none"))
        if self.style not in PAGE_STYLES:
            raise self._bad("pagination.style", f"must be one of {', '.join(PAGE_STYLES)}")
        retry = self.option("retry", {}) or {}
        self.attempts = int(retry.get("attempts", 5))
        self.backoff_s = float(retry.get("backoff_s", 0.5))
        self.max_backoff_s = float(retry.get("max_backoff_s", 30.0))
        if self.attempts < 1:
            raise self._bad("retry.attempts", "must be at least 1")
        rate = self.option("rate_limit")
        self.limiter = RateLimiter(float(rate) if rate else None)
        self.max_pages = int(pag.get("max_pages", 100_000))
        headers = {str(k): str(v) for k, v in (self.option("headers", {}) or {}).items()}
        self.client = httpx.Client(
            headers={"Accept": "application/json", **headers},
            timeout=float(self.option("timeout_s", 30.0)),
            follow_redirects=True,
            verify=bool(self.option("verify_tls", True)),
        )
        self._first: tuple[dict[str, Any], Page] | None = None
        self._remember = False
        self._schema: pa.Schema | None = None
        self.requests = 0

    def _bad(self, option: str, message: str) -> ConnectorError:
        return ConnectorError(
            f"http_api option {option}: {message}", connector=self.name, option=option
        )

    def bind(self, resolved: ResolvedSource) -> None:
        """Confine every request — the first, each next page, each redirect — to the
        profile's origin and base path (an httpx request hook sees them all)."""
        super().bind(resolved)
        origin = resolved.origin
        if origin is None:
            return

        def check(request: httpx.Request) -> None:
            try:
                origin.check(str(request.url))
            except LocationRefused as e:
                raise SourceRefused(
                    f"<{self.name} source>", [{"field": "source.options.path", "message": e.reason}]
                ) from None

        check(httpx.Request("GET", self.url))
        self.client.event_hooks = {**self.client.event_hooks, "request": [check]}

    def close(self) -> None:
        self.client.close()

    # -- requests ----------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any]) -> Page:
        """One page, retried on 429/5xx and transport errors up to ``attempts`` times."""
        where = _public_url(url)
        reason = ""
        for attempt in range(1, self.attempts + 1):
            self.limiter.wait()
            self.requests += 1
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.get(url, params=params or None)
            except httpx.TransportError as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    return self._page(resp, where)
                if resp.status_code not in _RETRY_STATUS:
                    raise ConnectorError(
                        f"http_api source {where}: HTTP {resp.status_code} "
                        f"{resp.reason_phrase}{_hint(resp.status_code)}",
                        connector=self.name,
                        url=where,
                        status=resp.status_code,
                    )
                reason = f"HTTP {resp.status_code} {resp.reason_phrase}"
                after = _retry_after(resp.headers.get("Retry-After"))
                if after is not None:
                    wait = min(self.max_backoff_s, after)
            if attempt < self.attempts:
                log.info("http_api %s: %s; retry %d in %.2f s", where, reason, attempt, wait)
                time.sleep(wait)
        raise ConnectorError(
            f"http_api source {where}: gave up after {self.attempts} attempt(s): {reason}",
            connector=self.name,
            url=where,
            attempts=self.attempts,
        )

    def _page(self, resp: httpx.Response, where: str) -> Page:
        try:
            doc = resp.json()
        except ValueError:
            raise ConnectorError(
                f"http_api source {where}: response is not JSON "
                f"(content-type {resp.headers.get('content-type', 'none')})",
                connector=self.name,
                url=where,
            ) from None
        path = self.option("records")
        records = dig(doc, path) if path else doc
        if records is None:
            records = []
        if not isinstance(records, list):
            raise ConnectorError(
                f"http_api source {where}: records path {path or '(response)'} holds a "
                f"{type(records).__name__}, not a list",
                connector=self.name,
                url=where,
            )
        bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
        if bad is not None:
            raise ConnectorError(
                f"http_api source {where}: record {bad} is not a JSON object",
                connector=self.name,
                url=where,
            )
        return Page(records, doc, resp)

    def pages(self, since: CursorValue = None) -> Iterator[Page]:
        """Every page of the source, following the pagination style."""
        params: dict[str, Any] = dict(self.option("params", {}) or {})
        since_param = self.option("since_param")
        if since is not None and since_param:
            params[str(since_param)] = since
        p = self.pagination
        url = self.url
        if self.style == "page":
            page_param, size_param = p.get("page_param", "page"), p.get("size_param", "size")
            number, size = int(p.get("start", 1)), int(p.get("size", 100))
            params.update({page_param: number, size_param: size})
        elif self.style == "offset":
            off_param, lim_param = p.get("offset_param", "offset"), p.get("limit_param", "limit")
            offset, size = int(p.get("start", 0)), int(p.get("limit", 100))
            params.update({off_param: offset, lim_param: size})
        for _ in range(self.max_pages):
            page = self._fetch(url, params)
            yield page
            if self.style == "none":
                return
            if self.style == "page":
                if len(page.records) < size:
                    return
                number += 1
                params[page_param] = number
            elif self.style == "offset":
                if len(page.records) < size:
                    return
                offset += len(page.records)
                params[off_param] = offset
            elif self.style == "cursor":
                token = dig(page.doc, p.get("cursor_path", "next_cursor"))
                if token in (None, ""):
                    return
                params[p.get("cursor_param", "cursor")] = token
            else:  # next_link: the link carries every parameter the server needs
                link = self._next_link(page)
                if not link:
                    return
                url, params = urljoin(str(page.response.url), link), {}
        raise ConnectorError(
            f"http_api source {_public_url(self.url)}: more than {self.max_pages} pages "
            "(pagination.max_pages); is the server repeating a page?",
            connector=self.name,
            url=_public_url(self.url),
        )

    def _fetch(self, url: str, params: dict[str, Any]) -> Page:
        key = {"url": url, **params}
        if self._first is not None and self._first[0] == key:
            page = self._first[1]
            self._first = None  # discover's page serves one read, then it is stale
            return page
        page = self._get(url, params)
        if self._remember:
            self._first = (key, page)
        return page

    def _next_link(self, page: Page) -> str | None:
        path = self.pagination.get("next_path")
        if path:
            value = dig(page.doc, path)
            return str(value) if value else None
        nxt = page.response.links.get("next")
        return nxt.get("url") if nxt else None

    # -- Arrow ---------------------------------------------------------------------

    def discover(self) -> pa.Schema:
        """The schema of the first page's records (the page is kept for ``read``)."""
        self._remember = True
        try:
            first = next(self.pages())
        finally:
            self._remember = False
        self._schema = _records_table(first.records).schema
        return self._schema

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        for page in self.pages(since if cursor else None):
            if not page.records:
                continue
            table = _records_table(page.records)
            if self._schema is not None:
                table = _align(table, self._schema)
            if cursor and since is not None:
                table = _after(table, cursor, since, self.url)
            yield from table.to_batches(self.batch_rows)


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (check the credentials in source.options.headers)"
    if status == 404:
        return " (check source.options.url)"
    return ""


def _records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as a table; a column null on every record of a page is typed string so
    that pages agree (the manifest's column type is applied afterwards)."""
    table = pa.Table.from_pylist(records)
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A page in the discovered column order; a field absent from every record of the
    page becomes a null column, and fields new on this page follow."""
    cols, names = [], []
    for field in schema:
        names.append(field.name)
        if field.name in table.column_names:
            cols.append(table.column(field.name))
        else:
            cols.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)]))
    for name in table.column_names:
        if name not in schema.names:
            names.append(name)
            cols.append(table.column(name))
    return pa.Table.from_arrays(cols, names=names)


def _after(table: pa.Table, column: str, since: CursorValue, url: str) -> pa.Table:
    """Rows whose cursor is past ``since``.  The server's ``since`` filter is often
    inclusive (``>=``); filtering here too keeps an append run free of duplicates."""
    if column not in table.column_names:
        raise ConnectorError(
            f"http_api source {_public_url(url)}: records lack the cursor field {column!r}",
            connector="http_api",
            url=_public_url(url),
        )
    col = table.column(column)
    if isinstance(since, int | float) and not isinstance(since, bool):
        mask = pc.greater(col.cast(pa.float64()), float(since))
    else:
        text = str(since)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            mask = pc.greater(col.cast(pa.string()), text)
        else:
            if moment.tzinfo is None:
                stamps = col.cast(pa.timestamp("us"))
            else:
                stamps = col.cast(pa.timestamp("us", tz="UTC"))
                moment = moment.astimezone(dt.UTC)
            mask = pc.greater(stamps, pa.scalar(moment, stamps.type))
    return table.filter(pc.fill_null(mask, False))
