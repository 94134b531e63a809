"""What the simulated Intune estate is made of: device kinds, policies, configurations, apps.

Realistic shapes for every Intune `deviceType` the public integration's device `_type` selection
distinguishes (docs/jupiterone.md 1.6), including the awkward ones: a virtual machine (model "Virtual
Machine"), a Windows device that has not reported its model yet, a Cloud PC, a Linux box with a
dotted (FQDN) name, and phones whose names are not valid host names ("Adele's iPhone").
"""

from __future__ import annotations

from typing import NamedTuple


class DeviceKind(NamedTuple):
    device_type: str  # Intune deviceType
    operating_system: str
    os_versions: tuple[str, ...]
    manufacturer: str
    models: tuple[str, ...]  # "" means Intune has no model yet
    platform: str  # which policies, configurations and apps apply
    name_pattern: str  # {first}, {serial}, {n}
    owner_type: str  # managedDeviceOwnerType
    management_agent: str
    weight: int  # share in a seeded estate
    phone: bool = False
    ethernet: bool = False


DEVICE_KINDS: tuple[DeviceKind, ...] = (
    DeviceKind(
        "windowsRT",
        "Windows",
        ("10.0.22631.3447", "10.0.19045.4291", "10.0.22621.3527"),
        "Dell Inc.",
        ("Latitude 7440", "OptiPlex 7010", "Precision 5570"),
        "windows",
        "DESKTOP-{serial}",
        "company",
        "mdm",
        30,
        ethernet=True,
    ),
    DeviceKind(
        "windows",
        "Windows",
        ("10.0.22631.3447",),
        "Microsoft Corporation",
        ("Surface Laptop 5", "Surface Pro 9"),
        "windows",
        "LAPTOP-{serial}",
        "company",
        "configurationManagerClientMdm",
        14,
    ),
    DeviceKind(
        "windows",
        "Windows",
        ("10.0.22631.3447",),
        "Microsoft Corporation",
        ("",),
        "windows",
        "DESKTOP-{serial}",
        "company",
        "mdm",
        2,
    ),
    DeviceKind(
        "windows",
        "Windows",
        ("10.0.20348.2402",),
        "Microsoft Corporation",
        ("Virtual Machine",),
        "windows",
        "VM-{serial}",
        "company",
        "mdm",
        3,
    ),
    DeviceKind(
        "cloudPC",
        "Windows",
        ("10.0.22631.3447",),
        "Microsoft Corporation",
        ("Cloud PC Enterprise 2vCPU/8GB/128GB",),
        "windows",
        "CPC-{first}-{serial}",
        "company",
        "mdm",
        2,
    ),
    DeviceKind(
        "winEmbedded",
        "Windows",
        ("10.0.19044.4291",),
        "HP",
        ("HP t640 Thin Client",),
        "windows",
        "KIOSK-{n}",
        "company",
        "mdm",
        1,
        ethernet=True,
    ),
    DeviceKind(
        "macMDM",
        "macOS",
        ("14.4.1", "13.6.6"),
        "Apple",
        ("MacBookPro18,3", "MacBookAir10,1", "Mac14,2"),
        "macos",
        "{first}s-MacBook-Pro",
        "company",
        "mdm",
        12,
    ),
    DeviceKind(
        "mac",
        "macOS",
        ("14.4.1",),
        "Apple",
        ("iMac21,1", "Macmini9,1"),
        "macos",
        "{first}s-iMac",
        "company",
        "mdm",
        2,
        ethernet=True,
    ),
    DeviceKind(
        "linux",
        "Linux",
        ("22.04", "24.04"),
        "LENOVO",
        ("ThinkPad X1 Carbon Gen 11",),
        "linux",
        "ubuntu-{n}.corp.contoso.com",
        "company",
        "intuneClient",
        2,
    ),
    DeviceKind(
        "iPhone",
        "iOS",
        ("17.4.1", "16.7.7"),
        "Apple",
        ("iPhone 15", "iPhone 14 Pro", "iPhone SE (3rd generation)"),
        "ios",
        "{first}'s iPhone",
        "personal",
        "mdm",
        16,
        phone=True,
    ),
    DeviceKind(
        "iPad",
        "iPadOS",
        ("17.4",),
        "Apple",
        ("iPad Air (5th generation)",),
        "ios",
        "{first}'s iPad",
        "company",
        "mdm",
        3,
    ),
    DeviceKind(
        "androidEnterprise",
        "Android",
        ("14", "13"),
        "samsung",
        ("SM-S911B", "SM-A546B"),
        "android",
        "{first}_Galaxy_{serial}",
        "company",
        "mdm",
        8,
        phone=True,
    ),
    DeviceKind(
        "androidForWork",
        "Android",
        ("14",),
        "Google",
        ("Pixel 8", "Pixel 7a"),
        "android",
        "{first}_Pixel",
        "personal",
        "mdm",
        4,
        phone=True,
    ),
    DeviceKind(
        "holoLens",
        "Windows Holographic for Business",
        ("10.0.22621.1",),
        "Microsoft Corporation",
        ("HoloLens 2",),
        "windows",
        "HOLOLENS-{serial}",
        "company",
        "mdm",
        1,
    ),
)

PLATFORMS = ("windows", "macos", "ios", "android", "linux")

# (display name, @odata.type, platform) of compliance policies; the tenant gets the first N. Policy types
# are ones both v1.0 and beta have (the sweep reads the policy lists from v1.0); app types and their
# version properties are beta's (the sweep reads the app list from beta).
COMPLIANCE_POLICIES: tuple[tuple[str, str, str], ...] = (
    ("Windows 10/11 baseline compliance", "#microsoft.graph.windows10CompliancePolicy", "windows"),
    ("macOS compliance", "#microsoft.graph.macOSCompliancePolicy", "macos"),
    ("iOS compliance", "#microsoft.graph.iosCompliancePolicy", "ios"),
    ("Android Enterprise compliance", "#microsoft.graph.androidWorkProfileCompliancePolicy", "android"),
    ("Windows BitLocker required", "#microsoft.graph.windows10CompliancePolicy", "windows"),
    ("iOS minimum OS", "#microsoft.graph.iosCompliancePolicy", "ios"),
    ("Linux baseline", "#microsoft.graph.deviceCompliancePolicy", "linux"),
    ("Android minimum OS", "#microsoft.graph.androidCompliancePolicy", "android"),
)

DEVICE_CONFIGURATIONS: tuple[tuple[str, str, str], ...] = (
    ("Windows security baseline", "#microsoft.graph.windows10GeneralConfiguration", "windows"),
    ("Windows Defender settings", "#microsoft.graph.windows10EndpointProtectionConfiguration", "windows"),
    ("iOS restrictions", "#microsoft.graph.iosGeneralDeviceConfiguration", "ios"),
    ("iOS device features", "#microsoft.graph.iosDeviceFeaturesConfiguration", "ios"),
    ("macOS device features", "#microsoft.graph.macOSDeviceFeaturesConfiguration", "macos"),
    ("Android work profile", "#microsoft.graph.androidWorkProfileGeneralDeviceConfiguration", "android"),
    ("Windows update ring", "#microsoft.graph.windowsUpdateForBusinessConfiguration", "windows"),
    ("iOS custom profile", "#microsoft.graph.iosCustomConfiguration", "ios"),
    ("macOS restrictions", "#microsoft.graph.macOSGeneralDeviceConfiguration", "macos"),
    ("Windows custom OMA-URI", "#microsoft.graph.windows10CustomConfiguration", "windows"),
)


class AppKind(NamedTuple):
    name: str
    odata_type: str
    platform: str  # "all" for web links
    publisher: str
    version_field: str | None  # where this app type keeps its version
    version: str


MOBILE_APPS: tuple[AppKind, ...] = (
    AppKind("Microsoft 365 Apps for enterprise", "#microsoft.graph.officeSuiteApp", "windows", "Microsoft", None, ""),
    AppKind("Company Portal", "#microsoft.graph.winGetApp", "windows", "Microsoft Corporation", None, ""),
    AppKind("Contoso Expenses", "#microsoft.graph.win32LobApp", "windows", "Contoso IT", "displayVersion", "3.2.1"),
    AppKind("Microsoft Teams", "#microsoft.graph.iosStoreApp", "ios", "Microsoft Corporation", None, ""),
    AppKind("Microsoft Outlook", "#microsoft.graph.androidManagedStoreApp", "android", "Microsoft", None, ""),
    AppKind("Contoso Field App", "#microsoft.graph.managedIOSLobApp", "ios", "Contoso IT", "versionNumber", "2.7"),
    AppKind("Contoso Intranet", "#microsoft.graph.webApp", "all", "Contoso IT", None, ""),
    AppKind("Microsoft Defender", "#microsoft.graph.macOSMicrosoftDefenderApp", "macos", "Microsoft", None, ""),
    AppKind("Zoom", "#microsoft.graph.macOSLobApp", "macos", "Zoom Video Communications", "versionNumber", "6.0.2"),
    AppKind("Authenticator", "#microsoft.graph.iosVppApp", "ios", "Microsoft Corporation", None, ""),
    AppKind("Slack", "#microsoft.graph.androidStoreApp", "android", "Slack Technologies", None, ""),
    AppKind("Contoso VPN", "#microsoft.graph.windowsMobileMSI", "windows", "Contoso IT", "identityVersion", "1.4.0"),
)

# Detected software: (name, publisher, platform, versions). A detectedApp is one (name, version).
DETECTED_SOFTWARE: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Google Chrome", "Google LLC", "windows", ("124.0.6367.91", "123.0.6312.122", "124.0.6367.60")),
    ("Mozilla Firefox", "Mozilla", "windows", ("125.0.2", "124.0.1")),
    ("Microsoft Edge", "Microsoft Corporation", "windows", ("124.0.2478.67",)),
    ("7-Zip 23.01 (x64)", "Igor Pavlov", "windows", ("23.01",)),
    ("Notepad++ (64-bit x64)", "Notepad++ Team", "windows", ("8.6.5", "8.6.4")),
    ("Zoom Workplace", "Zoom Video Communications", "windows", ("6.0.2",)),
    ("Adobe Acrobat (64-bit)", "Adobe", "windows", ("24.002.20687",)),
    ("Microsoft Visual C++ 2015-2022 Redistributable (x64)", "Microsoft Corporation", "windows", ("14.38.33135",)),
    ("Python 3.12.3 (64-bit)", "Python Software Foundation", "windows", ("3.12.3150.0",)),
    ("Git", "The Git Development Community", "windows", ("2.44.0",)),
    ("Safari", "Apple", "macos", ("17.4.1",)),
    ("Google Chrome", "Google LLC", "macos", ("124.0.6367.91",)),
    ("Slack", "Slack Technologies", "macos", ("4.38.121",)),
    ("Visual Studio Code", "Microsoft", "macos", ("1.88.1", "1.87.2")),
    ("Microsoft Teams", "Microsoft", "ios", ("6.5.0",)),
    ("Outlook", "Microsoft", "ios", ("4.2415.0",)),
    ("WhatsApp", "WhatsApp Inc.", "ios", ("24.8.78",)),
    ("Microsoft Teams", "Microsoft", "android", ("1416/1.0.0.2024",)),
    ("Chrome", "Google LLC", "android", ("124.0.6367.82",)),
    ("Samsung Internet", "Samsung", "android", ("24.0.3.4",)),
    ("firefox", "Mozilla", "linux", ("125.0.2",)),
    ("openssh-server", "Canonical", "linux", ("1:8.9p1-3ubuntu0.7",)),
    ("", "", "windows", ("1.0",)),  # Intune reports some detections without a name
)

INSTALL_STATES = {"installed": 1, "failed": 2, "notInstalled": 3, "uninstallFailed": 4, "pendingInstall": 5}
