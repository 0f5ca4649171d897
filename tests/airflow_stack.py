"""A real Airflow 3 of a test's own: api-server, scheduler (LocalExecutor) and dag-processor.

Each runs as its own process on a private ``AIRFLOW_HOME`` (SQLite metadata database) and
a free port; the scheduler's task runner reports to the api-server's execution API, as
in production.  The DAG folder is the project's ``pipelines/dags``, and the processes get
the ``BLOCKHUB_*`` variables of the hub they ingest for.  :meth:`AirflowStack.stop` (the
context manager's exit) stops every process it started; every wait is bounded.

Used by tests/test_airflow_scheduler.py; the production end-to-end test can start one
the same way (``with AirflowStack(tmp, blockhub_env) as af: af.wait_for(...)``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from hub.api.server import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPONENTS = ("api-server", "scheduler", "dag-processor")


def airflow_env(home: Path, port: int, blockhub: Mapping[str, str]) -> dict[str, str]:
    """The environment every Airflow process of the stack shares (docs/operations.md
    "Pipelines on Airflow" lists the same settings for a deployment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BLOCKHUB_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",  # two cores, shared
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "pipelines" / "dags"),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        # The DAG file reads the catalog: parse it often, so that a registration shows.
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        # ... and let a DAG that is gone from it (a retired dataset) go stale soon.
        AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD="10",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        # A busy machine answers a task runner's first call slower than the 5 s default.
        AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="30",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        **blockhub,
    )
    return env


class AirflowStack:
    def __init__(self, folder: Path, blockhub: Mapping[str, str]) -> None:
        self.home = folder / "airflow"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = airflow_env(self.home, self.port, blockhub)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def airflow(self, *args: str, timeout: float = 180) -> str:
        """Run an ``airflow`` command with the stack's environment; its output."""
        r = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            said = r.stderr[-3000:]
            raise RuntimeError(f"airflow {' '.join(args)} exited {r.returncode}:\n{said}")
        return r.stdout

    def start(self) -> AirflowStack:
        self.airflow("db", "migrate", timeout=300)
        for name in COMPONENTS:
            log = (self.home / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [str(BIN / "airflow"), name],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(self._api_up, "the api-server to answer", timeout=180)
        return self

    def _api_up(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def dags(self) -> dict[str, dict[str, Any]]:
        """The DAGs Airflow knows, from its metadata database: id → is_stale, is_paused."""
        db = self.home / "airflow.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT dag_id, is_stale, is_paused FROM dag").fetchall()
        return {r[0]: {"is_stale": bool(r[1]), "is_paused": bool(r[2])} for r in rows}

    def dag_runs(self, dag_id: str) -> list[tuple[str, str, str]]:
        """(run_id, run_type, state) of a DAG's runs."""
        db = self.home / "airflow.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = ? ORDER BY id",
                (dag_id,),
            ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def xcoms(self, dag_id: str) -> list[tuple[str, str]]:
        """(task_id, value as stored) of a DAG's tasks' return values: what they handed
        each other."""
        db = self.home / "airflow.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value' "
                "ORDER BY task_id",
                (dag_id,),
            ).fetchall()
        return [(str(t), v.decode() if isinstance(v, bytes) else str(v)) for t, v in rows]

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
        """Poll ``ready`` until it holds; fail with the processes' logs if it does not in
        ``timeout`` seconds, or if a process of the stack exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"airflow {name} exited {proc.returncode}\n{self.logs()}")
            with contextlib.suppress(sqlite3.Error):
                if ready():
                    return
            time.sleep(1)
        raise AssertionError(f"waited {timeout:g} s for {what}\n{self.logs()}")

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for name in COMPONENTS:
            f = self.home / f"{name}.log"
            if f.exists():
                parts.append(f"--- {name} ---\n{f.read_text(errors='replace')[-tail:]}")
        for f in sorted((self.home / "logs").rglob("*.log"))[-4:]:
            text = f.read_text(errors="replace")[-tail:]
            parts.append(f"--- {f.relative_to(self.home)} ---\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every process of the stack (SIGTERM to each process group, then SIGKILL)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def __enter__(self) -> AirflowStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
