"""Graph payloads for the Intune model tests, shaped like the (beta) Graph answers."""

from __future__ import annotations

from typing import Any

ACCOUNT_ID = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"
DEVICE_ID = "4f0a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c"
ADELE = "87d349ed-44d7-43e1-9a83-5f2406dee5bd"
ALEX = "5c2a1c2e-6f0b-4a8a-9d5e-1f2a3b4c5d6e"
GHOST = "00000000-dead-4bee-8f00-000000000000"  # a user the directory does not have
POLICY_ID = "b7f0e6a2-1c3d-4e5f-a6b7-c8d9e0f1a2b3"
CONFIG_ID = "c8a1f7b3-2d4e-4f6a-b7c8-d9e0f1a2b3c4"
APP_ID = "d9b2a8c4-3e5f-4a7b-c8d9-e0f1a2b3c4d5"
DETECTION_ID = "0000000000000000000000000000000000000000000000000000000000000001"

IPHONE: dict[str, Any] = {
    "id": DEVICE_ID,
    "userId": ADELE,
    "deviceName": "Adele's iPhone",
    "managedDeviceOwnerType": "personal",
    "enrolledDateTime": "2024-01-15T09:30:00Z",
    "lastSyncDateTime": "2024-03-01T12:00:00.1234567Z",
    "operatingSystem": "iOS",
    "complianceState": "compliant",
    "jailBroken": "False",
    "managementAgent": "mdm",
    "osVersion": "17.4.1",
    "easActivated": True,
    "easDeviceId": "EASABC123",
    "azureADDeviceId": "11111111-2222-4333-8444-555555555555",
    "azureActiveDirectoryDeviceId": "11111111-2222-4333-8444-555555555555",
    "deviceRegistrationState": "registered",
    "deviceCategoryDisplayName": "Unknown",
    "isSupervised": False,
    "isEncrypted": True,
    "emailAddress": "AdeleV@contoso.com",
    "userPrincipalName": "AdeleV@contoso.com",
    "userDisplayName": "Adele Vance",
    "model": "iPhone 15",
    "manufacturer": "Apple",
    "serialNumber": "F2LXK0ABCDEF",
    "imei": "356789012345678",
    "meid": "",
    "iccid": "8901260123456789012",
    "udid": "00008110-000A1B2C3D4E5F60",
    "phoneNumber": "+1 206 555 0100",
    "wiFiMacAddress": "A4B1C1D2E3F4",
    "ethernetMacAddress": None,
    "managementState": "managed",
    "deviceType": "iPhone",
    "hardwareInformation": {
        "serialNumber": "F2LXK0ABCDEF",
        "manufacturer": "Apple",
        "model": "iPhone15,4",
        "ipAddressV4": "10.1.2.3",
    },
    "deviceHealthAttestationState": None,
    "usersLoggedOn": [
        {"userId": ADELE, "lastLogOnDateTime": "2024-03-01T11:00:00Z"},
        {"userId": ALEX, "lastLogOnDateTime": "2024-02-28T11:00:00Z"},
        {"userId": ALEX, "lastLogOnDateTime": "2024-02-27T11:00:00Z"},
        {"userId": GHOST, "lastLogOnDateTime": "2024-02-26T11:00:00Z"},
    ],
}

# The same device as the public integration maps it, adapted to the current data model.
IPHONE_ENTITY: dict[str, Any] = {
    "_key": DEVICE_ID,
    "_type": "smartphone",
    "_class": ["Host", "Device"],
    "id": DEVICE_ID,
    "deviceId": [DEVICE_ID],
    "name": "Adele's iPhone",
    "displayName": "Adele's iPhone",
    "deviceName": "Adele's iPhone",
    "hostname": None,
    "fqdn": None,
    "category": "endpoint",
    "deviceType": "iPhone",
    "model": "iPhone 15",
    "version": "iPhone 15",
    "make": "Apple",
    "serial": "F2LXK0ABCDEF",
    "serialNumber": "F2LXK0ABCDEF",
    "hardwareVendor": "Apple",
    "hardwareManufacturer": "Apple",
    "hardwareModel": "iPhone15,4",
    "hardwareVersion": "iPhone15,4",
    "hardwareSerial": "F2LXK0ABCDEF",
    "ipAddress": "10.1.2.3",
    "ipv4Addresses": ["10.1.2.3"],
    "ipv6Addresses": None,
    "privateIpAddresses": ["10.1.2.3"],
    "publicIpAddresses": None,
    "wifiMacAddress": "A4B1C1D2E3F4",
    "macAddress": ["a4:b1:c1:d2:e3:f4"],
    "macAddresses": ["a4:b1:c1:d2:e3:f4"],
    "imei": "356789012345678",
    "iccid": "8901260123456789012",
    "udid": "00008110-000A1B2C3D4E5F60",
    "phoneNumber": "+1 206 555 0100",
    "easDeviceId": "EASABC123",
    "assetTag": ["11111111-2222-4333-8444-555555555555"],
    "aadDeviceId": "11111111-2222-4333-8444-555555555555",
    "osName": "iOS",
    "osVersion": "17.4.1",
    "osDetails": "iOS version 17.4.1",
    "osType": "ios",
    "userEmails": ["AdeleV@contoso.com"],
    "userId": ADELE,
    "userDisplayName": "Adele Vance",
    "username": "AdeleV@contoso.com",
    "ownerType": "personal",
    "BYOD": True,
    "encrypted": True,
    "supervised": False,
    "managed": True,
    "jailBroken": False,
    "physical": True,
    "deviceCategoryDisplayName": "Unknown",
    "enrolledDateTime": 1705311000000,
    "lastSyncDateTime": 1709294400123,
    "lastSeenOn": 1709294400123,
}

COMPLIANCE_POLICY: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.iosCompliancePolicy",
    "id": POLICY_ID,
    "displayName": "iOS compliance",
    "description": "",
    "version": 3,
    "createdDateTime": "2023-05-01T08:00:00Z",
    "lastModifiedDateTime": "2024-01-10T08:00:00Z",
}

CONFIGURATION: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.windows10GeneralConfiguration",
    "id": CONFIG_ID,
    "displayName": "Windows security baseline",
    "description": "Baseline for all Windows devices",
    "version": 7,
    "createdDateTime": "2023-06-01T08:00:00Z",
    "lastModifiedDateTime": "2024-02-01T08:00:00Z",
}


def status(policy_id: str, state: str, device_id: str = DEVICE_ID) -> dict[str, Any]:
    return {
        "id": f"{ACCOUNT_ID}_{policy_id}_{device_id}",
        "status": state,
        "lastReportedDateTime": "2024-03-01T12:00:00Z",
    }


WIN32_APP: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.win32LobApp",
    "id": APP_ID,
    "displayName": "Contoso Expenses",
    "description": "Expense reports",
    "publisher": "Contoso IT",
    "createdDateTime": "2023-01-01T00:00:00Z",
    "lastModifiedDateTime": "2024-01-01T00:00:00Z",
    "isFeatured": False,
    "privacyInformationUrl": None,
    "informationUrl": "https://www.contoso.com/it/apps",
    "owner": "Contoso IT",
    "developer": "",
    "notes": "Required for all staff",
    "publishingState": "published",
    "isAssigned": True,
    "displayVersion": "3.2.1",
}

REPORT: dict[str, Any] = {  # DeviceInstallStatusByApp, as retrieveDeviceAppInstallationStatusReport answers it
    "TotalRowCount": 2,
    "Schema": [
        {"Column": "DeviceId", "PropertyType": "String"},
        {"Column": "AppVersion", "PropertyType": "String"},
        {"Column": "AppInstallState", "PropertyType": "Int32"},
        {"Column": "AppInstallState_loc", "PropertyType": "String"},
        {"Column": "AppInstallStateDetails", "PropertyType": "Int32"},
        {"Column": "AppInstallStateDetails_loc", "PropertyType": "String"},
        {"Column": "HexErrorCode", "PropertyType": "String"},
    ],
    "Values": [
        [DEVICE_ID, "3.2.1", 2, "Failed", 0, "", "0x87D1041C"],
        ["", "", 3, "Not installed", 0, "", "0x0"],
    ],
}
