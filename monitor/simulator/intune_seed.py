"""Fill a simulated tenant with an Intune estate, fast, and change it the way real estates change.

`seed_intune` attaches an `IntuneTenant` to `Simulator.intune`: 100,000 devices take a couple of
seconds and little memory (see monitor.simulator.intune). Devices belong to the tenant's directory
users (a few are shared, a few belong to users the directory no longer has), and some have other
users logged on. `churn` changes a share of the devices in the mixes a sweep sees in practice:
check-ins, compliance flips, software installed and removed, renames, retirements, enrolments.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from typing import TYPE_CHECKING

from monitor.simulator.intune import IntuneTenant, seed_policies
from monitor.simulator.intune_catalog import DEVICE_KINDS

if TYPE_CHECKING:
    from monitor.simulator.state import SimulatorState


def seed_intune(
    sim: SimulatorState,
    tenant_id: str,
    *,
    devices: int = 50,
    compliance_policies: int = 8,
    device_configurations: int = 10,
    mobile_apps: int = 12,
    detected_titles: int = 40,
    apps_per_profile: int = 6,
    licensed: bool = True,
    page_size: int = 1000,
    rng_seed: int = 1,
) -> IntuneTenant:
    """Give `tenant_id` Intune (or, with `licensed=False`, a tenant without it) and seed the estate.

    `detected_titles` synthetic line-of-business titles are added to the catalogue's real software;
    each device gets about `apps_per_profile` detected apps. Deterministic for a given directory.
    """
    directory = sim.tenant(tenant_id)
    intune = IntuneTenant(directory, licensed=licensed, page_size=page_size, rng_seed=rng_seed)
    sim.intune[directory.tenant_id] = intune
    if not licensed:
        return intune
    directory.organization["mobileDeviceManagementAuthority"] = "intune"
    seed_policies(intune, compliance_policies, device_configurations)
    for index in range(mobile_apps):
        intune.add_mobile_app(index)
    intune.build_detected_software(detected_titles, apps_per_profile)
    add_devices(intune, devices, random.Random(f"devices:{rng_seed}:{directory.tenant_id}"))
    return intune


def add_devices(intune: IntuneTenant, count: int, rng: random.Random) -> list[str]:
    users = list(intune.directory.users)
    weights = [kind.weight for kind in DEVICE_KINDS]
    kinds = rng.choices(range(len(DEVICE_KINDS)), weights, k=count)
    added = []
    for kind in kinds:
        owner = _owner(intune, users, rng)
        logged_on: list[str] = []
        if owner and rng.random() < 0.7:
            logged_on.append(owner)
        if rng.random() < 0.2:
            other = _owner(intune, users, rng)
            if other and other not in logged_on:
                logged_on.append(other)
        added.append(intune.add_device(kind, owner, tuple(logged_on)))
    return added


def _owner(intune: IntuneTenant, users: list[str], rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.05 or not users:
        return None  # a shared device (kiosk, meeting room)
    if roll < 0.07:
        return intune.new_id()  # a user the directory no longer has
    return users[rng.randrange(len(users))]


def churn(
    intune: IntuneTenant, fraction: float, rng_seed: int = 1, changed: dict[str, list[str]] | None = None
) -> Counter[str]:
    """Change `fraction` of the devices, one change each; returns what was done, by kind. `changed`, when
    given, receives the ids of the devices changed, by kind."""
    rng = random.Random(f"churn:{rng_seed}:{intune.version}")
    chosen = rng.sample(list(intune.devices), max(1, round(len(intune.devices) * fraction)))
    done: Counter[str] = Counter()
    policies = list(intune.policy_platform)
    detected = list(intune.detected)
    for device_id in chosen:
        before = done.copy()
        roll = rng.random()
        device = intune.devices[device_id]
        if roll < 0.4:
            intune.check_in(device_id)
            done["check-in"] += 1
        elif roll < 0.6:
            mine = [p for p in policies if intune.policy_platform[p] == device.spec.platform]
            if mine:
                policy = rng.choice(mine)
                current = intune.status(policy, device)
                intune.set_status(policy, device_id, "compliant" if current != "compliant" else "nonCompliant")
                intune.check_in(device_id)  # the device reports its status when it syncs
                done["compliance flip"] += 1
        elif roll < 0.8:
            apps = intune.device_apps(device_id)
            if apps and rng.random() < 0.5:
                intune.uninstall_detected(device_id, rng.choice(apps))
                done["app removed"] += 1
            else:
                candidates = [a for a in detected if intune.detected[a]["platform"] == device.spec.platform]
                new = [a for a in candidates if a not in apps]
                if new:
                    intune.install_detected(device_id, rng.choice(new))
                    done["app installed"] += 1
            if device_id in intune.devices:
                intune.check_in(device_id)  # inventory is reported when the device syncs
        elif roll < 0.9:
            intune.rename_device(device_id, f"{device.name[:40]}-R{rng.randrange(1000)}")
            done["renamed"] += 1
        else:
            intune.retire_device(device_id)
            done["retired"] += 1
        if changed is not None:
            for kind in done - before:
                changed.setdefault(kind, []).append(device_id)
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Intune seeding flags of `python -m monitor.simulator`."""
    group = parser.add_argument_group("Intune")
    group.add_argument("--intune-devices", type=int, help="seed Intune with this many managed devices")
    group.add_argument("--intune-unlicensed", action="store_true", help="a tenant without Intune (400 not applicable)")
    group.add_argument("--intune-detected-titles", type=int, default=40, help="synthetic detected software titles")
    group.add_argument("--intune-apps-per-device", type=int, default=6, help="detected apps per device (about)")
    group.add_argument("--intune-page-size", type=int, default=1000, help="items per page of the Intune lists")


def seed_from_arguments(sim: SimulatorState, tenant_id: str, args: argparse.Namespace) -> IntuneTenant | None:
    if args.intune_unlicensed:
        return seed_intune(sim, tenant_id, licensed=False)
    if args.intune_devices is None:
        return None
    return seed_intune(
        sim,
        tenant_id,
        devices=args.intune_devices,
        detected_titles=args.intune_detected_titles,
        apps_per_profile=args.intune_apps_per_device,
        page_size=args.intune_page_size,
        rng_seed=args.seed,
    )
