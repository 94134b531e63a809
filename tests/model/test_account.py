from __future__ import annotations

from typing import Any

import pytest

from monitor.model.account import ACCOUNT_FAMILY, account_key, map_account
from monitor.model.types import Placement
from tests.data.graph_directory import INSTANCE_ID, ORGANIZATION, ORGANIZATION_NO_DOMAINS, TENANT_ID

from .j1_schema import check_entity

INTUNE = {
    "intuneAccountId": "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b",
    "intuneSubscriptionState": "active",
    "mobileDeviceManagementAuthority": "intune",
}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"key": account_key(INSTANCE_ID), "display_name": "Local Integration"},
            {
                "_key": f"microsoft_365_account-{INSTANCE_ID}",
                "_type": "microsoft_365_account",
                "_class": ["Account"],
                "id": TENANT_ID,
                "name": "Contoso",
                "displayName": "Local Integration",
                "organizationName": "Contoso",
                "vendor": "Microsoft",
                "defaultDomain": "contoso.com",
                "verifiedDomains": ["contoso.onmicrosoft.com", "contoso.com"],
            },
            id="with-instance-id-and-name",
        ),
        pytest.param(
            {"key": account_key(TENANT_ID), "display_name": None, "intune": INTUNE},
            {
                "_key": f"microsoft_365_account-{TENANT_ID}",
                "_type": "microsoft_365_account",
                "_class": ["Account"],
                "id": TENANT_ID,
                "name": "Contoso",
                "displayName": "Contoso",
                "organizationName": "Contoso",
                "vendor": "Microsoft",
                "defaultDomain": "contoso.com",
                "verifiedDomains": ["contoso.onmicrosoft.com", "contoso.com"],
                **INTUNE,
            },
            id="tenant-id-organization-name-intune",
        ),
        pytest.param(
            {
                "key": account_key(TENANT_ID),
                "display_name": None,
                "intune": {"intuneAccountId": None, "mobileDeviceManagementAuthority": "unknown"},
            },
            {
                "_key": f"microsoft_365_account-{TENANT_ID}",
                "_type": "microsoft_365_account",
                "_class": ["Account"],
                "id": TENANT_ID,
                "name": "Contoso",
                "displayName": "Contoso",
                "organizationName": "Contoso",
                "vendor": "Microsoft",
                "defaultDomain": "contoso.com",
                "verifiedDomains": ["contoso.onmicrosoft.com", "contoso.com"],
                "mobileDeviceManagementAuthority": "unknown",
            },
            id="intune-none-values-omitted",
        ),
    ],
)
def test_map_account(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    upsert = map_account(ORGANIZATION, **kwargs)
    assert upsert.obj == expected
    assert upsert.placement == Placement("entity", ACCOUNT_FAMILY, expected["_key"])
    assert check_entity(upsert.obj) == []


def test_map_account_without_name_or_domains_falls_back_to_the_id() -> None:
    upsert = map_account(ORGANIZATION_NO_DOMAINS, key=account_key(TENANT_ID), display_name=None)
    assert upsert.obj == {
        "_key": f"microsoft_365_account-{TENANT_ID}",
        "_type": "microsoft_365_account",
        "_class": ["Account"],
        "id": TENANT_ID,
        "name": TENANT_ID,
        "displayName": TENANT_ID,
        "vendor": "Microsoft",
    }
    assert check_entity(upsert.obj) == []


def test_map_account_refuses_unknown_intune_keys() -> None:
    with pytest.raises(ValueError, match="intuneAccountID"):
        map_account(ORGANIZATION, key=account_key(TENANT_ID), display_name=None, intune={"intuneAccountID": "x"})


def test_map_account_does_not_change_its_input() -> None:
    before = repr(ORGANIZATION)
    map_account(ORGANIZATION, key=account_key(TENANT_ID), display_name="x", intune=INTUNE)
    assert repr(ORGANIZATION) == before
