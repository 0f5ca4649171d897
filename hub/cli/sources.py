"""``blockhub source root …`` and ``blockhub source profile …``: what each agency may read.

Only an admin configures sources, and the CLI is the admin's console on the hub's own
machine.  Secrets never go on the command line (shell history, ``ps``): they are read
from an environment variable named with ``--secret-env`` or from standard input with
``--secret-stdin``.  Every change goes on the audit chain (``source.config``, in the
change's own transaction, catalog.sources.store) without its secrets; listings show the names of
secrets, never their values.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from catalog.errors import InvalidRequest
from catalog.identity.store import Principal
from hub.assembly.context import Hub


def _pairs(items: list[str] | None, what: str) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"{what} wants KEY=VALUE, not {item!r}", field=what)
        out.append((key.strip(), value))
    return out


def _secret_values(env_pairs: list[str] | None, stdin_key: str | None) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for key, var in _pairs(env_pairs, "--secret-env"):
        if var not in os.environ:
            raise InvalidRequest(f"--secret-env {key}={var}: {var} is not set", field=key)
        secrets[key] = os.environ[var]
    if stdin_key:
        secrets[stdin_key] = sys.stdin.read().strip()
    return secrets


def register(
    app: typer.Typer, hub: Callable[[], Hub], out: Console, caller: Callable[[], Principal]
) -> None:
    """``caller``: who runs the command (recorded as the actor of each change)."""
    source_app = typer.Typer(
        help="What each agency may read: file roots and connection profiles (admin).",
        no_args_is_help=True,
    )
    root_app = typer.Typer(help="File roots: folders or S3 prefixes.", no_args_is_help=True)
    profile_app = typer.Typer(
        help="Connection profiles: databases, HTTP APIs, MQTT brokers.", no_args_is_help=True
    )
    app.add_typer(source_app, name="source")
    source_app.add_typer(root_app, name="root")
    source_app.add_typer(profile_app, name="profile")

    @root_app.command("add")
    def root_add(
        agency: str,
        name: str,
        location: Annotated[str, typer.Argument(help="an absolute folder, or s3://bucket/prefix")],
        endpoint: Annotated[str | None, typer.Option(help="S3: endpoint URL")] = None,
        region: Annotated[str | None, typer.Option(help="S3: region")] = None,
        secret_env: Annotated[
            list[str] | None,
            typer.Option(help="S3: access_key=VAR or secret_key=VAR, read from the environment"),
        ] = None,
    ) -> None:
        """Let AGENCY's manifests read files under LOCATION as root NAME."""
        h = hub()
        settings = {k: v for k, v in (("endpoint", endpoint), ("region", region)) if v}
        root = h.sources.sources.add_root(
            agency,
            name,
            location,
            protected=h.sources.protected,
            settings=settings,
            secrets=_secret_values(secret_env, None),
            by=caller(),
        )
        out.print(f"root [bold]{root.name}[/] of {agency}: {root.location}")

    @root_app.command("list")
    def root_list(agency: Annotated[str | None, typer.Option(help="one agency")] = None) -> None:
        t = Table("agency", "root", "location", "settings", "secrets")
        for r in hub().sources.sources.roots(agency):
            p = r.public()
            t.add_row(
                r.agency, r.name, r.location, json.dumps(p["settings"]), ", ".join(p["secrets"])
            )
        out.print(t)

    @root_app.command("remove")
    def root_remove(agency: str, name: str) -> None:
        """Remove a root; manifests naming it are refused at their next read."""
        h = hub()
        h.sources.sources.remove_root(agency, name, by=caller())
        out.print(f"root {name} of {agency} removed")

    @profile_app.command("add")
    def profile_add(
        agency: str,
        name: str,
        kind: Annotated[str, typer.Argument(help="postgres, mysql, http, mqtt or custom")],
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="a setting KEY=VALUE: host, port, database, user, sslmode (databases); "
                "base_url, verify_tls (http); host, port, username, topic_prefix (mqtt)",
            ),
        ] = None,
        secret_env: Annotated[
            list[str] | None,
            typer.Option(help="a secret KEY=VAR read from the environment (e.g. password=PGPW)"),
        ] = None,
        secret_stdin: Annotated[
            str | None, typer.Option(help="a secret KEY whose value is read from standard input")
        ] = None,
        header_env: Annotated[
            list[str] | None,
            typer.Option(help="http: a header NAME=VAR whose value is read from the environment"),
        ] = None,
    ) -> None:
        """Let AGENCY's manifests connect through profile NAME (secrets stay in the hub)."""
        h = hub()
        settings: dict[str, Any] = {}
        for key, value in _pairs(set_, "--set"):
            settings[key] = value.lower() in ("1", "true", "yes") if key == "verify_tls" else value
        secrets: dict[str, Any] = dict(_secret_values(secret_env, secret_stdin))
        headers = {}
        for header, var in _pairs(header_env, "--header-env"):
            if var not in os.environ:
                raise InvalidRequest(f"--header-env {header}={var}: {var} is not set", field=header)
            headers[header] = os.environ[var]
        if headers:
            secrets["headers"] = headers
        profile = h.sources.sources.add_profile(
            agency,
            name,
            kind,
            protected=h.sources.protected,
            settings=settings,
            secrets=secrets,
            by=caller(),
        )
        out.print(f"profile [bold]{name}[/] of {agency}: {profile.target}")

    @profile_app.command("list")
    def profile_list(agency: Annotated[str | None, typer.Option(help="one agency")] = None) -> None:
        t = Table("agency", "profile", "kind", "target", "secrets")
        for p in hub().sources.sources.profiles(agency):
            t.add_row(p.agency, p.name, p.kind, p.target, ", ".join(p.public()["secrets"]))
        out.print(t)

    @profile_app.command("remove")
    def profile_remove(agency: str, name: str) -> None:
        """Remove a profile; manifests naming it are refused at their next read."""
        h = hub()
        h.sources.sources.remove_profile(agency, name, by=caller())
        out.print(f"profile {name} of {agency} removed")
