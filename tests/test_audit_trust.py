"""Every change of access and operations state is on the audit chain, in the same
transaction as the change; the tables that record such changes are bound to the chain;
production refuses to start without a key; the head is exported and checked as an anchor.

(The chain's own tamper-evidence is proved property-based in tests/test_audit_chain.py.)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from catalog.audit.log import AuditLog
from catalog.audit.seal import BOUND_TABLES
from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.db import Base
from catalog.errors import ConfigError, Conflict
from hub.api.app import create_app
from hub.assembly.context import Hub
from hub.cli.main import app as cli_app
from hub.settings import Settings
from pipelines.quarantine import release
from tests.conftest import (
    CatalogSQL,
    SetClock,
    file_source,
    manifest_dict,
    pg_profile,
    settings_env,
)
from tests.quality_data import bad_tickets

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "hub" / "demo" / "world" / "hotline_tickets.yaml"
KEY = "k" * 40


def actions(hub: Hub, after: int = 0, family: str | None = None) -> list[Any]:
    """Entries oldest first (after a seq, of an action family)."""
    return list(reversed(hub.audit.entries(after=after, action=family, limit=1000)))


def head(hub: Hub) -> int:
    found = hub.audit.entries(limit=1)
    return found[0].seq if found else 0


def all_text(hub: Hub) -> str:
    """Every stored byte of the audit tables, as text (to look for secrets in)."""
    db = CatalogSQL(hub.store.engine)
    try:
        rows = db.execute("SELECT * FROM audit_log").fetchall()
        rows += db.execute("SELECT * FROM audit_head").fetchall()
    finally:
        db.close()
    return json.dumps(rows, ensure_ascii=False, default=str)


@pytest.fixture
def client(hub: Hub, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(hub.settings, hub=hub)) as c:
        yield c


def auth(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def cli(home: Path | Hub, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run a CLI command in-process; the CLI keeps its hub between commands of one
    process (a real command is one process), so it is closed after each one here.
    ``home`` may be a hub: the command then opens the same stack (its databases too)."""
    import hub.cli.main

    if isinstance(home, Hub):
        env = {**settings_env(home.settings), **(env or {})}
        home = home.settings.home
    try:
        return CliRunner().invoke(cli_app, ["--home", str(home), *args], env=env)
    finally:
        if hub.cli.main.state.hub is not None:
            hub.cli.main.state.hub.close()
            hub.cli.main.state.hub = None


# -- who exists and who may do what --------------------------------------------------------


def test_agencies_principals_roles_and_tokens_are_on_record(hub: Hub) -> None:
    """Through the CLI (the operator's console): each change names ``cli`` as the actor,
    a rename and a role change carry before and after, a token entry names the token but
    never its secret; repeating a change that changes nothing records nothing."""
    home = hub  # the CLI on the hub's own stack
    start = head(hub)

    def ok(*args: str) -> str:
        r = cli(home, *args)
        assert r.exit_code == 0, r.output
        return str(r.output)

    ok("agency", "add", "gy_sfj", "贵阳市司法局")
    ok("agency", "add", "gy_sfj", "贵阳市司法局")  # no change
    ok("agency", "add", "gy_sfj", "司法局")
    ok("principal", "add", "li", "--agency", "gy_sfj", "--role", "developer")
    ok("principal", "role", "li", "steward")
    token = ok("token", "issue", "li", "--label", "ci").strip().splitlines()[-1]
    token_id = token.split("_")[1]
    ok("token", "revoke", token_id)
    ok("token", "revoke", token_id)  # already revoked: no change
    got = [(e.action, e.principal, e.agency) for e in actions(hub, start)]
    assert got == [
        ("agency.add", "cli", "_local"),
        ("agency.rename", "cli", "_local"),
        ("principal.add", "cli", "_local"),
        ("principal.role", "cli", "_local"),
        ("token.issue", "cli", "_local"),
        ("token.revoke", "cli", "_local"),
    ]
    _, rename, _, role, issue, revoke = actions(hub, start)
    assert rename.detail["before"] == {"name": "贵阳市司法局"}
    assert rename.detail["after"] == {"name": "司法局"}
    assert role.detail == {
        "subject": "li",
        "before": {"role": "developer"},
        "after": {"role": "steward"},
    }
    assert issue.detail["token"] == token_id and issue.detail["label"] == "ci"
    assert revoke.detail == {"token": token_id, "subject": "li"}
    secret = token.split("_", 2)[2]
    assert secret not in all_text(hub)
    assert [b[0] for b in issue.binds or []] == ["tokens"]
    assert hub.audit.verify().ok
    # an unknown role is refused, naming the field; nothing is recorded
    bad = cli(home, "principal", "role", "li", "root")
    assert bad.exit_code != 0 and "unknown role 'root'" in str(bad.exception)
    assert head(hub) == revoke.seq


def test_manifest_register_and_change_are_on_record(
    client: TestClient, hub: Hub, tokens: dict[str, str]
) -> None:
    """A steward registers and changes a manifest through the API: the entries name the
    steward, the dataset and its owner (so the owner's audit view lists them), and what
    changed for access — sharing and a column's personal-data tag, before and after —
    without the source options."""
    steward = auth(tokens, "steward")
    pg_profile(hub, name="hotline_db")
    start = head(hub)
    doc = manifest_dict()
    assert client.post("/v1/datasets", headers=steward, json=doc).status_code == 201
    changed = {**doc, "sharing": {"type": "conditional"}}
    changed["columns"] = [
        {**c, "pii": "phone"} if c["name"] == "category" else c for c in doc["columns"]
    ]
    assert client.put("/v1/datasets/tickets", headers=steward, json=changed).status_code == 200
    assert client.put("/v1/datasets/tickets", headers=steward, json=changed).status_code == 200
    reg, change = actions(hub, start, "manifest.*")
    assert (reg.action, reg.principal, reg.agency) == ("manifest.register", "steward", "gy_12345")
    assert reg.owners == {"tickets": "gy_12345"}
    assert reg.detail["after"]["sharing"] == "unconditional"
    assert change.action == "manifest.change"
    assert change.detail["before"] == {
        "sharing": "unconditional",
        "columns": {"category": {"pii": None, "classification": None}},
    }
    assert change.detail["after"] == {
        "sharing": "conditional",
        "columns": {"category": {"pii": "phone", "classification": None}},
    }
    assert "hotline_db" not in json.dumps([reg.detail, change.detail])  # no source options
    view = client.get("/v1/audit", headers=steward, params={"action": "manifest.*"}).json()
    assert [e["seq"] for e in view] == [change.seq, reg.seq]
    assert hub.audit.verify().ok


# -- grants --------------------------------------------------------------------------------


def test_grant_transitions_are_on_record(
    client: TestClient, hub: Hub, tokens: dict[str, str], clock: SetClock
) -> None:
    """Request, approval (the requested and the granted scope), refusal, revocation, and the
    expiry put on record by the periodic pass (``system``), each with the grantee and the
    dataset's owner; a grant edited in the database afterwards fails verify."""
    hub.store.register_dataset(parse_manifest(manifest_dict(sharing={"type": "conditional"})))
    dev, steward = auth(tokens, "developer"), auth(tokens, "steward")
    start = head(hub)
    body = {
        "purpose": "噪音投诉分析",
        "columns": ["ticket_id", "district_code", "caller_phone"],
        "unmask": ["caller_phone"],
    }
    ids = [
        client.post("/v1/datasets/tickets/access-requests", headers=dev, json=body).json()["id"]
        for _ in range(3)
    ]
    soon = (clock.now() + timedelta(days=2)).isoformat()
    ok = client.post(
        f"/v1/access-requests/{ids[0]}/approve",
        headers=steward,
        json={"columns": ["ticket_id", "caller_phone"], "expires_at": soon},
    )
    assert ok.status_code == 200, ok.text
    client.post(f"/v1/access-requests/{ids[1]}/refuse", headers=steward, json={"reason": "无依据"})
    client.post(f"/v1/access-requests/{ids[2]}/approve", headers=steward, json={})
    client.post(f"/v1/access-requests/{ids[2]}/revoke", headers=steward, json={"reason": "结束"})
    later = clock.now() + timedelta(days=3)
    assert [g.id for g in hub.grants.expire_due(later)] == [ids[0]]
    assert hub.grants.expire_due(later) == []  # once
    got = [
        (e.action, e.principal, e.agency, e.detail["request"])
        for e in actions(hub, start, "grant.*")
    ]
    assert got == [
        ("grant.request", "developer", "gy_hbj", ids[0]),
        ("grant.request", "developer", "gy_hbj", ids[1]),
        ("grant.request", "developer", "gy_hbj", ids[2]),
        ("grant.approve", "steward", "gy_12345", ids[0]),
        ("grant.refuse", "steward", "gy_12345", ids[1]),
        ("grant.approve", "steward", "gy_12345", ids[2]),
        ("grant.revoke", "steward", "gy_12345", ids[2]),
        ("grant.expire", "system", "", ids[0]),
    ]
    approve = actions(hub, start, "grant.approve")[0]
    assert approve.detail["requested"]["columns"] == body["columns"]
    assert approve.detail["granted"]["columns"] == ["ticket_id", "caller_phone"]
    assert approve.detail["granted"]["expires_at"] is not None
    assert all(e.owners == {"tickets": "gy_12345"} for e in actions(hub, start, "grant.*"))
    assert client.get(f"/v1/access-requests/{ids[0]}", headers=dev).json()["status"] == "expired"
    assert hub.audit.verify().ok
    # widening a grant in the database, behind the hub's back, is named by verify
    db = CatalogSQL(hub.store.engine)
    db.execute("UPDATE grants SET status = 'approved', expires_at = NULL WHERE id = ?", (ids[0],))
    db.commit()
    db.close()
    r = hub.audit.verify()
    assert not r.ok and f"grants row '{ids[0]}' was altered" in r.problem


def test_the_ops_tick_puts_expired_grants_on_record(hub: Hub) -> None:
    from hub.live.ops import OpsRuntime

    hub.store.register_dataset(parse_manifest(manifest_dict(sharing={"type": "conditional"})))
    hub.store.identity.create_principal("dev", "gy_hbj", "dev", "developer")
    record = hub.store.get_dataset("tickets")
    then = datetime(2000, 1, 3, tzinfo=UTC)  # a grant that ended long before any test runs
    g = hub.grants.request(
        record,
        agency_id="gy_hbj",
        requested_by="dev",
        purpose="p",
        expires_at=then + timedelta(hours=1),
        now=then,
    )
    hub.grants.approve(g.id, by="system", dataset=record, now=then)
    OpsRuntime(hub).tick()
    assert [e.detail["request"] for e in hub.audit.entries(action="grant.expire")] == [g.id]


# -- alerts, orders ------------------------------------------------------------------------


def test_alert_transitions_are_on_record(
    client: TestClient, hub: Hub, tokens: dict[str, str]
) -> None:
    """Opened by the rules (``system``), acknowledged and resolved by an operator; a repeat
    of an open alert only bumps its count and is no change of state."""
    start = head(hub)
    alert, new = hub.ops.raise_alert(
        "aqi_high",
        "GYAQ01",
        severity="high",
        title="AQI 300",
        source="feed:air",
        detail={"aqi": 300},
    )
    again, repeat = hub.ops.raise_alert(
        "aqi_high",
        "GYAQ01",
        severity="high",
        title="AQI 310",
        source="feed:air",
        detail={"aqi": 310},
    )
    assert new and not repeat and again.count == 2
    op = auth(tokens, "operator")
    assert (
        client.post(f"/v1/alerts/{alert.id}/ack", headers=op, json={"note": "看"}).status_code
        == 200
    )
    assert client.post(f"/v1/alerts/{alert.id}/resolve", headers=op).status_code == 200
    got = [
        (e.action, e.principal, e.detail["alert"], e.detail["status"])
        for e in actions(hub, start, "alert.*")
    ]
    assert got == [
        ("alert.open", "system", alert.id, "open"),
        ("alert.ack", "operator", alert.id, "acknowledged"),
        ("alert.resolve", "operator", alert.id, "resolved"),
    ]
    assert hub.audit.verify().ok  # the bumped count is not part of what the chain binds


def test_order_history_is_bound_to_the_chain(
    client: TestClient, hub: Hub, tokens: dict[str, str]
) -> None:
    """Each order change binds its history row: a history row edited, deleted or added
    outside the hub fails verify, naming the table and the row."""
    op = auth(tokens, "operator")
    order = client.post("/v1/orders", headers=op, json={"target": "gy_hbj", "instructions": "去"})
    oid = order.json()["id"]
    client.post(f"/v1/orders/{oid}/acknowledge", headers=auth(tokens, "developer"))
    entries = actions(hub, 0, "order.*")
    assert [e.action for e in entries] == ["order.open", "order.acknowledge"]
    assert [b[0] for b in entries[1].binds or []] == ["ops_orders", "ops_order_events"]
    assert hub.audit.verify().ok
    db = CatalogSQL(hub.store.engine)
    try:
        db.execute("UPDATE ops_order_events SET actor = 'someone' WHERE action = 'acknowledge'")
        db.commit()
        r = hub.audit.verify()
        assert not r.ok and "ops_order_events row" in r.problem and "altered" in r.problem
        db.execute("UPDATE ops_order_events SET actor = 'developer' WHERE action = 'acknowledge'")
        db.commit()
        assert hub.audit.verify().ok
        db.execute("DELETE FROM ops_order_events WHERE action = 'acknowledge'")
        db.commit()
        r = hub.audit.verify()
        assert not r.ok and "deleted outside the hub" in r.problem
    finally:
        db.close()


# -- quarantine ----------------------------------------------------------------------------


@pytest.fixture
def quarantined(tmp_path: Path, hub: Hub) -> Callable[[], str]:
    """The demo's hotline dataset with rows that fail its suite: a held batch per call."""
    src = tmp_path / "src"
    src.mkdir()
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["source"] = {**file_source(hub, src, "*.parquet"), "cursor": "ticket_id"}
    data["quality"] = {"policy": "drop-rows"}
    hub.store.register_dataset(parse_manifest(data, file="hotline.yaml"))
    n = [0]

    def make() -> str:
        table, _ = bad_tickets(200, first_id=n[0] * 1000 + 1)
        pq.write_table(table, src / f"b{n[0]}.parquet")
        n[0] += 1
        run = hub.ingest("hotline_tickets")
        with hub.store.engine.connect() as conn:
            batch = conn.execute(
                text("SELECT id FROM quarantine_batches WHERE run_id = :r"), {"r": run.id}
            ).scalar()
        assert batch
        return str(batch)

    return make


def test_quarantine_release_and_discard_are_on_record(
    client: TestClient, hub: Hub, tokens: dict[str, str], quarantined: Callable[[], str]
) -> None:
    first, second = quarantined(), quarantined()
    start = head(hub)
    steward = auth(tokens, "steward")
    base = "/v1/datasets/hotline_tickets/quarantine"
    r = client.post(f"{base}/{first}/discard", headers=steward, json={"note": "junk"})
    assert r.status_code == 200, r.text
    manifest: Manifest = hub.store.get_dataset("hotline_tickets").manifest
    release(
        second,
        manifest,
        store=hub.store,
        lake=hub.lake,
        publisher=None,
        principal="steward",
        force=True,
    )
    got = [(e.action, e.principal, e.detail["batch"]) for e in actions(hub, start, "quarantine.*")]
    assert got == [
        ("quarantine.discard", "steward", first),
        ("quarantine.release", "steward", second),
    ]
    discard_entry = actions(hub, start, "quarantine.*")[0]
    assert discard_entry.owners == {"hotline_tickets": "gy_12345"}
    assert discard_entry.detail["note"] == "junk" and discard_entry.detail["rows_discarded"] > 0
    assert hub.audit.verify().ok
    db = CatalogSQL(hub.store.engine)
    db.execute("UPDATE quarantine_actions SET principal = 'nobody' WHERE action = 'discard'")
    db.commit()
    db.close()
    r = hub.audit.verify()
    assert not r.ok and "quarantine_actions row" in r.problem


def test_source_configuration_is_on_record_and_bound(hub: Hub, tmp_path: Path) -> None:
    """Roots and profiles an admin gives an agency: each change on record with before and
    after (secrets by name only), in its transaction, and bound - a root moved or a profile
    pointed elsewhere in the database fails verify.  Their secrets are not digested (a
    digest would let readers of the chain test guesses of them), so a changed secret alone
    does not fail verify: that limit is pinned here."""
    exports = tmp_path / "exports"
    exports.mkdir()
    home = hub  # the CLI on the hub's own stack
    start = head(hub)
    root = cli(home, "source", "root", "add", "gy_12345", "exports", str(exports))
    assert root.exit_code == 0, root.output
    added = cli(
        home,
        *("source", "profile", "add", "gy_12345", "db", "postgres"),
        *("--set", "host=db.example", "--set", "database=hotline"),
        *("--secret-env", "password=PG_PW"),
        env={"PG_PW": "s3cr3t-pw-value"},
    )
    assert added.exit_code == 0, added.output
    assert cli(home, "source", "root", "remove", "gy_12345", "exports").exit_code == 0
    entries = actions(hub, start, "source.config")
    got = [(e.principal, e.agency, e.detail["op"]) for e in entries]
    assert got == [
        ("cli", "_local", "root.add"),
        ("cli", "_local", "profile.add"),
        ("cli", "_local", "root.remove"),
    ]
    assert entries[1].detail["after"]["secrets"] == ["password"]
    assert entries[1].detail["after"]["target"] == "postgres://db.example/hotline"
    assert "s3cr3t-pw-value" not in all_text(hub)
    assert hub.audit.verify().ok
    db = CatalogSQL(hub.store.engine)
    try:
        db.execute("""UPDATE source_profiles SET secrets_json = '{"password": "x"}'""")
        db.commit()
        assert hub.audit.verify().ok  # the documented limit: secrets are not digested
        db.execute(
            """UPDATE source_profiles SET settings_json = """
            """'{"database": "hotline", "host": "evil.example"}'"""
        )
        db.commit()
        r = hub.audit.verify()
        assert not r.ok and "source_profiles row ('gy_12345', 'db') was altered" in r.problem
    finally:
        db.close()


# -- one transaction -----------------------------------------------------------------------


def test_a_change_and_its_entry_commit_together(
    hub: Hub, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """When the entry cannot be written, the change is not made either (and the other way
    round, every change above came with its entry): for each kind of change, the catalog
    is as it was."""
    hub.store.register_dataset(parse_manifest(manifest_dict(sharing={"type": "conditional"})))
    record = hub.store.get_dataset("tickets")
    g = hub.grants.request(record, agency_id="gy_hbj", requested_by="developer", purpose="p")
    g2 = hub.grants.request(record, agency_id="gy_hbj", requested_by="developer", purpose="q")
    order = hub.ops.open_order(target="gy_hbj", instructions="go", opened_by="operator")
    alert, _ = hub.ops.raise_alert("r", "k", severity="low", title="t", source="s", detail={})
    token_id = hub.store.identity.issue_token("developer").split("_")[1]
    folder = tmp_path / "exports"
    folder.mkdir()
    changes: dict[str, Callable[[], Any]] = {
        "agency": lambda: hub.store.identity.upsert_agency("gy_new", "新"),
        "rename": lambda: hub.store.identity.upsert_agency("gy_hbj", "改名"),
        "principal": lambda: hub.store.identity.create_principal(
            "new", "gy_hbj", "new", "developer"
        ),
        "role": lambda: hub.store.identity.set_role("developer", "admin"),
        "token": lambda: hub.store.identity.issue_token("developer"),
        "revoke": lambda: hub.store.identity.revoke_token(token_id),
        "manifest": lambda: hub.store.register_dataset(
            parse_manifest(manifest_dict(sharing={"type": "unconditional"}))
        ),
        "request": lambda: hub.grants.request(
            record, agency_id="gy_hbj", requested_by="developer", purpose="p"
        ),
        "approve": lambda: hub.grants.approve(g.id, by="steward", dataset=record),
        "refuse": lambda: hub.grants.refuse(g2.id, by="steward", reason="no"),
        "order": lambda: hub.ops.open_order(target="gy_hbj", instructions="x", opened_by="op"),
        "act": lambda: hub.ops.act_on_order(order.id, "acknowledge", "developer"),
        "ack": lambda: hub.ops.acknowledge_alert(alert.id, "operator"),
        "root": lambda: hub.sources.sources.add_root(
            "gy_hbj", "exports", str(folder), protected=hub.sources.protected
        ),
        "profile": lambda: hub.sources.sources.add_profile(
            "gy_hbj",
            "db",
            "postgres",
            protected=hub.sources.protected,
            settings={"host": "db.example", "database": "x"},
        ),
        "alert": lambda: hub.ops.raise_alert(
            "r2", "k", severity="low", title="t", source="s", detail={}
        ),
    }
    tables = [t.name for t in BOUND_TABLES if inspect(hub.store.engine).has_table(t.name)]

    def snapshot() -> dict[str, Any]:
        db = CatalogSQL(hub.store.engine)
        try:
            return {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}
        finally:
            db.close()

    def broken(self: AuditLog, conn: Any, entries: Any) -> None:
        raise RuntimeError("the disk is full")

    before, seq = snapshot(), head(hub)
    with monkeypatch.context() as m:
        m.setattr(AuditLog, "chain_in", broken)
        for name, change in changes.items():
            with pytest.raises(RuntimeError, match="disk is full"):
                change()
            assert snapshot() == before, f"{name}: the change was made without its entry"
    assert head(hub) == seq
    for change in changes.values():  # and with the chain writable, each one is recorded
        change()
    assert head(hub) > seq + len(changes) - 1 and hub.audit.verify().ok


# -- what the chain binds ------------------------------------------------------------------


def test_every_column_of_a_bound_table_is_digested_or_excused() -> None:
    """A column added to a table the chain binds must be digested or named as unbound with
    its reason: a new access-relevant column cannot slip by unprotected."""
    from catalog.access.grants import GrantRow
    from catalog.datasets.quality import _meta
    from catalog.ops.store import OpsBase
    from catalog.sources.store import SourceProfileRow, SourceRootRow

    tables = {**Base.metadata.tables, **OpsBase.metadata.tables, **_meta.tables}
    assert {GrantRow.__tablename__, SourceRootRow.__tablename__,
            SourceProfileRow.__tablename__} <= set(tables)  # fmt: skip
    for spec in BOUND_TABLES:
        model = {c.name for c in tables[spec.name].columns}
        listed = set(spec.columns) | set(spec.unbound or {})
        assert model == listed, f"{spec.name}: {sorted(model ^ listed)}"
        assert set(spec.key_columns) <= set(spec.columns)


# -- production mode -----------------------------------------------------------------------


def _blockhub(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BLOCKHUB_")}
    return subprocess.run(
        [sys.executable, "-c", "from hub.cli.main import main; main()", "--home", str(home), *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_start_without_an_audit_key(tmp_path: Path) -> None:
    """``blockhub serve`` (any command) in production mode without a usable key exits with
    one line naming the variable, before anything is created; the embedded default runs
    without a key."""
    home = tmp_path / "home"
    r = _blockhub(home, "serve", "--port", "1", BLOCKHUB_ENV="production")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "refuses to start without an audit key" in r.stderr
    assert "BLOCKHUB_AUDIT_KEY_FILE" in r.stderr and not home.exists()
    short = _blockhub(home, "serve", BLOCKHUB_ENV="production", BLOCKHUB_AUDIT_KEY="tooshortkey")
    assert short.returncode == 2 and "at least 32" in short.stderr
    assert "tooshortkey" not in short.stderr  # the key itself is never shown
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    ok = _blockhub(
        home, "audit", "verify", BLOCKHUB_ENV="production", BLOCKHUB_AUDIT_KEY_FILE=str(key_file)
    )
    assert ok.returncode == 0, ok.stderr
    both = _blockhub(
        home,
        "audit",
        "verify",
        BLOCKHUB_ENV="production",
        BLOCKHUB_AUDIT_KEY_FILE=str(key_file),
        BLOCKHUB_AUDIT_KEY=KEY,
    )
    assert both.returncode == 2 and "not both" in both.stderr
    missing = _blockhub(home, "audit", "verify", BLOCKHUB_AUDIT_KEY_FILE=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read the audit key file" in missing.stderr
    demo = _blockhub(tmp_path / "demo", "audit", "verify")  # development: no key needed
    assert demo.returncode == 0, demo.stderr


def test_a_catalog_on_a_server_is_production_unless_told_otherwise(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    s = Settings(home=tmp_path, catalog_url=url)
    assert s.production
    with pytest.raises(ConfigError, match="refuses to start"):
        s.open_storage()
    with pytest.raises(ConfigError):
        create_app(s)
    assert not Settings(home=tmp_path, catalog_url=url, env="development").production
    assert Settings(home=tmp_path, catalog_url=url, audit_key=KEY).audit_keys().current
    assert KEY not in repr(Settings(home=tmp_path, audit_key=KEY))


def test_a_hub_start_records_its_access_settings_and_what_changed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for rows in (10_000, 500):
        s = Settings(home=home, core_max_rows=rows)
        with TestClient(create_app(s)):
            pass
    h = Hub.open(Settings(home=home))
    try:
        last, first = h.audit.entries(action="hub.start")
        assert first.detail["settings"]["core_max_rows"] == 10_000 and not first.detail["changed"]
        assert last.detail["changed"] == {"core_max_rows": {"before": 10_000, "after": 500}}
        assert last.detail["settings"]["env"] == "development"
    finally:
        h.close()


# -- anchors -------------------------------------------------------------------------------


def test_anchor_export_and_verify_through_the_cli(tmp_path: Path) -> None:
    """Export the head, keep appending: the chain still extends the anchor.  An insider who
    holds the key rewrites an entry before the anchor and re-seals everything: verify alone
    passes, ``verify --anchor`` names the rewrite; an edited anchor file is refused."""
    home = tmp_path / "home"

    def run(*args: str) -> Any:
        return cli(home, *args, env={"BLOCKHUB_AUDIT_KEY": KEY})

    assert run("agency", "add", "a1", "一").exit_code == 0
    assert run("principal", "add", "p1", "--agency", "a1", "--role", "developer").exit_code == 0
    anchor = tmp_path / "anchor.json"
    assert run("audit", "anchor", "--out", str(anchor)).exit_code == 0
    doc = json.loads(anchor.read_text())
    assert (doc["seq"], doc["entries"], doc["alg"]) == (2, 2, "HMAC-SHA256")
    assert run("agency", "add", "a2", "二").exit_code == 0
    ok = run("audit", "verify", "--anchor", str(anchor))
    assert ok.exit_code == 0 and "extends 1 anchor" in ok.output
    # the insider: entry 1 rewritten, every seal recomputed with the real key
    from catalog.audit.seal import GENESIS, canonical_entry, head_payload, key_id, mac

    db = sqlite3.connect(home / "catalog.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM audit_log ORDER BY seq")]
    rows[0]["principal_id"] = "someone else"
    prev = GENESIS
    for r in rows:
        r["prev_hash"] = prev
        r["hash"] = prev = mac(KEY.encode(), canonical_entry(r))
        db.execute(
            "UPDATE audit_log SET principal_id = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (r["principal_id"], r["prev_hash"], r["hash"], r["seq"]),
        )
    db.execute(
        "UPDATE audit_head SET hash = ?, mac = ?, key_id = ?",
        (prev, mac(KEY.encode(), head_payload(len(rows), prev)), key_id(KEY.encode())),
    )
    db.commit()
    db.close()
    assert run("audit", "verify").exit_code == 0  # the key alone cannot tell
    bad = run("audit", "verify", "--anchor", str(anchor))
    assert bad.exit_code == 1 and "entry 2 is not the one anchored" in bad.output
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**doc, "seq": 1}))
    refused = run("audit", "verify", "--anchor", str(forged))
    assert refused.exit_code == 1 and "signature does not match" in refused.output
    junk = tmp_path / "junk.json"
    junk.write_text("{")
    unreadable = run("audit", "verify", "--anchor", str(junk))
    assert unreadable.exit_code != 0 and "junk.json" in str(unreadable.exception)


def test_anchor_endpoint_is_for_admins_and_refuses_a_tampered_chain(
    client: TestClient, hub: Hub, tokens: dict[str, str]
) -> None:
    admin = auth(tokens, "admin")
    for who in ("steward", "operator", "developer"):
        assert client.get("/v1/audit/anchor", headers=auth(tokens, who)).status_code == 403
    anchor = client.get("/v1/audit/anchor", headers=admin).json()
    assert anchor["kind"] == "blockhub.audit.anchor" and anchor["seq"] == head(hub)
    checked = client.post("/v1/audit/verify", headers=admin, json={"anchors": [anchor]})
    assert checked.json()["ok"] is True
    db = CatalogSQL(hub.store.engine)
    db.execute("DELETE FROM audit_datasets WHERE seq = (SELECT max(seq) FROM audit_log)")
    db.execute("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
    db.execute(
        "UPDATE audit_head SET seq = seq - 1, hash = (SELECT hash FROM audit_log "
        "WHERE seq = (SELECT max(seq) FROM audit_log))"
    )
    db.commit()
    db.close()
    refused = client.get("/v1/audit/anchor", headers=admin)
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"
    after = client.post("/v1/audit/verify", headers=admin, json={"anchors": [anchor]}).json()
    assert after["ok"] is False and after["problem"]


def test_rows_from_before_the_chain_had_bound_rows_verify_after_an_upgrade(tmp_path: Path) -> None:
    """A catalog whose audit tables predate owners, binds and seals gains the columns on
    open; its old entries still verify under their old form, and the rows it already held
    are adopted (bound by one ``audit.adopt`` entry), so a later edit of them shows."""
    db_path = tmp_path / "home" / "catalog.db"
    db_path.parent.mkdir()
    db = sqlite3.connect(db_path)
    db.executescript(
        """
        CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, at VARCHAR(40), action VARCHAR(32),
          principal_id VARCHAR(64), agency_id VARCHAR(64), datasets_json TEXT,
          columns_json TEXT, row_count BIGINT, sql_fingerprint VARCHAR(64),
          outcome VARCHAR(16), detail_json TEXT, prev_hash VARCHAR(64), hash VARCHAR(64));
        CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq INTEGER, hash VARCHAR(64),
          updated_at DATETIME);
        CREATE TABLE audit_datasets (seq INTEGER, dataset_id VARCHAR(64), agency_id VARCHAR(64),
          PRIMARY KEY (seq, dataset_id));
        CREATE TABLE agencies (id VARCHAR(64) PRIMARY KEY, name VARCHAR(200), created_at DATETIME);
        CREATE TABLE principals (id VARCHAR(64) PRIMARY KEY, agency_id VARCHAR(64),
          name VARCHAR(200), role VARCHAR(16), created_at DATETIME);
        INSERT INTO agencies VALUES ('a', 'A', '2026-01-01 00:00:00');
        INSERT INTO principals VALUES ('p', 'a', 'P', 'developer', '2026-01-01 00:00:00');
        """
    )
    import hashlib

    old = {
        "seq": 1,
        "at": "2026-01-01T00:00:00+00:00",
        "action": "query",
        "principal_id": "p",
        "agency_id": "a",
        "datasets_json": '{"d": 1}',
        "columns_json": "{}",
        "row_count": 3,
        "sql_fingerprint": None,
        "outcome": "ok",
        "detail_json": "{}",
        "prev_hash": "0" * 64,
    }
    from catalog.audit.seal import canonical_entry

    old["hash"] = hashlib.sha256(canonical_entry(old)).hexdigest()
    db.execute(f"INSERT INTO audit_log VALUES ({','.join('?' * 13)})", tuple(old.values()))
    db.execute("INSERT INTO audit_datasets VALUES (1, 'd', 'a')")
    db.execute("INSERT INTO audit_head VALUES (1, 1, ?, '2026-01-01')", (old["hash"],))
    db.commit()
    db.close()
    h = Hub.open(Settings(home=tmp_path / "home"))
    try:
        h.audit.append(action="query", principal="p", agency="a", datasets={}, dataset_agencies={})
        r = h.audit.verify()
        assert r.ok and r.entries == 3, r.problem
        adopt = h.audit.entries(action="audit.adopt")[0]
        assert adopt.detail == {"rows": {"agencies": 1, "principals": 1}}
        db = sqlite3.connect(db_path)
        db.execute("UPDATE principals SET role = 'admin'")
        db.commit()
        db.close()
        r = h.audit.verify()
        assert not r.ok and "principals row 'p' was altered" in r.problem
    finally:
        h.close()


def test_verify_refuses_an_entry_it_cannot_parse(hub: Hub) -> None:
    hub.audit.append(action="query", principal="p", agency="a", datasets={}, dataset_agencies={})
    db = CatalogSQL(hub.store.engine)
    db.execute(
        "UPDATE audit_log SET detail_json = '{not json' WHERE seq = (SELECT max(seq) "
        "FROM audit_log)"
    )
    db.commit()
    db.close()
    r = hub.audit.verify()
    assert not r.ok and "cannot be read" in r.problem


def test_an_anchor_of_a_chain_that_does_not_verify_is_refused(hub: Hub) -> None:
    hub.audit.append(action="query", principal="p", agency="a", datasets={}, dataset_agencies={})
    db = CatalogSQL(hub.store.engine)
    db.execute("UPDATE audit_log SET row_count = 9 WHERE seq = 1")
    db.commit()
    db.close()
    with pytest.raises(Conflict, match="not anchored"):
        hub.audit.anchor()
