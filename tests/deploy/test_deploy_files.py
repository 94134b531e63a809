"""The deployment files name only things that exist: processes the CLI has, routes the processes
serve, the port they listen on, the Secret they read. No Docker engine or cluster runs here, so the
files are parsed and checked against the code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import build_parser
from monitor.probes import PROBE_PATHS, probe_app
from monitor.settings import Settings
from monitor.supervise import Health
from monitor.web import create_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MONITOR_SERVICES = {"web", "worker", "scheduler"}


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def web_routes() -> set[str]:
    settings = Settings(redis_url="redis://localhost:6379/0")
    app = create_app(settings)
    return {route.resource.canonical for route in app.router.routes() if route.resource is not None}


def probe_routes() -> set[str]:
    app = probe_app(None, Health("worker"))  # type: ignore[arg-type]  # routes only; never served
    return {route.resource.canonical for route in app.router.routes() if route.resource is not None}


def default_port() -> int:
    port = Settings.model_fields["port"].default
    assert isinstance(port, int)
    return port


def kubernetes() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in kubernetes() if doc["kind"] == kind}


def test_procfile_names_cli_processes() -> None:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    processes = dict(line.split(":", 1) for line in lines)
    assert set(processes) == MONITOR_SERVICES
    for name, command in processes.items():
        assert command.split() == ["monitor", name]
        assert name in subcommands()


def test_image_is_multi_stage_small_and_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2 and all(image.endswith("-slim") or image.startswith("python:3.11-slim") for image in stages)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0"))
    assert f"EXPOSE {default_port()}" in dockerfile
    assert 'ENTRYPOINT ["monitor"]' in dockerfile
    (cmd,) = re.findall(r'^CMD \["(\w+)"\]', dockerfile, re.MULTILINE)
    assert cmd in subcommands()
    assert "/healthz" in dockerfile and "/healthz" in web_routes()


def test_compose_runs_the_three_processes_and_a_persistent_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == MONITOR_SERVICES | {"redis"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    for name in MONITOR_SERVICES:
        service = services[name]
        assert service["command"][0] == name and name in subcommands()
        assert service["environment"]["MONITOR_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        (path,) = re.findall(r"127\.0\.0\.1:(\d+)(/\w+)", " ".join(service["healthcheck"]["test"]))
        port, route = int(path[0]), path[1]
        if name == "web":
            assert port == default_port() and route in web_routes()
        else:
            assert port == int(service["environment"]["MONITOR_PROBE_PORT"]) and route in probe_routes()
    assert services["web"]["ports"] == [f"{default_port()}:{default_port()}"]
    for variable in re.findall(r"^(MONITOR_\w+)=", (DEPLOY / "monitor.env.example").read_text(), re.MULTILINE):
        assert variable.removeprefix("MONITOR_").lower() in Settings.model_fields


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def port_number(container_spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container_spec["ports"] if p["name"] == port))


@pytest.mark.parametrize("name", ["monitor-web", "monitor-worker", "monitor-scheduler"])
def test_kubernetes_deployments_probe_routes_that_exist(name: str) -> None:
    deployment = of_kind("Deployment")[name]
    spec = container(deployment)
    process = spec["args"][0]
    assert process in subcommands() and name == f"monitor-{process}"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    secrets = of_kind("Secret")
    assert [source["secretRef"]["name"] for source in spec["envFrom"]] == list(secrets)
    probes = {kind: spec[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    env = {item["name"]: item["value"] for item in spec.get("env", [])}
    for probe in probes.values():
        port = port_number(spec, probe["port"])
        if process == "web":
            assert port == default_port() and probe["path"] in web_routes()
        else:
            assert port == int(env["MONITOR_PROBE_PORT"]) and probe["path"] in probe_routes()
    if process == "scheduler":
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_kubernetes_secret_holds_only_real_settings() -> None:
    (secret,) = of_kind("Secret").values()
    for variable in secret["stringData"]:
        assert variable.startswith("MONITOR_") and variable.removeprefix("MONITOR_").lower() in Settings.model_fields


def test_kubernetes_service_and_ingress_reach_the_webhook() -> None:
    web = container(of_kind("Deployment")["monitor-web"])
    (service,) = of_kind("Service").values()
    selector = service["spec"]["selector"]
    labels = of_kind("Deployment")["monitor-web"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert port_number(web, service_port["targetPort"]) == default_port()
    (ingress,) = of_kind("Ingress").values()
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    routes = web_routes()
    assert {"/graph/notifications", "/graph/lifecycle", "/onboard", "/onboard/callback"} <= {p["path"] for p in paths}
    for path in paths:
        assert path["path"] in routes
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] == service_port["name"]
    assert ingress["spec"]["tls"]
    assert "/status" not in {p["path"] for p in paths} and "/metrics" not in {p["path"] for p in paths}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_probe_paths_are_the_ones_served() -> None:
    assert probe_routes() == set(PROBE_PATHS)


def test_the_example_configuration_guards_status_and_metrics() -> None:
    """/status and /metrics name the tenants watched: each answers only with its token, so the example
    Secret and env file set both (and the Ingress exposes neither: see above)."""
    (secret,) = of_kind("Secret").values()
    environment = re.findall(r"^(MONITOR_\w+)=", (DEPLOY / "monitor.env.example").read_text(), re.MULTILINE)
    for variable in ("MONITOR_OPERATOR_TOKEN", "MONITOR_METRICS_TOKEN"):
        assert variable in secret["stringData"] and variable in environment
        assert variable.removeprefix("MONITOR_").lower() in Settings.model_fields
    assert "/metrics" in web_routes() and "/status" in web_routes()
