"""The CLI as a user meets it: real subprocesses, messages instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import manifest_dict

BLOCKHUB = str(Path(sys.executable).parent / "blockhub")


def run(
    *args: str, home: Path, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKHUB_HOME": str(home), "COLUMNS": "200", **(env or {})}
    env.pop("BLOCKHUB_DEBUG", None)
    return subprocess.run(
        [BLOCKHUB, *args], env=env, capture_output=True, text=True, timeout=240, check=check
    )


def test_demo_tour_runs_end_to_end(tmp_path: Path) -> None:
    out = run("demo", "--tour", "--rows", "3000", home=tmp_path, check=True).stdout
    assert "version 1" in out and "version 2" in out
    assert "time travel: version 1 has 3,000 rows" in out
    assert "gets 403" in out
    assert "dataset:hotline_tickets #3 dataset.updated: version 3" in out
    assert "dataset:air_quality_live #1 dataset.updated: version 1, +20 rows" in out
    # The quality gate's part of the tour, then the steward's commands on its state.
    assert "quality passed: 15/15 expectations met on 3,000 rows" in out
    assert "#4 quality.failed: 3 of 500 rows quarantined (drop-rows)" in out
    assert "#5 dataset.updated: version 4, +497 rows" in out
    demo = tmp_path / "demo" / "hub"
    shown = run("quality", "hotline_tickets", home=demo, check=True).stdout
    assert "dropped" in shown and "be_valid_resident_id(caller_id_number)" in shown
    listed = run("quarantine", "list", "hotline_tickets", home=demo, check=True).stdout
    batch = next(line.split("│")[1].strip() for line in listed.splitlines() if "held" in line)
    rows = run("quarantine", "show", "hotline_tickets", batch, home=demo, check=True).stdout
    assert "caller_phone=2" in rows and "****" in rows  # the mistyped phone, masked
    gone = run(
        "quarantine", "discard", "hotline_tickets", batch, "--as", "steward_12345", home=demo
    )
    assert gone.returncode == 0 and "discarded 3 row(s)" in gone.stdout
    again = run("quarantine", "discard", "hotline_tickets", batch, home=demo)
    assert again.returncode == 2 and "is discarded, not held" in again.stderr


def test_bad_manifest_names_file_and_field_without_traceback(tmp_path: Path) -> None:
    data = manifest_dict(classification="secret")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    res = run("validate", str(path), home=tmp_path / "h")
    assert res.returncode == 2
    assert str(path) in res.stderr and "classification" in res.stderr
    assert "'general', 'important' or 'core'" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    res = run("register", str(path), home=tmp_path / "h")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_admin_flow_and_query(tmp_path: Path) -> None:
    home = tmp_path / "h"
    run("agency", "add", "gy_12345", "贵阳市12345热线", home=home, check=True)
    run(
        "principal", "add", "wm", "--agency", "gy_12345", "--role", "steward", home=home, check=True
    )
    token = run("token", "issue", "wm", home=home, check=True).stdout.strip()
    assert token.startswith("bh_")
    res = run("principal", "add", "x", "--agency", "gy_12345", "--role", "boss", home=home)
    assert res.returncode == 2 and "allowed: admin, steward, operator, developer" in res.stderr
    res = run("query", "SELECT * FROM read_csv('/etc/passwd')", home=home)
    assert res.returncode == 2 and "not allowed" in res.stderr
    res = run("ingest", "nope", home=home)
    assert res.returncode == 2 and "no dataset 'nope'" in res.stderr


def test_cli_as_only_for_whom_the_caller_may_act_and_audited(tmp_path: Path) -> None:
    """The caller is BLOCKHUB_TOKEN's principal (else the home's local operator); ``--as``
    works for the caller itself, a steward for its own agency's non-admins, the local
    operator for anyone — and every ``--as`` for someone else is in the audit log."""
    home = tmp_path / "h"
    run("agency", "add", "gy_12345", "热线", home=home, check=True)
    run("agency", "add", "gy_hbj", "环保", home=home, check=True)
    people = [
        ("wm", "gy_12345", "steward"),
        ("clerk", "gy_12345", "developer"),
        ("boss", "gy_12345", "admin"),
        ("dev", "gy_hbj", "developer"),
    ]
    for pid, agency, role in people:
        run("principal", "add", pid, "--agency", agency, "--role", role, home=home, check=True)
    tok = {p: run("token", "issue", p, home=home, check=True).stdout.strip() for p in ("wm", "dev")}
    sql = "SELECT 1 AS x"
    res = run("query", sql, "--as", "wm", home=home, env={"BLOCKHUB_TOKEN": tok["dev"]})
    assert res.returncode == 2 and "may not act as 'wm'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    res = run("query", sql, "--as", "dev", home=home, env={"BLOCKHUB_TOKEN": tok["dev"]})
    assert res.returncode == 0, res.stderr  # itself
    res = run("query", sql, "--as", "clerk", home=home, env={"BLOCKHUB_TOKEN": tok["wm"]})
    assert res.returncode == 0, res.stderr  # a steward for its own agency
    res = run("query", sql, "--as", "boss", home=home, env={"BLOCKHUB_TOKEN": tok["wm"]})
    assert res.returncode == 2  # not for its agency's admin
    res = run("query", sql, "--as", "dev", home=home, env={"BLOCKHUB_TOKEN": tok["wm"]})
    assert res.returncode == 2  # never for another agency (its grants)
    res = run("query", sql, "--as", "dev", home=home)
    assert res.returncode == 0, res.stderr  # the home's local operator
    listed = run("audit", "list", "--action", "cli.act_as", home=home, check=True).stdout
    assert listed.count("cli.act_as") == 5, listed
    assert listed.count("denied") == 3, listed
