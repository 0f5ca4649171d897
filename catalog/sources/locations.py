"""Where a source may point: the pure rules behind agency file roots and connection profiles.

A manifest never names a location of its own (docs/security.md, "Sources"): it names a
root an admin configured for its agency plus a path relative to it, or a connection
profile.  This module holds the checks that make that true whatever the spelling:

- :func:`relative_path_problem` — the syntax a manifest's relative path may have (no
  ``..``, nothing absolute, no ``~``, no URL, no brace pattern, no environment reference);
- :class:`Confinement` — opening a local file *by descriptor* and checking the file the
  kernel actually opened (``/proc/self/fd``): a symlink or ``..`` planted or swapped in at
  any time, before or after registration, cannot make the hub read outside the root;
- :class:`HttpOrigin` — the one scheme, host, port and base path an HTTP source may reach
  (every request is checked, redirects and next-page links included);
- :func:`forbidden_address` — addresses never reachable (cloud metadata, link-local);
- :class:`DatabaseTarget` — a database by host, port and name, to keep the hub's own
  databases out of connection profiles.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

GLOB_CHARS = "*?["

#: Networks a source never reaches, whatever a profile says: link-local (which holds the
#: cloud metadata services 169.254.169.254, Alibaba Cloud's 100.100.100.200 is added by
#: name), and "this network" / broadcast / multicast, which are no place for a source.
_NEVER = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",
    )
]


class LocationRefused(Exception):
    """A location outside what the agency was given; ``reason`` says why, for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def relative_path_problem(text: object) -> str | None:
    """Why ``text`` cannot be a path (or pattern) relative to a root; None when it can.

    Refused: absolute paths, ``~``, ``..`` segments (also percent-encoded), URLs and
    ``file:`` names, backslashes, NUL and control characters, brace patterns (DuckDB and
    shells expand ``{a,b}``; the hub expands only ``*``, ``?``, ``[...]`` and ``**``
    itself), and ``${...}`` environment references.
    """
    if not isinstance(text, str) or not text.strip():
        return "must be a non-empty path relative to the root"
    if len(text) > 1024:
        return "is longer than 1024 characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "holds a control character"
    if "${" in text:
        return "holds an environment reference (${...}); manifests cannot read the environment"
    if "://" in text or text.lower().startswith("file:"):
        return "is a URL; name a path relative to the root"
    if "\\" in text:
        return "holds a backslash; separate folders with /"
    if text.startswith("/"):
        return "is absolute; name a path relative to the root"
    if text.startswith("~"):
        return "starts with ~; name a path relative to the root"
    if "{" in text or "}" in text:
        return "holds a brace pattern; use *, ? or [...]"
    for seg in text.split("/"):
        if seg == "..":
            return "climbs out of the root (..)"
        if seg != "." and unquote(seg) in (".", ".."):
            return "holds a percent-encoded dot segment (%2e)"
    return None


def split_pattern(rel: str) -> tuple[str, str]:
    """``(fixed, rest)``: the leading folders without glob characters, and the remainder."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    fixed: list[str] = []
    for i, p in enumerate(parts):
        if any(ch in p for ch in GLOB_CHARS):
            return "/".join(fixed), "/".join(parts[i:])
        fixed.append(p)
    return "/".join(fixed), ""


def is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both absolute, already resolved)."""
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def overlaps(a: str, b: str) -> bool:
    return is_within(a, b) or is_within(b, a)


@dataclass(frozen=True)
class Confinement:
    """The folder a local file source may read, and what stays unreadable inside any root.

    ``root`` is the root's real path as stored when the admin added it; ``denied`` are real
    paths that are never read (the hub's home, its lake and databases, other agencies'
    roots); ``link_devices`` are the devices (``st_dev``) of those: a regular file with
    more than one hard link on one of them may be a second name of a file the agency was
    not given, so it is refused (a hard link cannot cross file systems, so elsewhere it
    is harmless).
    """

    root: str
    denied: tuple[str, ...] = ()
    link_devices: frozenset[int] = field(default_factory=frozenset)

    def check_real(self, real: str, shown: str) -> None:
        """Refuse a resolved path outside the root or inside a denied place."""
        if not is_within(real, self.root):
            raise LocationRefused(f"{shown} resolves to {real}, outside the root {self.root}")
        for d in self.denied:
            if is_within(real, d):
                raise LocationRefused(f"{shown} resolves to {real}, which is never a source")

    def open(self, path: str) -> int:
        """Open ``path`` for reading and return the descriptor, once the file the kernel
        opened is known to be a regular file inside the root.

        The check is made on the open descriptor (``/proc/self/fd/N`` names the file
        actually opened, after every symlink and ``..``), so a link swapped in between a
        check and the open cannot redirect the read.  ``O_NONBLOCK`` keeps a FIFO planted
        in the root from blocking the hub.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise LocationRefused(f"{path}: {e.strerror or e}") from None
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            st = os.fstat(fd)
            self.check_real(real, path)
            if not stat.S_ISREG(st.st_mode):
                raise LocationRefused(f"{path} is not a regular file")
            if st.st_nlink > 1 and st.st_dev in self.link_devices:
                raise LocationRefused(
                    f"{path} has {st.st_nlink} hard links on the hub's file system; "
                    "copy the file instead of linking it"
                )
            # Reads through the descriptor block as usual from here on.
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


def devices(paths: Iterable[str]) -> frozenset[int]:
    """The devices of the paths that exist (for :attr:`Confinement.link_devices`)."""
    out: set[int] = set()
    for p in paths:
        try:
            out.add(os.stat(p).st_dev)
        except OSError:
            continue
    return frozenset(out)


def deepest_existing(path: str) -> str:
    """The real path of ``path``'s deepest existing ancestor (itself when it exists)."""
    probe = path
    while True:
        if os.path.lexists(probe):
            return os.path.realpath(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            return os.path.realpath(probe)
        probe = parent


# -- S3 ---------------------------------------------------------------------------


def s3_key_problem(key: str) -> str | None:
    """Why an object key (``bucket/prefix/...``) cannot be read by a root; None when fine."""
    if any(seg in ("..", ".") for seg in key.split("/")):
        return "holds a . or .. segment"
    if any(ord(ch) < 32 for ch in key):
        return "holds a control character"
    return None


def normalize_s3(location: str) -> str:
    """``s3://bucket/prefix`` → ``bucket/prefix`` (no trailing slash); ValueError if bad."""
    if not location.startswith("s3://"):
        raise ValueError("an S3 root is written s3://bucket/prefix")
    key = location[len("s3://") :].strip("/")
    if not key or key.startswith("/"):
        raise ValueError("an S3 root names a bucket: s3://bucket/prefix")
    problem = s3_key_problem(key)
    if problem:
        raise ValueError(f"the S3 location {problem}")
    return key


# -- HTTP -------------------------------------------------------------------------


def forbidden_address(host: str) -> str | None:
    """Why ``host`` (a name or an IP literal) may not be reached; None when it may.

    A name is resolved and every address it has is checked.  Loopback and private
    ranges are allowed (agency systems live there and an admin names them); the cloud
    metadata services and link-local, multicast and unspecified ranges never are.
    """
    literal = host.strip("[]")
    try:
        addresses = [ipaddress.ip_address(literal)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(literal, None)
        except (OSError, UnicodeError):
            return None  # unresolvable: the connection fails by itself
        addresses = []
        for info in infos:
            try:
                addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except ValueError:
                continue
    for a in addresses:
        mapped = getattr(a, "ipv4_mapped", None)
        for candidate in (a, mapped) if mapped is not None else (a,):
            if any(candidate in net for net in _NEVER):
                return f"{host} is {candidate}, an address no source may reach"
    return None


@dataclass(frozen=True)
class HttpOrigin:
    """Scheme, host, port and base path of an HTTP profile: the only place it may reach."""

    scheme: str
    host: str
    port: int
    base_path: str  # normalised, without a trailing slash ("" for the whole site)

    @classmethod
    def parse(cls, url: str) -> HttpOrigin:
        """The origin of a profile's ``base_url``; ValueError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("base_url names no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url may not carry user:password@ (put secrets in headers)")
        if parts.query or parts.fragment:
            raise ValueError("base_url may not carry a query or a fragment")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError("base_url has a bad port") from None
        path = _clean_url_path(parts.path)
        if path is None:
            raise ValueError("base_url's path climbs (..) or hides separators (%2f)")
        return cls(parts.scheme, parts.hostname.lower(), port, path.rstrip("/"))

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.base_path}"

    def join(self, rel: str) -> str:
        """The URL of a manifest's relative ``path`` under the base."""
        rel = rel.lstrip("/")
        return f"{self.url}/{rel}" if rel else self.url

    def check(self, url: str) -> None:
        """Refuse a URL that leaves this origin or climbs out of the base path."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise LocationRefused(f"{_shown(url)} has a bad port") from None
        if (
            parts.scheme != self.scheme
            or (parts.hostname or "").lower() != self.host
            or port != self.port
            or parts.username is not None
            or parts.password is not None
        ):
            raise LocationRefused(f"{_shown(url)} is not on the profile's origin {self.url}")
        path = _clean_url_path(parts.path)
        if path is None or not (
            not self.base_path or path == self.base_path or path.startswith(self.base_path + "/")
        ):
            raise LocationRefused(f"{_shown(url)} is outside the profile's base {self.url}")
        reason = forbidden_address(self.host)
        if reason:
            raise LocationRefused(reason)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _clean_url_path(path: str) -> str | None:
    """A URL path with ``.``/``..`` resolved, or None when it climbs above ``/`` or hides
    a separator or a dot segment in percent-encoding (servers decode those)."""
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in path:
        return None
    out: list[str] = []
    for seg in path.split("/"):
        decoded = unquote(seg)
        if decoded == "..":
            if not out:
                return None
            out.pop()
        elif decoded in ("", "."):
            continue
        else:
            out.append(seg)
    return "/" + "/".join(out) if out else "/"


def url_path_problem(text: object) -> str | None:
    """Why ``text`` cannot be a path relative to an HTTP profile's base; None when fine."""
    if not isinstance(text, str):
        return "must be a path relative to the profile's base_url"
    if "${" in text:
        return "holds an environment reference (${...}); manifests cannot read the environment"
    if "://" in text or text.startswith("//") or ":" in text.split("/")[0]:
        return "is a URL; name a path relative to the profile's base_url"
    if "?" in text or "#" in text:
        return "holds a query or fragment; put query parameters in source.options.params"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "holds a control character"
    lowered = text.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in text:
        return "hides a separator (%2f, %5c or a backslash)"
    if any(unquote(seg) == ".." for seg in text.split("/")):
        return "climbs out of the profile's base (..)"
    return None


# -- databases --------------------------------------------------------------------


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "localhost.localdomain"}


@dataclass(frozen=True)
class DatabaseTarget:
    """A database server and database name (``port`` None: the kind's default)."""

    host: str
    port: int | None
    database: str

    def same_as(self, other: DatabaseTarget) -> bool:
        """Whether both name one database: same name and port, and hosts that are equal,
        both loopback, or that resolve to a common address."""
        if self.database != other.database:
            return False
        if self.port is not None and other.port is not None and self.port != other.port:
            return False
        a, b = self.host.lower(), other.host.lower()
        if a == b or (a in _LOOPBACK and b in _LOOPBACK):
            return True
        return bool(_addresses(a) & _addresses(b))


def _addresses(host: str) -> set[str]:
    try:
        return {str(i[4][0]) for i in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return set()


def posix_join(root: str, rel: str) -> str:
    """``root/rel`` with ``.`` segments dropped (``rel`` already passed the syntax check)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    return posixpath.join(root, *parts) if parts else root
