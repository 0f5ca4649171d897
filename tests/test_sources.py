"""Manifests cannot make the hub read what the agency does not own (docs/security.md,
"Sources").

A manifest names one of its agency's file roots plus a relative path, or one of its
connection profiles.  Every other way to name a location — an absolute path, ``..``, a
symlink (also one made after registration), a hard link, a brace pattern, a URL, an
environment reference, a database or broker of its own, an HTTP redirect — is refused
with the file and the field named, nothing registered, nothing read, and every read and
refusal is on the audit chain.
"""

from __future__ import annotations

import http.server
import os
import string
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.errors import InvalidRequest, SourceRefused
from catalog.sources.guard import postgres_dsn, protected_places
from catalog.sources.locations import (
    Confinement,
    HttpOrigin,
    LocationRefused,
    relative_path_problem,
)
from hub.api.app import create_app
from hub.api.server import free_port
from hub.assembly.context import Hub
from tests.conftest import manifest_dict, pg_profile, ticket_rows

BLOCKHUB = str(Path(sys.executable).parent / "blockhub")
SECRET = "hub-audit-key-never-leaves"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """The hotline's export folder with one Parquet export: its file root ``exports``."""
    folder = tmp_path / "exports"
    folder.mkdir()
    pq.write_table(ticket_rows(1, 5), folder / "tickets-1.parquet")
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A Parquet file nobody gave the hotline (a lookalike, so a read would succeed)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    pq.write_table(ticket_rows(100, 3), folder / "secret.parquet")
    return folder / "secret.parquet"


@pytest.fixture
def hotline(hub: Hub, exports: Path) -> Hub:
    hub.sources.sources.add_root(
        "gy_12345", "exports", str(exports), protected=hub.sources.protected
    )
    return hub


def files_manifest(path: str, *, root: str | None = "exports", **source: Any) -> dict[str, Any]:
    src: dict[str, Any] = {"connector": "parquet", "options": {"path": path}, **source}
    if root is not None:
        src["root"] = root
    return manifest_dict(source=src)


def registered(hub: Hub) -> set[str]:
    return {d.id for d in hub.store.list_datasets()}


def reads(hub: Hub) -> list[Any]:
    return list(reversed(hub.audit.entries(action="source.read", limit=1000)))


@pytest.fixture
def client(hub: Hub, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(hub.settings, hub=hub)) as c:
        yield c


def steward(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['steward']}", "Content-Type": "application/json"}


# -- 1. a manifest names no location of its own -------------------------------------------

ATTACKS = [
    # (source, field refused) — each one a way to name a place on the hub's machine
    ({"connector": "csv", "options": {"path": "/etc/passwd"}}, "source.root"),
    ({"connector": "parquet", "options": {"path": "{home}/catalog.db"}}, "source.root"),
    ({"connector": "parquet", "options": {"path": "{home}/lake/**/*.parquet"}}, "source.root"),
    ({"connector": "csv", "options": {"path": "file:///etc/passwd"}}, "source.root"),
    ({"connector": "csv", "options": {"path": "~/.ssh/id_rsa"}}, "source.root"),
    (
        {"connector": "postgres", "options": {"dsn": "host=127.0.0.1 dbname=test", "table": "t"}},
        "source.options.dsn",
    ),
    (
        {
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": "t", "query": "SELECT '${BLOCKHUB_AUDIT_KEY}'"},
        },
        "source.options.query",
    ),
    (
        {"connector": "http_api", "options": {"url": "http://169.254.169.254/latest/meta-data/"}},
        "source.options.url",
    ),
    (
        {"connector": "http_api", "options": {"url": "http://127.0.0.1:8000/v1/audit"}},
        "source.options.url",
    ),
    (
        {"connector": "mqtt", "options": {"host": "10.0.0.1", "topics": ["#"]}},
        "source.options.host",
    ),
    (
        {
            "connector": "csv",
            "options": {"path": "x.csv", "s3": {"endpoint": "http://127.0.0.1:9000"}},
        },
        "source.options.s3",
    ),
]


@pytest.mark.parametrize(("source", "field"), ATTACKS)
def test_rest_registration_refuses_a_location_of_the_manifests_own(
    hub: Hub, client: TestClient, tokens: dict[str, str], source: dict[str, Any], field: str
) -> None:
    """On main every one of these was registered (201) and then read by the next ingest."""
    home = str(hub.settings.home)
    source = yaml.safe_load(yaml.safe_dump(source).replace("{home}", home))
    doc = manifest_dict(id="attack", source=source)
    r = client.post("/v1/datasets", headers=steward(tokens), json=doc)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["ok"] is False and body["code"] == "source_refused"
    assert field in [p["field"] for p in body["detail"]["problems"]]
    assert body["detail"]["file"] == "<request>"
    assert "attack" not in registered(hub)  # nothing registered
    assert SECRET not in r.text


def test_rest_update_cannot_repoint_a_registered_dataset(
    hotline: Hub, client: TestClient, tokens: dict[str, str]
) -> None:
    doc = files_manifest("tickets-*.parquet")
    assert client.post("/v1/datasets", headers=steward(tokens), json=doc).status_code == 201
    doc["source"]["options"]["path"] = "../elsewhere/secret.parquet"
    r = client.put("/v1/datasets/tickets", headers=steward(tokens), json=doc)
    assert r.status_code == 403 and r.json()["code"] == "source_refused"
    stored = hotline.store.get_dataset("tickets").manifest.source.options["path"]
    assert stored == "tickets-*.parquet"  # the earlier registration stands


def test_cli_register_names_the_file_and_field_and_registers_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    subprocess.run([BLOCKHUB, "agency", "add", "gy_12345", "热线"], env=env, check=True)
    good = tmp_path / "a_good.yaml"
    bad = tmp_path / "b_bad.yaml"
    exports = tmp_path / "exports"
    exports.mkdir()
    subprocess.run(
        [BLOCKHUB, "source", "root", "add", "gy_12345", "exports", str(exports)],
        env=env,
        check=True,
    )
    good.write_text(yaml.safe_dump(files_manifest("t-*.parquet") | {"id": "good"}), "utf-8")
    attack = files_manifest("../home/catalog.db") | {"id": "bad"}
    bad.write_text(yaml.safe_dump(attack), "utf-8")
    out = subprocess.run(
        [BLOCKHUB, "register", str(good), str(bad)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert f"{bad}: source.options.path: climbs out of the root" in said
    assert "Traceback" not in out.stderr
    listed = subprocess.run(
        [BLOCKHUB, "datasets"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "bad" not in listed.split() and "good" not in listed.split()  # all or nothing
    # validate catches what needs no configuration (here: an absolute path) on its own.
    bad.write_text(yaml.safe_dump(files_manifest("/etc/passwd") | {"id": "bad"}), "utf-8")
    checked = subprocess.run(
        [BLOCKHUB, "validate", str(bad)], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert "source.options.path: is absolute" in " ".join(checked.stderr.split())


def test_a_manifest_registered_before_these_rules_is_refused_at_read_time(
    hub: Hub, outside: Path
) -> None:
    """Stored manifests (registered under the old rules, or written straight to the
    catalog) meet the same check at every read: nothing is read, the run says why."""
    hub.store.register_dataset(
        parse_manifest(
            manifest_dict(source={"connector": "parquet", "options": {"path": str(outside)}})
        )
    )
    run = hub.ingest("tickets")
    assert run.status == "failed" and run.error is not None
    assert "source.root" in run.error and "source.options.path: is absolute" in run.error
    assert hub.store.versions("tickets") == [] and not hub.lake.exists("tickets")
    [entry] = reads(hub)
    assert (entry.agency, entry.outcome) == ("gy_12345", "denied")
    assert entry.datasets == {"tickets": None} and entry.detail["run"] == run.id


# -- 2. relative paths: every spelling that leaves the root is refused ---------------------

SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "a",
        "b",
        "%2e%2e",
        "%2E%2e",
        "..%2f",
        "...",
        "~",
        "*",
        "**",
        "[ab]",
        "{a,b}",
        "$HOME",
        "${HOME}",
        "\\..",
        "file:",
        "s3:",
        "C:",
        "x\x00y",
        "x\ny",
    ]
)


@given(segments=st.lists(SEGMENTS, min_size=1, max_size=6), absolute=st.booleans())
@settings(max_examples=400, deadline=None)
def test_relative_paths_never_lexically_climb_out(segments: list[str], absolute: bool) -> None:
    """Any spelling the syntax check lets through stays under the root once joined and
    normalised (before a single symlink is looked at)."""
    text = ("/" if absolute else "") + "/".join(segments)
    if relative_path_problem(text) is not None:
        return
    root = "/srv/root"
    joined = os.path.normpath(os.path.join(root, text))
    assert joined == root or joined.startswith(root + "/"), text
    assert "{" not in text and "${" not in text and "\\" not in text


@given(
    path=st.one_of(
        st.sampled_from(
            [
                "../x",
                "a/../../x",
                "/etc/passwd",
                "~root/x",
                "file:///x",
                "a/{b,c}",
                "%2e%2e/x",
                "a\\..\\x",
                "${HOME}/x",
                "s3://other/x",
                "a/\x00",
            ]
        ),
        st.builds(
            lambda a, b: f"{a}/../{b}",
            st.text(string.ascii_lowercase, min_size=1),
            st.text(string.ascii_lowercase, min_size=1),
        ).map(lambda p: "../" + p),
    )
)
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_registration_refuses_climbing_spellings_and_registers_nothing(
    hotline: Hub, path: str
) -> None:
    with pytest.raises(SourceRefused) as e:
        hotline.register(parse_manifest(files_manifest(path)), file="m.yaml")
    assert e.value.file == "m.yaml" and e.value.status == 403
    assert "source.options.path" in [p["field"] for p in e.value.problems]
    assert registered(hotline) == set()


# -- 3. symlinks, hard links, FIFOs: checked on the file actually opened -------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A root with files, folders and links that point inside and outside it."""
    base = tmp_path_factory.mktemp("tree")
    root, out, denied = base / "root", base / "out", base / "root" / "denied"
    for d in (root / "a" / "b", out, denied):
        d.mkdir(parents=True)
    (root / "f").write_text("in")
    (root / "a" / "g").write_text("in")
    (out / "secret").write_text("out")
    (denied / "lake").write_text("hub")
    (root / "link_out").symlink_to(out)
    (root / "link_secret").symlink_to(out / "secret")
    (root / "a" / "link_up").symlink_to("../..")
    (root / "link_in").symlink_to(root / "a")
    (root / "link_denied").symlink_to(denied)
    (root / "loop").symlink_to(root / "loop")
    return {"root": root, "out": out, "denied": denied}


TREE_SEGMENTS = st.sampled_from(
    [
        "f",
        "a",
        "b",
        "g",
        "..",
        ".",
        "link_out",
        "link_secret",
        "link_up",
        "link_in",
        "link_denied",
        "lake",
        "secret",
        "loop",
        "out",
        "root",
    ]
)


@given(segments=st.lists(TREE_SEGMENTS, min_size=1, max_size=7))
@settings(max_examples=500, deadline=None)
def test_an_opened_file_is_always_a_regular_file_inside_the_root(
    tree: dict[str, Path], segments: list[str]
) -> None:
    """Whatever chain of folders, ``..`` and symlinks a path takes, a descriptor comes back
    only for a regular file whose real location is inside the root and not denied."""
    root = str(tree["root"])
    confinement = Confinement(root=root, denied=(str(tree["denied"]),))
    path = os.path.join(root, *segments)
    try:
        fd = confinement.open(path)
    except LocationRefused:
        return
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        assert real.startswith(root + "/") and not real.startswith(str(tree["denied"]))
        assert os.read(fd, 16) == b"in"
    finally:
        os.close(fd)


def test_a_symlink_made_after_registration_is_refused_at_read_time(
    hotline: Hub, exports: Path, outside: Path
) -> None:
    """TOCTOU: the manifest was fine when registered; the export folder then gains a link
    to a file the agency was not given.  The read is refused, nothing is published."""
    hotline.register(parse_manifest(files_manifest("*.parquet")), file="m.yaml")
    assert hotline.ingest("tickets").status == "succeeded"
    (exports / "tickets-2.parquet").symlink_to(outside)
    run = hotline.ingest("tickets")
    assert run.status == "failed" and run.error is not None
    assert "tickets-2.parquet resolves to" in run.error and "outside the root" in run.error
    assert hotline.store.get_version("tickets").total_rows == 5  # version 1 only
    last = reads(hotline)[-1]
    assert (last.outcome, last.agency) == ("denied", "gy_12345")
    assert "outside the root" in last.detail["reason"]


def test_a_folder_swapped_for_a_link_after_registration_is_refused(
    hotline: Hub, exports: Path, outside: Path
) -> None:
    (exports / "daily").mkdir()
    pq.write_table(ticket_rows(1, 2), exports / "daily" / "t.parquet")
    hotline.register(parse_manifest(files_manifest("daily/t.parquet")), file="m.yaml")
    (exports / "daily" / "t.parquet").unlink()
    (exports / "daily").rmdir()
    (exports / "daily").symlink_to(outside.parent)
    os.symlink(outside, outside.parent / "t.parquet")
    run = hotline.ingest("tickets")
    assert run.status == "failed" and "outside the root" in (run.error or "")
    assert not hotline.lake.exists("tickets") or hotline.store.versions("tickets") == []


def test_symlinks_to_the_hubs_own_state_are_refused(hotline: Hub, exports: Path) -> None:
    home = hotline.settings.home
    (exports / "catalog.parquet").symlink_to(home / "catalog.db")
    with pytest.raises(SourceRefused, match="outside the root"):
        hotline.register(parse_manifest(files_manifest("catalog.parquet")), file="m.yaml")
    assert registered(hotline) == set()


def test_a_hard_link_to_a_file_of_the_hub_is_refused(hotline: Hub, exports: Path) -> None:
    """A hard link is a second name of the same file: its path is inside the root, its
    content is the hub's.  On the hub's file system a file with more than one link is
    refused."""
    target = hotline.settings.home / "events.db"
    assert target.exists()
    os.link(target, exports / "tickets-9.parquet")
    hotline.register(parse_manifest(files_manifest("*.parquet")), file="m.yaml")
    run = hotline.ingest("tickets")
    assert run.status == "failed" and "hard links" in (run.error or "")


def test_a_fifo_in_the_root_does_not_hang_the_hub(hotline: Hub, exports: Path) -> None:
    """A plain open of a FIFO blocks until a writer comes; a pattern lists regular files
    only, and a FIFO swapped in after the listing is refused on its descriptor at once."""
    os.mkfifo(exports / "tickets-2.parquet")
    hotline.register(parse_manifest(files_manifest("*.parquet")), file="m.yaml")
    run = hotline.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 5), run.error
    confinement = Confinement(root=str(exports.resolve()))
    with pytest.raises(LocationRefused, match="not a regular file"):
        confinement.open(str(exports / "tickets-2.parquet"))


def test_file_names_are_not_patterns_for_duckdb(hotline: Hub, exports: Path) -> None:
    """DuckDB expands a glob in a path it is given; the hub gives it the open descriptor,
    so a file literally named ``t-*.parquet`` is read as itself, not as every ``t-`` file
    (nor, through a name like ``../*``, anything else)."""
    pq.write_table(ticket_rows(10, 2), exports / "t-*.parquet")
    pq.write_table(ticket_rows(20, 7), exports / "t-other.parquet")
    hotline.register(parse_manifest(files_manifest("t-[*].parquet")), file="m.yaml")
    run = hotline.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 2), run.error


# -- 4. roots: the hub's own places and other agencies' roots are never readable ------------


def test_a_root_may_not_overlap_the_hub_or_another_agency(hub: Hub, tmp_path: Path) -> None:
    guard = hub.sources
    home = hub.settings.home
    for location in (str(home), str(home / "lake"), str(tmp_path), "/"):
        with pytest.raises(InvalidRequest, match="overlaps the hub's own"):
            guard.sources.add_root("gy_12345", "bad", location, protected=guard.protected)
    (tmp_path / "hbj").mkdir()
    guard.sources.add_root("gy_hbj", "exports", str(tmp_path / "hbj"), protected=guard.protected)
    (tmp_path / "hbj" / "sub").mkdir()
    with pytest.raises(Exception, match="overlaps root 'exports' of agency 'gy_hbj'"):
        guard.sources.add_root(
            "gy_12345", "xx", str(tmp_path / "hbj" / "sub"), protected=guard.protected
        )
    link = tmp_path / "sneaky"
    link.symlink_to(home)  # a root is stored as its real path: the link does not hide it
    with pytest.raises(InvalidRequest, match="overlaps the hub's own"):
        guard.sources.add_root("gy_12345", "bad", str(link), protected=guard.protected)
    assert [r.name for r in guard.sources.roots()] == ["exports"]


def test_another_agencys_root_is_not_readable_through_a_link(
    hotline: Hub, exports: Path, tmp_path: Path
) -> None:
    other = tmp_path / "hbj"
    other.mkdir()
    pq.write_table(ticket_rows(200, 4), other / "readings.parquet")
    hotline.sources.sources.add_root(
        "gy_hbj", "exports", str(other), protected=hotline.sources.protected
    )
    (exports / "theirs").symlink_to(other)
    with pytest.raises(SourceRefused, match="outside the root"):
        hotline.register(parse_manifest(files_manifest("theirs/*.parquet")), file="m.yaml")
    # The root is the agency's own: naming the other agency's root by name fails too.
    doc = files_manifest("readings.parquet")
    doc["source"]["root"] = "exports"
    doc["agency"] = "gy_12345"
    hotline.register(parse_manifest(doc), file="m.yaml")  # its own "exports", not gy_hbj's
    run = hotline.ingest("tickets")
    assert run.status == "failed" and "file not found" in (run.error or "")


def test_an_unknown_or_removed_root_is_refused(hotline: Hub) -> None:
    with pytest.raises(SourceRefused, match="has no file root 'nope'"):
        hotline.register(parse_manifest(files_manifest("*.parquet", root="nope")), file="m.yaml")
    hotline.register(parse_manifest(files_manifest("*.parquet")), file="m.yaml")
    hotline.sources.sources.remove_root("gy_12345", "exports")
    run = hotline.ingest("tickets")
    assert run.status == "failed" and "has no file root 'exports'" in (run.error or "")


def test_protected_places_come_from_the_settings(tmp_path: Path) -> None:
    p = protected_places(
        home=str(tmp_path / "home"),
        warehouse="s3://lake-bucket/warehouse/",
        database_urls=[
            "postgresql+psycopg://hub@db.internal:5433/blockhub",
            f"sqlite:///{tmp_path}/elsewhere/events.db",
        ],
    )
    assert str(tmp_path / "home") in p.paths and str(tmp_path / "elsewhere/events.db") in p.paths
    assert p.s3 == ("lake-bucket/warehouse",)
    [db] = p.databases
    assert (db.host, db.port, db.database) == ("db.internal", 5433, "blockhub")


# -- 5. profiles: the server and its secrets are the admin's --------------------------------


def test_a_profile_reads_the_real_postgres_and_the_read_is_audited(
    hub: Hub, pg: Any, make_manifest: Callable[..., Manifest]
) -> None:
    pg.execute(
        "CREATE TABLE tickets (ticket_id bigint PRIMARY KEY, district_code text, "
        "category text, caller_phone text, amount numeric(12,2), updated_at timestamptz)"
    )
    pg.execute("INSERT INTO tickets VALUES (1, '520102', 'x', '1', 1, now())")
    m = make_manifest(
        source={
            "connector": "postgres",
            "profile": pg_profile(hub),
            "options": {"table": f"{pg.schema}.tickets"},
        }
    )
    hub.register(m, file="m.yaml")
    run = hub.ingest("tickets")
    assert run.status == "succeeded", run.error
    [entry] = reads(hub)
    assert (entry.action, entry.agency, entry.outcome) == ("source.read", "gy_12345", "ok")
    assert entry.detail["location"] == "postgres://127.0.0.1:5432/test"
    assert entry.detail["profile"] == "pg_test" and entry.detail["run"] == run.id


def test_a_profile_of_another_kind_or_agency_is_refused(hub: Hub) -> None:
    pg_profile(hub, "gy_hbj", name="hbj_db")
    doc = manifest_dict(
        source={"connector": "postgres", "profile": "hbj_db", "options": {"table": "t"}}
    )
    with pytest.raises(SourceRefused, match="has no connection profile 'hbj_db'"):
        hub.register(parse_manifest(doc), file="m.yaml")
    doc["source"]["connector"] = "mysql"
    doc["source"]["profile"] = "hotline_db"
    with pytest.raises(
        SourceRefused, match="is a postgres profile; connector 'mysql' needs a mysql"
    ):
        hub.register(parse_manifest(doc), file="m.yaml")
    assert registered(hub) == set()


def test_a_profile_cannot_name_the_hubs_own_database(hub: Hub) -> None:
    protected = protected_places(
        home=str(hub.settings.home),
        database_urls=["postgresql+psycopg://postgres@localhost/blockhub_catalog"],
    )
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(InvalidRequest, match="is the hub's own database"):
            hub.sources.sources.add_profile(
                "gy_12345",
                "mine",
                "postgres",
                protected=protected,
                settings={"host": host, "port": 5432, "database": "blockhub_catalog"},
            )


@pytest.mark.parametrize(
    ("kind", "settings_", "message"),
    [
        ("http", {"base_url": "http://169.254.169.254/latest"}, "no source may reach"),
        ("http", {"base_url": "http://[fe80::1]/x"}, "no source may reach"),
        ("http", {"base_url": "http://100.100.100.200/"}, "no source may reach"),
        ("http", {"base_url": "http://user:pw@example.org/"}, "user:password@"),
        ("http", {"base_url": "file:///etc/passwd"}, "http:// or https://"),
        ("mqtt", {"host": "169.254.169.254"}, "no source may reach"),
        ("postgres", {"host": "/var/run/postgresql", "database": "x"}, "letters, digits"),
        ("postgres", {"host": "db", "database": "x passfile=/etc/shadow"}, "letters, digits"),
        ("postgres", {"host": "db", "database": "x", "service": "hub"}, "no setting"),
        ("postgres", {"host": "db", "database": "x", "sslrootcert": "/etc/x"}, "no setting"),
        ("mqtt", {"host": "b", "topic_prefix": "$SYS"}, "may not hold wildcards or start"),
    ],
)
def test_profiles_refuse_what_no_source_may_reach(
    hub: Hub, kind: str, settings_: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        hub.sources.sources.add_profile(
            "gy_12345", "px", kind, protected=hub.sources.protected, settings=settings_
        )


@given(
    host=st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True),
    database=st.text(min_size=1, max_size=20),
    user=st.text(min_size=1, max_size=20),
    password=st.text(min_size=1, max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_profile_values_cannot_add_libpq_keywords(
    host: str, database: str, user: str, password: str
) -> None:
    """Whatever a value holds (spaces, quotes, backslashes, ``passfile=``), the connection
    string libpq parses has exactly the profile's keywords with the profile's values."""
    from psycopg.conninfo import conninfo_to_dict

    if "\x00" in database + user + password:
        return
    dsn = postgres_dsn(
        {"host": host, "database": database, "user": user, "port": 5432}, {"password": password}
    )
    parsed = conninfo_to_dict(dsn)
    assert set(parsed) == {"host", "dbname", "user", "password", "port"}
    assert (parsed["dbname"], parsed["user"], parsed["password"]) == (database, user, password)


ENV_OPTIONS = st.recursive(
    st.sampled_from(["${BLOCKHUB_AUDIT_KEY}", "x${PGPASSWORD}y", "Bearer ${TOKEN}"]),
    lambda inner: (
        st.dictionaries(st.sampled_from(["a", "b", "params"]), inner, min_size=1)
        | st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=5,
)


@given(value=ENV_OPTIONS, key=st.sampled_from(["params", "query", "table", "rename", "topics"]))
@settings(max_examples=150, deadline=None)
def test_no_environment_reference_survives_anywhere_in_the_options(value: Any, key: str) -> None:
    """``${NAME}`` used to be resolved against the hub's own environment (its audit key,
    its database passwords); now any reference, at any depth, refuses the manifest."""
    from catalog.sources.guard import source_problems

    for connector in ("postgres", "http_api", "mqtt", "csv"):
        m = parse_manifest(
            manifest_dict(source={"connector": connector, "profile": "px", "options": {key: value}})
        )
        fields = [p["field"] for p in source_problems(m)]
        assert any(f.startswith(f"source.options.{key}") for f in fields), (connector, fields)


# -- 6. HTTP: every request stays on the profile's origin and base ----------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        if self.path.startswith("/api/jump"):
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
            return
        if self.path.startswith("/api/next"):
            body = b'{"items": [{"ticket_id": 1}], "next": "' + self.target.encode() + b'"}'
        else:
            body = b'[{"ticket_id": 1}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, str]]:
    """Two local HTTP servers: the agency's API (base ``/api``) and a neighbour it must not
    reach (standing in for a metadata service or the hub itself)."""
    servers = []
    for _ in range(2):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    a, b = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    try:
        yield a, b
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def _http_manifest(hub: Hub, base: str, path: str, **options: Any) -> Manifest:
    hub.sources.sources.add_profile(
        "gy_12345",
        "api",
        "http",
        protected=hub.sources.protected,
        settings={"base_url": f"{base}/api"},
        secrets={"headers": {"Authorization": SECRET}},
    )
    return parse_manifest(
        manifest_dict(
            columns=[{"name": "ticket_id", "type": "int64"}],
            primary_key=[],
            block_keys=[],
            source={
                "connector": "http_api",
                "profile": "api",
                "options": {"path": path, **options},
            },
        )
    )


@pytest.mark.parametrize("where", ["other", "same_host_outside_base"])
def test_a_redirect_off_the_profile_is_refused(hub: Hub, api: tuple[str, str], where: str) -> None:
    base, other = api
    _Handler.target = f"{other}/api/data" if where == "other" else f"{base}/admin"
    hub.register(_http_manifest(hub, base, "jump"), file="m.yaml")
    run = hub.ingest("tickets")
    assert run.status == "failed" and run.error is not None
    assert "not on the profile's origin" in run.error or "outside the profile's base" in run.error
    assert SECRET not in run.error
    assert reads(hub)[-1].outcome == "denied"


def test_a_next_link_off_the_profile_is_refused(hub: Hub, api: tuple[str, str]) -> None:
    base, other = api
    _Handler.target = f"{other}/api/data"
    m = _http_manifest(
        hub, base, "next", records="items", pagination={"style": "next_link", "next_path": "next"}
    )
    hub.register(m, file="m.yaml")
    run = hub.ingest("tickets")
    assert run.status == "failed" and "not on the profile's origin" in (run.error or "")


def test_an_http_profile_reads_under_its_base(hub: Hub, api: tuple[str, str]) -> None:
    base, _ = api
    hub.register(_http_manifest(hub, base, "data"), file="m.yaml")
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 1), run.error
    assert reads(hub)[-1].detail["location"] == f"{base}/api/data"
    assert SECRET not in str(reads(hub)[-1].detail)


@given(
    path=st.one_of(
        st.sampled_from(
            [
                "../admin",
                "a/../../x",
                "%2e%2e/x",
                "%2E%2E%2Fx",
                "a%2f..%2f..",
                "//evil.example/x",
                "http://evil/",
                "a\\..\\b",
                "@evil/x",
                "x?y=1",
                "${BASE}",
                "a/%2e%2e/%2e%2e/b",
            ]
        ),
        st.lists(st.sampled_from(["..", "%2e%2e", ".", "a", "%2E."]), min_size=1, max_size=5).map(
            "/".join
        ),
    )
)
@settings(max_examples=200, deadline=None)
def test_http_paths_stay_under_the_base(path: str) -> None:
    """A path either fails the manifest check, or its URL passes the origin check — no
    spelling gets a URL past the check that a server would place outside the base."""
    from catalog.sources.locations import url_path_problem

    origin = HttpOrigin.parse("http://api.example:8080/v1/beds")
    if url_path_problem(path) is not None:
        return
    url = origin.join(path)
    try:
        origin.check(url)
    except LocationRefused:
        return
    decoded = os.path.normpath(httpx.URL(url).path.replace("%2e", ".").replace("%2E", "."))
    assert decoded == "/v1/beds" or decoded.startswith("/v1/beds/"), (path, url)


# -- 7. admin commands: secrets stay in the hub -------------------------------------------


def test_profile_commands_keep_secrets_off_the_screen_and_the_audit(tmp_path: Path) -> None:
    env = {**os.environ, "BLOCKHUB_HOME": str(tmp_path / "home"), "HOTLINE_PW": SECRET}
    env["COLUMNS"] = "200"
    subprocess.run([BLOCKHUB, "agency", "add", "gy_12345", "热线"], env=env, check=True)
    added = subprocess.run(
        [
            BLOCKHUB,
            "source",
            "profile",
            "add",
            "gy_12345",
            "db",
            "postgres",
            "--set",
            "host=127.0.0.1",
            "--set",
            "database=test",
            "--set",
            "user=reader",
            "--secret-env",
            "password=HOTLINE_PW",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = subprocess.run(
        [BLOCKHUB, "source", "profile", "list"], env=env, capture_output=True, text=True, check=True
    )
    audit = subprocess.run(
        [BLOCKHUB, "audit", "list", "--action", "source.*"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "db" in listed.stdout and "password" in listed.stdout
    assert "source.config" in audit.stdout
    for out in (added, listed, audit):
        assert SECRET not in out.stdout + out.stderr
    refused = subprocess.run(
        [
            BLOCKHUB,
            "source",
            "profile",
            "add",
            "gy_12345",
            "meta",
            "http",
            "--set",
            "base_url=http://169.254.169.254/latest",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "no source may reach" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_feed_connections_are_audited(hub: Hub, tmp_path: Path) -> None:
    """An MQTT feed's broker is its profile's; the connection is on the audit chain."""
    import asyncio

    from hub.live.feeds import FeedRunner

    hub.sources.sources.add_profile(
        "gy_hbj",
        "broker",
        "mqtt",
        protected=hub.sources.protected,
        settings={
            "host": "127.0.0.1",
            "port": 1883,
            "topic_prefix": f"blockhub-test/{tmp_path.name}",
        },
    )
    doc = manifest_dict(
        id="aq",
        agency="gy_hbj",
        primary_key=[],
        block_keys=[],
        source={"connector": "mqtt", "profile": "broker", "options": {"topics": ["air/+"]}},
    )
    hub.register(parse_manifest(doc), file="aq.yaml")

    async def start_stop() -> None:
        runner = FeedRunner(hub, rescan_s=3600)
        await runner.start()
        try:
            feed = runner.feeds["aq"]
            assert feed.subscriber is not None
            assert feed.subscriber.topics == [f"blockhub-test/{tmp_path.name}/air/+"]
        finally:
            await runner.stop()

    asyncio.run(start_stop())
    [entry] = reads(hub)
    assert (entry.agency, entry.outcome, entry.detail["trigger"]) == ("gy_hbj", "ok", "feed")
    assert entry.detail["location"] == f"mqtt://127.0.0.1:1883/blockhub-test/{tmp_path.name}"
