"""Headers that are not UTF-8 (a fuzzer's, or an attacker's) on the operator endpoints: a clear 401
or 400 and a failed authentication in the log, never a 500."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import pytest

from monitor.onboarding import cookie_name
from monitor.simulator import SimTenant
from tests.tenants.conftest import OPERATOR_TOKEN, SECOND_TENANT, Deployment, query_of

NOT_UTF8 = b"\xff\xfe\xfa\xc3"


async def raw_get(deployment: Deployment, target: str, *headers: bytes) -> tuple[int, bytes]:
    """GET `target` with the header lines given as bytes, as no HTTP client library would send them."""
    address = urlsplit(deployment.public_url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port, ssl=deployment.ssl)
    lines = [f"GET {target} HTTP/1.1".encode(), b"Host: " + address.netloc.encode(), *headers, b"Connection: close"]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest


@pytest.mark.parametrize("path", ["/status", "/onboard"])
async def test_a_non_utf8_authorization_header_is_a_failed_authentication(
    deployment: Deployment, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        status, _ = await raw_get(deployment, path, b"Authorization: Bearer " + NOT_UTF8)
    assert status == 401
    assert any(f"{path}: missing or wrong operator token" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_non_utf8_cookie_on_the_callback_is_refused_plainly(
    deployment: Deployment, fabrikam: SimTenant, caplog: pytest.LogCaptureFixture
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT)
    async with deployment.browser() as operator:
        start = await operator.get(
            f"{deployment.public_url}/onboard", params={"token": OPERATOR_TOKEN}, allow_redirects=False
        )
        consent = await operator.get(start.headers["Location"], allow_redirects=False)
    callback = urlsplit(consent.headers["Location"])
    state = query_of(consent.headers["Location"])["state"]
    with caplog.at_level(logging.WARNING):
        status, body = await raw_get(
            deployment,
            f"{callback.path}?{callback.query}",
            f"Cookie: {cookie_name(state)}=".encode() + NOT_UTF8,
        )
    assert status == 400 and b"started in another browser" in body
    assert deployment.runtime.tenant(SECOND_TENANT) is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
