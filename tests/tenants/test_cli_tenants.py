"""`monitor tenants ...`, `monitor cert create` and `monitor status`, run as users run them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.simulator import RunningSimulator, SimTenant, Simulator
from tests.conftest import CLIENT_ID, CLIENT_SECRET, RedisServer
from tests.tenants.conftest import SECOND_TENANT
from tests.test_cli import run


def env_without_tenants(graph: RunningSimulator, redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    return {
        "MONITOR_REDIS_URL": redis_server.url,
        "MONITOR_GRAPH_URL": graph.url,
        "MONITOR_AUTHORITY_URL": graph.url,
        "MONITOR_CA_BUNDLE": str(graph.ca_bundle_path),
        "MONITOR_CLIENT_ID": CLIENT_ID,
        "MONITOR_CLIENT_SECRET": CLIENT_SECRET,
        "MONITOR_SINK": f"jsonl:{tmp_path / 'out.jsonl'}",
    }


@pytest.mark.usefixtures("redis")
async def test_tenants_add_list_show_status_remove(
    sim: Simulator, graph: RunningSimulator, redis_server: RedisServer, fabrikam: SimTenant, tmp_path: Path
) -> None:
    env = env_without_tenants(graph, redis_server, tmp_path)
    code, _, err = await run("sync", env=env)
    assert code == 2 and "no tenant configured" in err and "monitor tenants add" in err

    code, _, err = await run("tenants", "add", SECOND_TENANT, env=env)
    assert code == 1 and "not consented in this tenant" in err and "Traceback" not in err

    sim.grant(SECOND_TENANT, CLIENT_ID, {"User.Read.All", "GroupMember.Read.All", "Organization.Read.All"})
    code, out, err = await run("tenants", "add", SECOND_TENANT, "--polling-interval", "DISABLED", env=env)
    assert code == 0, err
    assert f"tenant {SECOND_TENANT} (registered)" in out and "account name      Fabrikam" in out
    assert "polling interval  DISABLED" in out
    assert "AuditLog.Read.All: MISSING: no sign-in activity on users" in out
    assert "first sync enqueued (account, users, groups)" in out

    code, out, _ = await run("tenants", "list", env=env)
    assert code == 0 and SECOND_TENANT in out and "registered" in out and "Fabrikam" in out

    code, out, _ = await run("worker", "--burst", env=env)
    assert code == 0 and "users:done 1" in out
    code, out, _ = await run("status", env=env)
    assert code == 0 and f"tenant {SECOND_TENANT} (Fabrikam)" in out
    assert "permission   User.Read.All: granted" in out and "last full round" in out

    sim.grant(SECOND_TENANT, CLIENT_ID)  # the administrator consents to everything now
    code, out, _ = await run("tenants", "show", SECOND_TENANT, "--check", env=env)
    assert code == 0 and "AuditLog.Read.All: granted" in out

    code, out, _ = await run("tenants", "remove", SECOND_TENANT, env=env)
    assert code == 0 and f"tenant {SECOND_TENANT} removed" in out and "Redis key(s) deleted" in out
    code, out, _ = await run("tenants", "list", env=env)
    assert code == 0 and SECOND_TENANT not in out


async def test_cert_create_writes_a_usable_certificate_and_prints_thumbprints(tmp_path: Path) -> None:
    code, out, err = await run("cert", "create", "--out", str(tmp_path), "--common-name", "monitor-test", env={})
    assert code == 0, err
    pem, crt = tmp_path / "monitor.pem", tmp_path / "monitor.crt"
    assert pem.stat().st_mode & 0o777 == 0o600
    certificate = x509.load_pem_x509_certificate(crt.read_bytes())
    assert f"SHA-1 thumbprint:     {certificate.fingerprint(hashes.SHA1()).hex().upper()}" in out
    assert f"SHA-256 thumbprint:   {certificate.fingerprint(hashes.SHA256()).hex().upper()}" in out
    assert "Upload certificate" in out
    assert b"PRIVATE KEY" in pem.read_bytes() and b"PRIVATE KEY" not in crt.read_bytes()
    assert "PRIVATE" not in out and "PRIVATE" not in err
    code, _, err = await run("cert", "create", "--out", str(tmp_path), env={})
    assert code == 2 and "exists already" in err
