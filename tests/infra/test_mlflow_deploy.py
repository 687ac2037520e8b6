"""infra/mlflow: the docker-compose and Kubernetes deployments of the tracking server keep runs in
PostgreSQL and artifacts in S3, require basic auth, check Host headers, publish nothing beyond
loopback/ClusterIP, and take every password from env files or Secrets (docker is not available
here: the files are checked structurally)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = ROOT / "infra" / "mlflow"
SECRET_ENV = {"PGPASSWORD", "POSTGRES_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD",
              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` arguments of ``mlflow server`` (the form both files use)."""
    assert args[:2] == ["mlflow", "server"], args[:2]
    out = {}
    for arg in args[2:]:
        name, sep, value = arg.partition("=")
        assert arg.startswith("--") and sep, f"expected --name=value, got {arg!r}"
        out[name] = value
    return out


def check_server_flags(f: dict[str, str], resolve=lambda v: v) -> None:
    assert f["--app-name"] == "basic-auth"
    backend = resolve(f["--backend-store-uri"])
    assert backend.startswith("postgresql+psycopg2://"), backend
    assert not re.match(r"postgresql\+psycopg2://[^/@]*:[^/@]*@", backend), "a password in the store URI"
    assert resolve(f["--artifacts-destination"]).startswith("s3://")
    hosts = resolve(f["--allowed-hosts"]).split(",")
    assert hosts and "*" not in hosts and all(h.strip() for h in hosts), hosts


def test_compose_postgres_s3_basic_auth_allowed_hosts():
    compose = yaml.safe_load((MLFLOW / "docker-compose.yaml").read_text())
    services = compose["services"]
    server, db = services["mlflow"], services["postgres"]
    check_server_flags(flags(server["command"]))
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    # published on the host's loopback only; the database not at all
    assert all(str(p).startswith("127.0.0.1:") for p in server["ports"]), server["ports"]
    assert "ports" not in db
    # secrets only through env files, whose templates exist and hold placeholders
    assert server["env_file"] == ["mlflow.env"] and db["env_file"] == ["postgres.env"]
    for svc in services.values():
        env = svc.get("environment", {})
        assert not set(env) & SECRET_ENV, sorted(set(env) & SECRET_ENV)
    for template in ("mlflow.env.example", "postgres.env.example"):
        values = dict(line.split("=", 1) for line in (MLFLOW / template).read_text().splitlines()
                      if line and not line.startswith("#"))
        for key in set(values) & SECRET_ENV:
            assert values[key].startswith("CHANGE_ME"), f"{template}: {key} holds a value"
    # the filled-in copies can never be committed by accident
    assert "*.env" in (MLFLOW / ".gitignore").read_text().splitlines()


def test_basic_auth_config_holds_no_secret():
    ini = configparser.ConfigParser()
    ini.read(MLFLOW / "basic_auth.ini")
    section = ini["mlflow"]
    assert section["database_uri"].startswith("postgresql+psycopg2://")
    assert "@" not in section["database_uri"], "credentials in the auth database URI"
    assert "admin_password" not in section
    assert section["default_permission"] in ("READ", "NO_PERMISSIONS")


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((MLFLOW / "k8s" / "mlflow.yaml").read_text()) if d]
    assert not [d for d in docs if d["kind"] in ("Secret", "Ingress")]
    return {d["kind"]: d for d in docs}


def test_k8s_deployment_postgres_s3_basic_auth_allowed_hosts(k8s):
    settings = k8s["ConfigMap"]["data"]
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}} in container["envFrom"]

    def resolve(value: str) -> str:  # Kubernetes' $(VAR) expansion from the container's env
        return re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], value)

    check_server_flags(flags(container["args"]), resolve)
    assert settings["PGHOST"] and settings["PGUSER"] and not set(settings) & SECRET_ENV
    env = {e["name"]: e for e in container["env"]}
    for name in ("PGPASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-secrets", name
    assert all("value" not in e for n, e in env.items() if n in SECRET_ENV)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_k8s_service_is_cluster_internal(k8s):
    svc = k8s["Service"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert not any("nodePort" in p for p in svc["spec"]["ports"])
    assert svc["spec"]["selector"] == k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
