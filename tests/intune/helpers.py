"""What the mirror must hold for a simulated Intune estate, computed straight from the simulator's state
(its Graph views through the pure mappers), and exact comparisons of change records."""

from __future__ import annotations

from typing import Any

from monitor.diff import diff
from monitor.model.intune_apps import DetectedAppCatalog, map_install_row, map_installed, map_managed_app
from monitor.model.intune_devices import MANAGED_DEVICE_SELECT, map_device
from monitor.model.intune_policies import map_policy, map_status, policy_ref
from monitor.model.types import JsonObject, Kind, Upsert
from monitor.records import ChangeRecord
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_views import REPORT_COLUMNS, detected_view, device_view, report_row, status_view

MirrorState = dict[tuple[Kind, str], JsonObject]
NOT_INTUNE = frozenset({"azure_user", "microsoft_365_account", "microsoft_365_account_has_azure_user"})


def _put(state: MirrorState, upserts: list[Upsert]) -> None:
    for upsert in upserts:
        state[(upsert.placement.kind, upsert.key)] = upsert.obj


def expected_intune(intune: IntuneTenant, known_users: set[str]) -> MirrorState:
    """The Intune objects a complete sweep of `intune` must leave in the mirror."""
    state: MirrorState = {}
    types: dict[str, str] = {}
    for device in intune.devices.values():
        upserts = map_device(device_view(intune, device, MANAGED_DEVICE_SELECT), known_users=known_users)
        types[device.id] = upserts[0].obj["_type"]
        _put(state, upserts)
    for kind, policies in (("compliance", intune.compliance_policies), ("configuration", intune.configurations)):
        for policy_id, policy in policies.items():
            _put(state, [map_policy(kind, policy)])  # type: ignore[arg-type]
            ref = policy_ref(kind, policy)  # type: ignore[arg-type]
            for device_id in intune.by_platform[intune.policy_platform[policy_id]]:
                device = intune.devices[device_id]
                status = status_view(intune, policy_id, device, intune.status(policy_id, device))
                _put(state, map_status(ref, status, types.get(device_id)))
    columns = [name for name, _ in REPORT_COLUMNS]
    for app_id, app in intune.mobile_apps.items():
        _put(state, [map_managed_app(app)])
        for device in intune.devices.values():
            install = intune.install_state(app_id, device)
            if install is not None:
                row: dict[str, Any] = dict(zip(columns, report_row(intune, app_id, device, install), strict=True))
                upsert = map_install_row(app, row, types.get(device.id))
                _put(state, [upsert] if upsert else [])
    catalog = DetectedAppCatalog()
    for app_id in intune.detected:
        view = detected_view(intune, app_id)
        if view["deviceCount"]:
            catalog.add(view)
            _put(state, [map_installed(view, d, types[d]) for d in intune.devices_with_app(app_id)])
    _put(state, list(catalog.entities()))
    return state


def intune_part(dump: MirrorState) -> MirrorState:
    return {ref: obj for ref, obj in dump.items() if obj["_type"] not in NOT_INTUNE}


def summary(records: list[ChangeRecord]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(op, type, key, changed) of each record."""
    return {(r["op"], r["type"], r["key"], tuple(r["changed"])) for r in records}


def expected_changes(before: MirrorState, after: MirrorState) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """The records that turn `before` into `after`, in the form of `summary`."""
    changes: set[tuple[str, str, str, tuple[str, ...]]] = set()
    for ref in before.keys() | after.keys():
        change = diff(ref[0], before.get(ref), after.get(ref))
        if change is not None:
            changes.add((change.op, change.type, change.key, change.changed))
    return changes


def replay(records: list[ChangeRecord], state: MirrorState | None = None) -> MirrorState:
    state = dict(state or {})
    for record in records:
        ref = (record["kind"], record["key"])
        if record["op"] == "delete":
            del state[ref]
        else:
            after = record["after"]
            assert after is not None  # an upsert carries the object
            state[ref] = after
    return state
