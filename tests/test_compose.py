"""docker-compose.yml checked against the code (no Docker engine runs here).

What the file promises — every setting it sets exists, every server a setting names is a
service, ports and probe paths are the app's, the files it mounts and copies exist, the
secrets come from the env file, the volumes are writable by the image's user — is what
these tests hold it to, so a setting renamed or added in the code shows up here.
docs/operations.md ("Deploying with docker-compose") says what could not be run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI

from hub.api.app import create_app
from hub.assembly.context import Hub
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
HUBS = ("hub-a", "hub-b")
AIRFLOW = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
IMAGE = "blockhub:local"
#: Variables the CLI reads itself, not through Settings (a caller's token, tracebacks).
CLI_ONLY = {"BLOCKHUB_TOKEN", "BLOCKHUB_DEBUG"}


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${A}``, ``${A:-default}``, ``${A:?error}``; ``$$`` is a
    literal ``$`` left for the container's shell."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg or ""
        raise AssertionError(f"${{{name}}} is not set by .env.example ({arg or 'no default'})")

    parts = value.split("$$")
    return "$".join(_VAR.sub(one, p) for p in parts)


def referenced() -> set[str]:
    text = (ROOT / "docker-compose.yml").read_text("utf-8").replace("$$", "")
    return {m.group("name") for m in _VAR.finditer(text)}


def service_env(name: str) -> dict[str, str]:
    env = SERVICES[name].get("environment") or {}
    assert isinstance(env, dict), f"{name}: environment as a mapping"
    example = env_example()
    return {k: interpolate(str(v), example) for k, v in env.items()}


def setting_names() -> set[str]:
    return {f"BLOCKHUB_{n.upper()}" for n in Settings.model_fields}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    hub = Hub.open(Settings(home=tmp_path_factory.mktemp("compose") / "home"))
    try:
        return create_app(hub.settings, hub=hub)
    finally:
        hub.close()


def route_paths(app: FastAPI) -> set[str]:
    return {getattr(r, "path", "") for r in app.routes}


def test_the_production_services_are_there() -> None:
    needed = {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mosquitto",
        "hub-init",
        "proxy",
        "prometheus",
        "airflow-init",
        *HUBS,
        *AIRFLOW,
    }
    assert needed <= set(SERVICES)
    for name in (*HUBS, "hub-init", *AIRFLOW, "airflow-init"):
        assert SERVICES[name]["image"] == IMAGE, name  # one image, built from the Dockerfile
    assert {"build"} <= set(SERVICES["hub-a"]) and SERVICES["hub-init"]["profiles"] == ["init"]


def test_every_blockhub_variable_set_is_a_setting() -> None:
    known = setting_names() | CLI_ONLY
    for name in SERVICES:
        for var in service_env(name):
            if var.startswith("BLOCKHUB_") and name != "proxy":
                assert var in known, f"{name} sets {var}, which no setting reads"


def test_every_variable_the_code_reads_is_a_documented_setting() -> None:
    """Settings are the one way in; a variable read past them, or a setting no document
    lists, fails here."""
    read = set()
    for package in ("hub", "catalog", "pipelines", "connectors", "expectations"):
        for path in (ROOT / package).rglob("*.py"):
            read |= set(
                re.findall(
                    r"environ(?:\.get)?[\[(]\s*\"(BLOCKHUB_[A-Z0-9_]+)\"", path.read_text("utf-8")
                )
            )
    assert read - setting_names() <= CLI_ONLY | {"BLOCKHUB_MANIFESTS"}, read - setting_names()
    docs = "".join(p.read_text("utf-8") for p in (ROOT / "docs").glob("*.md"))
    assert sorted(v for v in setting_names() | CLI_ONLY if v not in docs) == []


def test_the_hubs_run_in_production_on_the_stacks_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    replica_ids: list[str | None] = []
    for hub in HUBS:
        env = service_env(hub)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s = Settings()
        assert s.production and s.logs_as_json, hub
        assert s.audit_key is None and s.audit_key_file == Path("/run/secrets/blockhub_audit_key")
        assert s.metrics_token_file == Path("/run/secrets/blockhub_metrics_token")
        assert set(SERVICES[hub]["secrets"]) == set(COMPOSE["secrets"])
        # The lake's S3 endpoint: the hub's own setting once there is one (BLOCKHUB_S3_*),
        # until then the AWS variables the S3 clients read.
        if "s3_endpoint" in Settings.model_fields:
            endpoint = getattr(s, "s3_endpoint", None)
        else:
            endpoint = env.get("AWS_ENDPOINT_URL")
        assert endpoint, f"{hub}: no S3 endpoint for the lake"
        hosts = {
            urlsplit(s.catalog_db).hostname,
            urlsplit(s.lake_db).hostname,
            urlsplit(s.events_db).hostname,
            urlsplit(endpoint).hostname,
        }
        assert hosts == {"postgres", "redis", "minio"}
        assert hosts <= set(SERVICES)
        assert s.lake_warehouse.startswith("s3://") and urlsplit(s.events_db).password
        if "replica_id" in Settings.model_fields:  # each replica its own MQTT/Redis identity
            replica_ids.append(env.get("BLOCKHUB_REPLICA_ID"))
        needs = SERVICES[hub]["depends_on"]
        assert {"postgres", "redis", "mosquitto", "minio-init"} <= set(needs)
    assert None not in replica_ids and len(set(replica_ids)) == len(replica_ids)


def test_airflow_runs_the_same_code_on_the_same_catalog() -> None:
    hub = service_env("hub-a")
    for name in AIRFLOW:
        env = service_env(name)
        shared = {k: v for k, v in env.items() if k.startswith(("BLOCKHUB_", "AWS_"))}
        per_replica = ("BLOCKHUB_PORT", "BLOCKHUB_REPLICA_ID")
        assert shared == {k: v for k, v in hub.items() if k not in per_replica}, name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        for url in (env["AIRFLOW__CELERY__BROKER_URL"], env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]):
            assert urlsplit(url).hostname in SERVICES
        execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert execution.hostname == "airflow-api-server"
        assert str(execution.port) in SERVICES["airflow-api-server"]["command"]
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/pipelines/dags"
    assert (ROOT / "pipelines" / "dags").is_dir()
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    assert "'.[celery]'" in dockerfile and "WORKDIR /app" in dockerfile
    assert "apache-airflow-providers-celery" in (ROOT / "pyproject.toml").read_text("utf-8")


def test_ports_and_probe_paths_are_the_apps(app: FastAPI) -> None:
    routes = route_paths(app)
    for hub in HUBS:
        svc = SERVICES[hub]
        port = service_env(hub)["BLOCKHUB_PORT"]
        assert svc["command"][-2:] == ["--port", port] and svc["expose"] == [port]
        [url] = re.findall(r"http://127\.0\.0\.1:\d+/\w+", " ".join(svc["healthcheck"]["test"]))
        assert urlsplit(url).port == int(port) and urlsplit(url).path in routes
    caddy = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text("utf-8")
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddy)
    assert upstreams is not None
    assert upstreams.group(1).split() == [f"{h}:{service_env(h)['BLOCKHUB_PORT']}" for h in HUBS]
    health = re.search(r"health_uri (\S+)", caddy)
    assert health is not None and urlsplit(health.group(1)).path in routes
    assert "tls " in caddy and "443:443" in SERVICES["proxy"]["ports"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] in routes
    assert job["static_configs"][0]["targets"] == [
        f"{h}:{service_env(h)['BLOCKHUB_PORT']}" for h in HUBS
    ]
    secret = Path(job["authorization"]["credentials_file"]).name
    assert secret in SERVICES["prometheus"]["secrets"] and secret in COMPOSE["secrets"]


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on a missing {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck for {name}"
            elif cond["condition"] == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", dep
    for name in ("postgres", "redis", "minio", "mosquitto", *HUBS):
        assert "healthcheck" in SERVICES[name], name


def test_files_the_stack_mounts_and_copies_exist() -> None:
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts a missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: volume {source} is not declared"
    for line in (ROOT / "Dockerfile").read_text("utf-8").splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies a missing {source}"
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text("utf-8")
    [passwd] = re.findall(r"password_file (\S+)", conf)
    mounts = [v.split(":")[1] for v in SERVICES["mosquitto"]["volumes"]]
    assert any(passwd.startswith(m + "/") and not m.endswith(".conf") for m in mounts)


def test_volumes_are_writable_by_the_user_each_service_runs_as() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user not in ("root", "nobody", "0")
    owned = set(re.findall(r"chown \S+ ([^\n\\&]+)", dockerfile)[0].split())
    for name, svc in SERVICES.items():
        if svc.get("image") != IMAGE:
            continue
        for volume in svc.get("volumes") or []:
            source, target = volume.split(":")[:2]
            if not source.startswith("./"):  # a named volume: takes the folder's owner
                assert target in owned, f"{name}: {target} is not owned by {user}"
    assert re.search(rf"useradd .*{user}", dockerfile)


def test_secrets_come_from_the_env_file_and_none_is_committed() -> None:
    example = env_example()
    assert referenced() <= set(example), referenced() - set(example)
    for name, value in example.items():
        if any(w in name for w in ("PASSWORD", "SECRET", "FERNET")):
            assert value == "change-me", f".env.example holds a value for {name}"
    text = (ROOT / "docker-compose.yml").read_text("utf-8")
    assert "BLOCKHUB_AUDIT_KEY:" not in text and "BLOCKHUB_METRICS_TOKEN:" not in text
    ignored = (ROOT / ".gitignore").read_text("utf-8").split()
    assert ".env" in ignored and "secrets/" in ignored
    for file in COMPOSE["secrets"].values():
        assert file["file"].startswith("${")  # a path from the env file, not a committed file
