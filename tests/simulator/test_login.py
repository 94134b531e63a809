"""The token service, driven by MSAL Python for real (as `monitor` will drive it)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import jwt
import msal
import pytest

from monitor.simulator.ca import create_self_signed_client_certificate
from monitor.simulator.graph_app import Simulator
from monitor.simulator.server import RunningSimulator
from tests.simulator.support import CLIENT_ID, OTHER_TENANT_ID, SECRET, TENANT_ID, GraphClient


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over MSAL's `verify=` (trust_env), and
    some machines set them; without this, MSAL would not trust the simulator's CA."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


class _Msal:
    """An MSAL confidential client, built and used in a worker thread.

    The server runs in this event loop and MSAL blocks (its constructor already fetches the
    discovery document), so every MSAL call goes through asyncio.to_thread.
    """

    def __init__(self, running: RunningSimulator, credential: Any, client_id: str, tenant: str) -> None:
        self.running, self.credential, self.client_id, self.tenant = running, credential, client_id, tenant
        self.app: Any = None

    def _acquire(self) -> dict[str, Any]:
        if self.app is None:
            self.app = msal.ConfidentialClientApplication(
                self.client_id,
                authority=f"{self.running.url}/{self.tenant}",
                client_credential=self.credential,
                instance_discovery=False,
                verify=str(self.running.ca_bundle_path),
            )
        result: dict[str, Any] = self.app.acquire_token_for_client([f"{self.running.url}/.default"])
        return result

    def close(self) -> None:
        """Close MSAL's requests session; a garbage-collected open socket is a ResourceWarning."""
        if self.app is not None:
            self.app.http_client.close()


def _msal_app(running: RunningSimulator, credential: Any, client_id: str = CLIENT_ID, tenant: str = TENANT_ID) -> _Msal:
    return _Msal(running, credential, client_id, tenant)


async def _acquire(running: RunningSimulator, app: _Msal) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(app._acquire)
    finally:
        app.close()


def _jwt_header(assertion: str) -> dict[str, Any]:
    head = assertion.split(".", maxsplit=1)[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return header


async def test_msal_secret_gets_a_token_that_graph_accepts(running: RunningSimulator, sim: Simulator) -> None:
    app = _msal_app(running, SECRET)
    result = await _acquire(running, app)
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3599
    token = sim.tokens[result["access_token"]]
    assert (token.tenant_id, token.client_id) == (TENANT_ID, CLIENT_ID)


async def test_msal_reuses_its_cached_token(running: RunningSimulator, sim: Simulator) -> None:
    app = _msal_app(running, SECRET)
    first = await _acquire(running, app)
    second = await _acquire(running, app)
    assert first["access_token"] == second["access_token"]
    assert sim.tokens_issued[(TENANT_ID, CLIENT_ID)] == 1
    assert sim.count(r"/oauth2/v2.0/token$") == 1


async def test_msal_certificate_credential_signs_ps256_with_x5t_s256(running: RunningSimulator, sim: Simulator) -> None:
    cert_pem, key_pem = create_self_signed_client_certificate("monitor-test")
    sim.register_app("cert-app", certificate_pem=cert_pem)
    sim.grant(TENANT_ID, "cert-app", {"User.Read.All"})
    credential = {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()}
    result = await _acquire(running, _msal_app(running, credential, client_id="cert-app"))
    assert "access_token" in result, result
    assert sim.tokens[result["access_token"]].permissions == frozenset({"User.Read.All"})


async def test_msal_thumbprint_credential_signs_rs256_with_x5t(running: RunningSimulator, sim: Simulator) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert_pem, key_pem = create_self_signed_client_certificate()
    sha1 = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA1()).hex()
    sim.register_app("legacy-app", certificate_pem=cert_pem)
    sim.grant(TENANT_ID, "legacy-app")
    result = await _acquire(
        running, _msal_app(running, {"private_key": key_pem.decode(), "thumbprint": sha1}, "legacy-app")
    )
    assert "access_token" in result, result


async def test_assertion_from_another_key_is_refused(running: RunningSimulator, sim: Simulator) -> None:
    cert_pem, _ = create_self_signed_client_certificate()
    other_cert, other_key = create_self_signed_client_certificate()
    sim.register_app("cert-app", certificate_pem=cert_pem)
    sim.grant(TENANT_ID, "cert-app")
    # Signed with another key but claiming the registered certificate's thumbprint.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from monitor.simulator.assertion import b64url

    s256 = b64url(x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()))
    endpoint = f"{running.url}/{TENANT_ID}/oauth2/v2.0/token"
    now = int(time.time())
    claims = {"aud": endpoint, "iss": "cert-app", "sub": "cert-app", "exp": now + 600, "nbf": now, "jti": "x"}
    assertion = jwt.encode(claims, other_key, algorithm="PS256", headers={"x5t#S256": s256})
    assert _jwt_header(assertion)["alg"] == "PS256"
    assert other_cert != cert_pem
    result = await _acquire(running, _msal_app(running, {"client_assertion": lambda: assertion}, client_id="cert-app"))
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]


async def test_expired_assertion_is_refused(
    running: RunningSimulator, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    cert_pem, key_pem = create_self_signed_client_certificate()
    sim.register_app("cert-app", certificate_pem=cert_pem)
    sim.grant(TENANT_ID, "cert-app")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from monitor.simulator.assertion import b64url

    s256 = b64url(x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()))
    endpoint = f"{running.url}/{TENANT_ID}/oauth2/v2.0/token"
    past = int(time.time()) - 3600
    claims = {"aud": endpoint, "iss": "cert-app", "sub": "cert-app", "exp": past, "nbf": past - 600}
    assertion = jwt.encode(claims, key_pem, algorithm="PS256", headers={"x5t#S256": s256})
    form = {
        "grant_type": "client_credentials",
        "client_id": "cert-app",
        "scope": f"{running.url}/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    async with http.post(endpoint, data=form) as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS700024:")


async def test_wrong_secret_is_invalid_client(running: RunningSimulator) -> None:
    result = await _acquire(running, _msal_app(running, "not-the-secret"))
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


async def test_unknown_app_is_unauthorized_client(running: RunningSimulator) -> None:
    result = await _acquire(running, _msal_app(running, SECRET, client_id="11111111-2222-3333-4444-555555555555"))
    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]
    assert "was not found in the directory" in result["error_description"]


async def test_app_not_consented_in_tenant_is_unauthorized_client(running: RunningSimulator) -> None:
    result = await _acquire(running, _msal_app(running, SECRET, tenant=OTHER_TENANT_ID))
    assert result["error"] == "unauthorized_client"
    assert result["error_description"].startswith(f"AADSTS700016: Application with identifier '{CLIENT_ID}'")


async def test_unknown_tenant_fails_discovery(graph: GraphClient) -> None:
    tenant = "99999999-9999-9999-9999-999999999999"
    status, body, _ = await graph.get(f"/{tenant}/v2.0/.well-known/openid-configuration")
    assert status == 400
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]
    assert body["error_description"].startswith(f"AADSTS90002: Tenant '{tenant}' not found.")


async def test_discovery_document_points_at_the_simulator(graph: GraphClient) -> None:
    body = await graph.get_ok(f"/{TENANT_ID}/v2.0/.well-known/openid-configuration")
    assert body["token_endpoint"] == f"{graph.url}/{TENANT_ID}/oauth2/v2.0/token"
    assert body["issuer"] == f"{graph.url}/{TENANT_ID}/v2.0"


async def test_tenant_can_be_named_by_domain(running: RunningSimulator, sim: Simulator) -> None:
    result = await _acquire(running, _msal_app(running, SECRET, tenant=sim.tenants[TENANT_ID].domain))
    assert "access_token" in result, result


async def test_scope_must_be_the_graph_default_scope(graph: GraphClient) -> None:
    endpoint = f"{graph.url}/{TENANT_ID}/oauth2/v2.0/token"
    base = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET}
    async with graph.session.post(endpoint, data={**base, "scope": f"{graph.url}/User.Read"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_scope"
    async with graph.session.post(endpoint, data={**base, "scope": "https://example.com/.default"}) as response:
        assert response.status == 400
        assert (await response.json())["error_codes"] == [500011]
