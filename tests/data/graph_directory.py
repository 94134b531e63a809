"""Microsoft Graph directory objects as `monitor` receives them (fixed ids and timestamps).

Users as items of `GET /users/delta?$select=<USER_SELECT>` (every selected property present, null when
unset), sign-in activity as items of `GET /users?$select=id,signInActivity`, groups as items of
`GET /groups/delta?$select=<GROUP_SELECT>` with `members@delta`, and the organization as an item of
`GET /organization`. Shapes follow the Microsoft Graph v1.0 resource documentation and docs/graph.md 7.
"""

from __future__ import annotations

from typing import Any

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
INSTANCE_ID = "0b5e8f1c-3a7d-4c2e-9f61-8d4a2b7c9e10"

ORGANIZATION: dict[str, Any] = {
    "id": TENANT_ID,
    "deletedDateTime": None,
    "businessPhones": ["+1 425 555 0100"],
    "city": "Redmond",
    "country": None,
    "countryLetterCode": "US",
    "createdDateTime": "2019-04-23T18:06:05Z",
    "displayName": "Contoso",
    "postalCode": "98052",
    "preferredLanguage": "en",
    "state": "WA",
    "street": "One Microsoft Way",
    "tenantType": "AAD",
    "technicalNotificationMails": ["admin@contoso.com"],
    "assignedPlans": [
        {
            "assignedDateTime": "2019-04-23T18:10:11Z",
            "capabilityStatus": "Enabled",
            "service": "exchange",
            "servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0",
        }
    ],
    "verifiedDomains": [
        {
            "capabilities": "Email, OfficeCommunicationsOnline",
            "isDefault": False,
            "isInitial": True,
            "name": "contoso.onmicrosoft.com",
            "type": "Managed",
        },
        {"capabilities": "Email", "isDefault": True, "isInitial": False, "name": "contoso.com", "type": "Managed"},
    ],
}

ORGANIZATION_NO_DOMAINS: dict[str, Any] = {"id": TENANT_ID, "displayName": None, "verifiedDomains": None}

# --- users -------------------------------------------------------------------------------------------------

USER_FULL: dict[str, Any] = {
    "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
    "displayName": "Adele Vance",
    "givenName": "Adele",
    "surname": "Vance",
    "userPrincipalName": "AdeleV@contoso.com",
    "mail": "AdeleV@contoso.com",
    "jobTitle": "Retail Manager",
    "mobilePhone": "+1 425 555 0109",
    "officeLocation": "18/2111",
    "preferredLanguage": "en-US",
    "usageLocation": "US",
    "userType": "Member",
    "accountEnabled": True,
}

USER_NULLS: dict[str, Any] = {
    "id": "5bde3e51-d13b-4db1-9948-fe4b109d11a7",
    "displayName": None,
    "givenName": None,
    "surname": None,
    "userPrincipalName": None,
    "mail": None,
    "jobTitle": None,
    "mobilePhone": None,
    "officeLocation": None,
    "preferredLanguage": None,
    "usageLocation": None,
    "userType": None,
    "accountEnabled": None,
}

USER_ID_ONLY: dict[str, Any] = {"id": "0a5f1b2c-9d8e-4f70-8a6b-5c4d3e2f1a09"}

USER_NAME_FROM_DISPLAY: dict[str, Any] = {
    **USER_NULLS,
    "id": "626cbf8c-5dde-46b0-8385-9e40d64736fe",
    "displayName": "Megan  Bowen",
    "userPrincipalName": "MeganB@contoso.com",
    "mail": "MeganB@contoso.com",
    "userType": "Member",
    "accountEnabled": True,
}

USER_THREE_TOKENS: dict[str, Any] = {
    **USER_NULLS,
    "id": "074e56ea-0b50-4461-89e5-c67ae14a2c0b",
    "displayName": "Conf Room Adams",
    "userPrincipalName": "Adams@contoso.com",
    "mail": "Adams@contoso.com",
    "userType": "Member",
    "accountEnabled": True,
}

USER_ONE_TOKEN: dict[str, Any] = {
    **USER_NULLS,
    "id": "2f6d9d6a-27c4-4a41-9a8a-6f0b0c1d2e3f",
    "displayName": "Helpdesk",
    "userPrincipalName": "helpdesk@contoso.com",
    "mail": None,
    "userType": "Member",
    "accountEnabled": True,
}

USER_GUEST: dict[str, Any] = {
    **USER_NULLS,
    "id": "a1b2c3d4-e5f6-4789-abcd-ef0123456789",
    "displayName": "Alex Wilber (Fabrikam)",
    "givenName": "Alex",
    "surname": "Wilber",
    "userPrincipalName": "alex.wilber_fabrikam.com#EXT#@contoso.onmicrosoft.com",
    "mail": "alex.wilber@fabrikam.com",
    "userType": "Guest",
    "accountEnabled": True,
}

USER_DISABLED: dict[str, Any] = {
    **USER_FULL,
    "id": "e8f3c1a2-7b6d-4e5f-8a9b-0c1d2e3f4a5b",
    "displayName": "Lee Gu",
    "givenName": "Lee",
    "surname": "Gu",
    "userPrincipalName": "LeeG@contoso.com",
    "mail": "LeeG@contoso.com",
    "accountEnabled": False,
}

USER_UPN_WITHOUT_AT: dict[str, Any] = {
    **USER_NULLS,
    "id": "c0ffee00-1234-4abc-8def-0123456789ab",
    "displayName": "Backup Service",
    "userPrincipalName": "svc-backup",
    "userType": "Member",
    "accountEnabled": True,
}

USER_NO_DISPLAY_NAME: dict[str, Any] = {
    **USER_NULLS,
    "id": "d4c3b2a1-0f9e-4d8c-b7a6-958473625140",
    "userPrincipalName": "PattiF@contoso.com",
    "mail": "PattiF@contoso.com",
    "givenName": "Patti",
    "surname": "Fernandez",
    "accountEnabled": True,
}

USER_REMOVED: dict[str, Any] = {"id": USER_DISABLED["id"], "@removed": {"reason": "changed"}}

# --- sign-in activity (GET /users?$select=id,signInActivity) --------------------------------------------

SIGN_IN_FULL: dict[str, Any] = {
    "lastSignInDateTime": "2024-03-01T10:00:00.1234567Z",
    "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000001",
    "lastNonInteractiveSignInDateTime": "2024-03-02T08:15:30Z",
    "lastNonInteractiveSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000002",
    "lastSuccessfulSignInDateTime": "2024-03-01T10:00:00Z",
    "lastSuccessfulSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000001",
}

SIGN_IN_PARTIAL: dict[str, Any] = {
    "lastSignInDateTime": "2024-02-29T23:59:59.5Z",
    "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000003",
    "lastNonInteractiveSignInDateTime": None,
    "lastNonInteractiveSignInRequestId": None,
}

SIGN_IN_WITH_UNKNOWN_KEYS: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.signInActivity",
    "lastSignInDateTime": "2024-03-01T11:00:00+01:00",
    "lastSignInRequestId": "a1b2c3d4-0000-4000-8000-000000000004",
    "lastSuccessfulSignInDateTime": None,
    "lastSignInSomethingNew": "2024-03-01T10:00:00Z",
}

USER_WITH_SIGN_IN: dict[str, Any] = {"id": USER_FULL["id"], "signInActivity": SIGN_IN_FULL}

# --- groups (GET /groups/delta) ---------------------------------------------------------------------------

MEMBER_USER: dict[str, Any] = {"@odata.type": "#microsoft.graph.user", "id": USER_FULL["id"]}
MEMBER_GROUP: dict[str, Any] = {"@odata.type": "#microsoft.graph.group", "id": "b320ee12-b1cd-4cca-b648-a437be61c5cd"}
MEMBER_DEVICE: dict[str, Any] = {"@odata.type": "#microsoft.graph.device", "id": "5d7f6a0e-92a4-4c8b-a3f1-2e6b7d8c9a01"}
MEMBER_SERVICE_PRINCIPAL: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.servicePrincipal",
    "id": "9f1e2d3c-4b5a-4697-8899-aabbccddeeff",
}
MEMBER_ORG_CONTACT: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.orgContact",
    "id": "31a9d7c2-6e5f-4b8a-9c0d-1e2f3a4b5c6d",
    "displayName": "Fabrikam Support",
    "mail": "support@fabrikam.com",
    "jobTitle": "Vendor support desk",
}
MEMBER_USER_ODD_CASE: dict[str, Any] = {"@odata.type": "#Microsoft.Graph.User", "id": USER_DISABLED["id"]}
MEMBER_GROUP_ODD_CASE: dict[str, Any] = {
    "@odata.type": "#Microsoft.Graph.Group",
    "id": "6c1a2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
}
MEMBER_DEVICE_ODD_CASE: dict[str, Any] = {
    "@odata.type": "#Microsoft.Graph.Device",
    "id": "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b",
}
MEMBER_USER_REMOVED: dict[str, Any] = {**MEMBER_USER, "@removed": {"reason": "deleted"}}
MEMBER_DEVICE_REMOVED: dict[str, Any] = {**MEMBER_DEVICE, "@removed": {"reason": "deleted"}}

GROUP_SECURITY: dict[str, Any] = {
    "id": "45b7d2e7-b882-4a80-ba97-10b7a63b8fa4",
    "displayName": "Finance Approvers",
    "description": "Approvers for supplier invoices",
    "classification": None,
    "mail": None,
    "mailEnabled": False,
    "mailNickname": "finance-approvers",
    "securityEnabled": True,
    "createdDateTime": "2019-04-23T18:06:05Z",
    "deletedDateTime": None,
    "renewedDateTime": "2019-04-23T18:06:05Z",
    "groupTypes": [],
    "visibility": None,
    "isAssignableToRole": None,
    "members@delta": [MEMBER_USER, MEMBER_DEVICE],
}

GROUP_M365: dict[str, Any] = {
    "id": "02bd9fd6-8f93-4758-87c3-1fb73740a315",
    "displayName": "Mark 8 Project Team",
    "description": "Welcome to the team that we've assembled to launch our product.",
    "classification": "General",
    "mail": "Mark8ProjectTeam@contoso.com",
    "mailEnabled": True,
    "mailNickname": "Mark8ProjectTeam",
    "securityEnabled": False,
    "createdDateTime": "2024-01-15T16:40:00.0000000Z",
    "deletedDateTime": None,
    "renewedDateTime": "2025-01-10T09:12:45Z",
    "groupTypes": ["Unified"],
    "visibility": "Public",
    "isAssignableToRole": None,
    "members@delta": [MEMBER_USER, MEMBER_USER_ODD_CASE, MEMBER_ORG_CONTACT],
}

GROUP_MAIL_DISABLED_WITH_MAIL: dict[str, Any] = {
    **GROUP_SECURITY,
    "id": "8a7b6c5d-4e3f-4210-9fed-cba987654321",
    "displayName": "Legacy Distribution Copy",
    "description": None,
    "mail": "legacy-dl@contoso.com",
    "mailEnabled": False,
    "mailNickname": "legacy-dl",
    "members@delta": [],
}

GROUP_ROLE_ASSIGNABLE: dict[str, Any] = {
    **GROUP_SECURITY,
    "id": "f0e1d2c3-b4a5-4968-8776-655443322110",
    "displayName": "Tier 0 Administrators",
    "description": "Eligible for privileged directory roles",
    "mailNickname": "tier0-admins",
    "createdDateTime": "2024-03-02T08:15:30Z",
    "renewedDateTime": "2024-03-02T08:15:30Z",
    "visibility": "Private",
    "isAssignableToRole": True,
    "members@delta": [MEMBER_USER, MEMBER_GROUP, MEMBER_SERVICE_PRINCIPAL],
}

GROUP_NO_DISPLAY_NAME: dict[str, Any] = {
    **GROUP_SECURITY,
    "id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "displayName": None,
    "mailNickname": "unnamed-sg",
    "description": None,
    "createdDateTime": None,
    "renewedDateTime": None,
    "groupTypes": None,
    "members@delta": [],
}

# The same large group again on a later delta page: only another slice of its members (docs/graph.md 7.5).
GROUP_M365_MEMBERS_SLICE: dict[str, Any] = {
    "id": GROUP_M365["id"],
    "members@delta": [MEMBER_DEVICE, MEMBER_USER_REMOVED],
}
GROUP_M365_MEMBERS_SLICE_ANNOTATED: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.group",
    "@odata.id": f"directoryObjects/{GROUP_M365['id']}",
    "id": GROUP_M365["id"],
    "members@delta": [MEMBER_SERVICE_PRINCIPAL],
}

GROUP_REMOVED: dict[str, Any] = {"id": GROUP_SECURITY["id"], "@removed": {"reason": "deleted"}}

USERS = (
    USER_FULL,
    USER_NULLS,
    USER_ID_ONLY,
    USER_NAME_FROM_DISPLAY,
    USER_THREE_TOKENS,
    USER_ONE_TOKEN,
    USER_GUEST,
    USER_DISABLED,
    USER_UPN_WITHOUT_AT,
    USER_NO_DISPLAY_NAME,
)
GROUPS = (GROUP_SECURITY, GROUP_M365, GROUP_MAIL_DISABLED_WITH_MAIL, GROUP_ROLE_ASSIGNABLE, GROUP_NO_DISPLAY_NAME)
MEMBERS = (
    MEMBER_USER,
    MEMBER_GROUP,
    MEMBER_DEVICE,
    MEMBER_SERVICE_PRINCIPAL,
    MEMBER_ORG_CONTACT,
    MEMBER_USER_ODD_CASE,
    MEMBER_GROUP_ODD_CASE,
    MEMBER_DEVICE_ODD_CASE,
)
