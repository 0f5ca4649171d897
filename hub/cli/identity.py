"""``blockhub agency|principal|token``: who may use the hub (agencies, principals, tokens)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from catalog.errors import InvalidRequest
from hub.cli.console import cli_caller, err, hub, out

agency_app = typer.Typer(help="Agencies.", no_args_is_help=True)
principal_app = typer.Typer(help="People and apps within agencies.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)


@agency_app.command("add")
def agency_add(agency_id: str, name: str) -> None:
    """Create or rename an agency."""
    a = hub().store.identity.upsert_agency(agency_id, name, by=cli_caller())
    out.print(f"agency [bold]{a.id}[/] {a.name}")


@agency_app.command("list")
def agency_list() -> None:
    t = Table("id", "name")
    for a in hub().store.identity.list_agencies():
        t.add_row(a.id, a.name)
    out.print(t)


@principal_app.command("add")
def principal_add(
    principal_id: str,
    agency: Annotated[str, typer.Option(help="agency id")],
    role: Annotated[str, typer.Option(help="admin, steward, operator or developer")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
) -> None:
    """Create a principal (a person or an app) in an agency."""
    try:
        p = hub().store.identity.create_principal(
            principal_id, agency, name or principal_id, role, by=cli_caller()
        )
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    out.print(f"principal [bold]{p.id}[/] ({p.role}) in {p.agency_id}")


@principal_app.command("role")
def principal_role(
    principal_id: str,
    role: Annotated[str, typer.Argument(help="admin, steward, operator or developer")],
) -> None:
    """Change a principal's role (recorded in the audit log, before and after)."""
    p = hub().store.identity.set_role(principal_id, role, by=cli_caller())
    out.print(f"principal [bold]{p.id}[/] is now {p.role}")


@token_app.command("issue")
def token_issue(
    principal_id: str,
    days: Annotated[int, typer.Option(help="days until it expires (0: never)")] = 90,
    label: Annotated[str, typer.Option(help="what the token is for")] = "",
) -> None:
    """Issue a token; it is printed once and stored only as a hash."""
    token = hub().store.identity.issue_token(
        principal_id, label=label, ttl=timedelta(days=days) if days else None, by=cli_caller()
    )
    err.print("[dim]store this token now; it cannot be shown again[/]")
    print(token)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (the part after ``bh_``, before the next ``_``)."""
    hub().store.identity.revoke_token(token_id, by=cli_caller())
    out.print(f"token {token_id} revoked")
