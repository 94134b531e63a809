"""Admin-consent onboarding end to end: operator request, the simulated consent screen, the callback,
validation, the first sync; and every way the flow must refuse."""

from __future__ import annotations

import pytest

from monitor.keys import TENANTS_REGISTRY
from monitor.permissions import NEEDED_FOR
from monitor.simulator import ALL_PERMISSIONS, SimTenant
from monitor.store import TenantStore
from tests.conftest import CLIENT_ID
from tests.tenants.conftest import OPERATOR_TOKEN, SECOND_TENANT, Deployment, query_of

DIRECTORY_ONLY = {"User.Read.All", "Group.Read.All", "GroupMember.Read.All", "Organization.Read.All"}


async def test_onboarding_from_operator_request_to_first_change_records(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT)
    async with deployment.browser() as browser:
        start = await browser.get(
            f"{deployment.public_url}/onboard",
            params={"token": OPERATOR_TOKEN, "description": "EU subsidiary", "polling_interval": "2h"},
            allow_redirects=False,
        )
        assert start.status == 302
        location = start.headers["Location"]
        assert location.startswith(f"{deployment.sim.base_url}/organizations/v2.0/adminconsent?")
        asked = query_of(location)
        assert asked["client_id"] == CLIENT_ID
        assert asked["scope"] == f"{deployment.sim.base_url}/.default"
        assert asked["redirect_uri"] == f"{deployment.public_url}/onboard/callback"
        assert len(asked["state"]) >= 40
        cookie = start.headers["Set-Cookie"]
        for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/onboard"):
            assert attribute in cookie
        assert OPERATOR_TOKEN not in location and OPERATOR_TOKEN not in cookie

        consent = await browser.get(location, allow_redirects=False)
        back = query_of(consent.headers["Location"])
        assert back == {
            "admin_consent": "True",
            "tenant": SECOND_TENANT,
            "state": asked["state"],
            "scope": asked["scope"],
        }
        result = await browser.get(consent.headers["Location"], allow_redirects=False)
        page = await result.text()

    assert result.status == 200, page
    assert "Tenant connected" in page and "Fabrikam" in page
    for permission in NEEDED_FOR:
        assert permission in page
    assert "Every permission is granted." in page
    permissions = await TenantStore(deployment.redis, SECOND_TENANT).permissions()
    assert {name: entry["state"] for name, entry in permissions.items()} == dict.fromkeys(NEEDED_FOR, "granted")
    registered = deployment.runtime.tenant(SECOND_TENANT)
    assert registered is not None
    assert (registered.account_name, registered.description, registered.polling_interval) == (
        "Fabrikam",
        "EU subsidiary",
        7200.0,
    )

    stats = await deployment.work()
    assert stats.jobs["users:done"] == 1 and stats.jobs["groups:done"] == 1 and stats.jobs["subscriptions:done"] == 1
    records = [r for r in deployment.records() if r["tenant"] == SECOND_TENANT]
    users = {r["after"]["displayName"] for r in records if r["type"] == "azure_user"}
    assert users == {u["displayName"] for u in fabrikam.users.values()}
    assert await TenantStore(deployment.redis, SECOND_TENANT).last_seq() == len(records)
    ours = [s for s in deployment.sim.subscriptions.all() if s.notification_url.startswith(deployment.public_url)]
    assert sorted(s.resource for s in ours) == ["/groups", "/users"]


async def test_a_tenant_missing_optional_permissions_is_saved_and_the_gaps_are_named(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT, permissions=DIRECTORY_ONLY)
    async with deployment.browser() as browser:
        result = await deployment.onboard(browser)
        page = await result.text()
    assert result.status == 200, page
    assert "Tenant connected" in page
    # The page says what each missing permission costs.
    assert "DeviceManagementApps.Read.All</code></td><td>missing</td><td>managed applications" in page
    assert "AuditLog.Read.All</code></td><td>missing</td><td>sign-in activity on users" in page
    assert "Directory.Read.All</code></td><td>not needed" in page
    permissions = await TenantStore(deployment.redis, SECOND_TENANT).permissions()
    assert permissions["User.Read.All"]["state"] == "granted"
    assert permissions["DeviceManagementManagedDevices.Read.All"]["state"] == "missing"


async def test_consent_without_directory_access_is_not_saved(deployment: Deployment, fabrikam: SimTenant) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT, permissions={"Organization.Read.All"})
    async with deployment.browser() as browser:
        result = await deployment.onboard(browser)
        page = await result.text()
    assert result.status == 422
    assert "not saved" in page and "User.Read.All" in page and "GroupMember.Read.All" in page
    assert not await deployment.redis.hlen(TENANTS_REGISTRY)
    assert deployment.runtime.tenant(SECOND_TENANT) is None


@pytest.mark.parametrize(
    ("outcome", "title", "explanation"),
    [
        ("decline", "Consent was declined", "declined or cancelled"),
        ("personal_account", "A personal Microsoft account cannot connect a tenant", "work or school account"),
        ("not_admin", "An administrator must consent", "Global Administrator"),
        ("consumer_tenant", "Consent not usable", "not an organization"),
    ],
)
async def test_refused_consent_explains_itself_and_saves_nothing(
    deployment: Deployment, fabrikam: SimTenant, outcome: str, title: str, explanation: str
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT, outcome=outcome)  # type: ignore[arg-type]
    async with deployment.browser() as browser:
        result = await deployment.onboard(browser)
        page = await result.text()
    assert result.status == 400
    assert title in page and explanation in page and "Nothing was saved" in page
    assert not await deployment.redis.hlen(TENANTS_REGISTRY)
    assert (SECOND_TENANT, CLIENT_ID) not in deployment.sim.grants


async def test_a_forged_state_is_refused(deployment: Deployment, fabrikam: SimTenant) -> None:
    async with deployment.browser() as browser:
        result = await browser.get(
            f"{deployment.public_url}/onboard/callback",
            params={"admin_consent": "True", "tenant": SECOND_TENANT, "state": "forged-state-0123456789abcdefghij"},
            allow_redirects=False,
        )
        page = await result.text()
    assert result.status == 400
    assert "This consent link is not valid" in page and "unknown, expired or already used" in page
    assert deployment.runtime.tenant(SECOND_TENANT) is None


async def test_a_state_is_single_use(deployment: Deployment, fabrikam: SimTenant) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT)
    async with deployment.browser() as browser:
        start = await browser.get(
            f"{deployment.public_url}/onboard", params={"token": OPERATOR_TOKEN}, allow_redirects=False
        )
        consent = await browser.get(start.headers["Location"], allow_redirects=False)
        first = await browser.get(consent.headers["Location"], allow_redirects=False)
        assert first.status == 200
        replay = await browser.get(consent.headers["Location"], allow_redirects=False)
        page = await replay.text()
    assert replay.status == 400 and "already used" in page


async def test_the_callback_must_return_to_the_browser_that_started(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT)
    async with deployment.browser() as operator, deployment.browser() as stranger:
        start = await operator.get(
            f"{deployment.public_url}/onboard", params={"token": OPERATOR_TOKEN}, allow_redirects=False
        )
        consent = await operator.get(start.headers["Location"], allow_redirects=False)
        stolen = await stranger.get(consent.headers["Location"], allow_redirects=False)
        page = await stolen.text()
    assert stolen.status == 400 and "started in another browser" in page
    assert deployment.runtime.tenant(SECOND_TENANT) is None


@pytest.mark.parametrize("path", ["/onboard", "/status"])
async def test_operator_endpoints_need_the_token(deployment: Deployment, path: str) -> None:
    async with deployment.browser() as browser:
        missing = await browser.get(f"{deployment.public_url}{path}", allow_redirects=False)
        wrong = await browser.get(
            f"{deployment.public_url}{path}",
            headers={"Authorization": "Bearer operator-token-for-the-tests-0123456780"},
            allow_redirects=False,
        )
        right = await browser.get(
            f"{deployment.public_url}{path}",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            allow_redirects=False,
        )
    assert missing.status == 401 and wrong.status == 401
    assert right.status in (200, 302)


async def test_status_lists_registered_tenants_with_permissions_and_subscriptions(
    deployment: Deployment, fabrikam: SimTenant
) -> None:
    deployment.sim.consent.sign_in_as(SECOND_TENANT, permissions=ALL_PERMISSIONS - {"AuditLog.Read.All"})
    async with deployment.browser() as browser:
        assert (await deployment.onboard(browser)).status == 200
        await deployment.work()
        answer = await browser.get(
            f"{deployment.public_url}/status", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        )
        body = await answer.json()
    (status,) = body["tenants"]
    assert status["tenant"] == SECOND_TENANT and status["account_name"] == "Fabrikam"
    assert status["permissions"]["AuditLog.Read.All"]["state"] == "missing"
    assert {s["resource"] for s in status["subscriptions"]} == {"/users", "/groups"}
    assert all(s["expires_in_seconds"] > 86400 for s in status["subscriptions"])
    assert status["sources"]["users"]["last_round_at"] and status["sources"]["users"]["delta_token_age_seconds"] >= 0
    assert status["change_log"]["records"] > 0
    assert status["alerts"]["rules"] == 0
    assert "clientState" not in answer.headers.get("content-type", "") and "clientState" not in str(body)
