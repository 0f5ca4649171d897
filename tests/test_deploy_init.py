"""deploy/init.sh, the stack's one init command (``docker compose run --rm hub-init``), run
here as the container would run it: on a fresh PostgreSQL catalog in production mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import fresh_pg_database

ROOT = Path(__file__).resolve().parents[1]
KEY = "init-test-audit-key-" + "k" * 24

pytestmark = pytest.mark.postgres


def _init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ROOT / "deploy" / "init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_init_makes_the_first_admin_once(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "BLOCKHUB_HOME": str(tmp_path / "data"),
            "BLOCKHUB_CATALOG_URL": url,
            "BLOCKHUB_LAKE_CATALOG_URL": url,
            "BLOCKHUB_AUDIT_KEY": KEY,
            "BLOCKHUB_LOG_FORMAT": "json",
            "INIT_ADMIN_ID": "admin",
            "INIT_ADMIN_AGENCY": "gy_dsj",
            "INIT_ADMIN_AGENCY_NAME": "贵阳市大数据发展管理局",
        }
        first = _init(env)
        assert first.returncode == 0, first.stderr
        token = first.stdout.strip().splitlines()[-1]
        assert token.startswith("bh_") and "first admin admin created" in first.stdout
        assert KEY not in first.stdout + first.stderr

        again = _init(env)
        assert again.returncode == 0, again.stderr
        assert "exists already" in again.stdout and "bh_" not in again.stdout

        missing = _init({k: v for k, v in env.items() if k != "INIT_ADMIN_AGENCY"})
        assert missing.returncode != 0 and "INIT_ADMIN_AGENCY" in missing.stderr

        hub = Hub.open(
            Settings(home=tmp_path / "data", catalog_url=url, lake_catalog_url=url, audit_key=KEY)
        )
        try:
            admin = hub.store.identity.authenticate(token)
            assert admin.is_admin and admin.agency_id == "gy_dsj"
            assert hub.audit.verify().ok
        finally:
            hub.close()
