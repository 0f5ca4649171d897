"""What every command group shares: the outputs, the settings and the hub opened once per
command, and who the caller is (``BLOCKHUB_TOKEN`` or the local operator, ``--as``)."""

from __future__ import annotations

import getpass
import os

from rich.console import Console

from catalog.access.policy import may_act_for
from catalog.errors import AccessDenied
from catalog.identity.store import Principal
from hub.assembly.context import Hub
from hub.settings import Settings

out = Console()
err = Console(stderr=True)

CLI_PRINCIPAL = Principal(id="cli", agency_id="_local", name="local operator", role="admin")


class _State:
    settings: Settings | None = None
    hub: Hub | None = None


state = _State()


def settings() -> Settings:
    return state.settings or Settings()


def hub() -> Hub:
    if state.hub is None:
        state.hub = Hub.open(settings())
    return state.hub


def cli_caller() -> Principal:
    """Who runs this command: the principal of ``BLOCKHUB_TOKEN`` when it is set, else
    the hub home's local operator (``cli``, an admin: masked like any admin)."""
    token = os.environ.get("BLOCKHUB_TOKEN", "").strip()
    return hub().store.identity.authenticate(token) if token else CLI_PRINCIPAL


def acting(as_id: str | None, command: str) -> Principal:
    """The principal a command acts as: the caller, or ``--as`` where the caller may act
    for that principal (catalog.access.policy.may_act_for).  Every ``--as`` for someone else is
    appended to the audit log (``cli.act_as``), refused ones too."""
    caller = cli_caller()
    if as_id is None or as_id == caller.id:
        return caller
    h = hub()
    target = h.store.identity.get_principal(as_id)
    local = os.environ.get("BLOCKHUB_TOKEN", "").strip() == ""
    allowed = may_act_for(caller, target, local_operator=local)
    h.audit.append(
        action="cli.act_as",
        principal=caller.id,
        agency=caller.agency_id,
        datasets={},
        dataset_agencies={},
        outcome="ok" if allowed else "denied",
        detail={
            "as": target.id,
            "as_agency": target.agency_id,
            "command": command,
            "os_user": getpass.getuser(),
        },
    )
    if not allowed:
        raise AccessDenied(
            f"{caller.id!r} may not act as {target.id!r} (--as: yourself, or a principal of "
            "your own agency if you are its steward or admin)",
            principal=caller.id,
            act_as=target.id,
        )
    return target
