"""Skipping what Graph says the same as last sweep (`monitor.sources.intune_units`): an unchanged sweep
maps nothing, and a change that shows only in a derived object (an install state, a policy status,
the `_type` of a device, a user who left) is still emitted exactly, while the device itself is skipped.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from monitor import collector, mirror_codec
from monitor.app import Runtime
from monitor.graph.client import GraphError
from monitor.mirror_codec import decode_entry
from monitor.model.intune import DEVICE_FAMILY, FINDING_FAMILY
from monitor.model.types import Placement
from monitor.scopes import ScopeId, bucket_count, scope_of
from monitor.simulator import SimTenant
from monitor.simulator.intune import IntuneTenant
from monitor.simulator.intune_catalog import DEVICE_KINDS
from monitor.sources import intune, intune_passes, intune_sweep, intune_units
from monitor.sources.intune_sweep import PassWriter
from monitor.store import TenantStore
from tests.conftest import TENANT_ID

from .helpers import expected_changes, expected_intune, summary
from .test_sweep import first_sweep, install_fails, mirror, pick, sync

Mapped = Counter[str]


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mapped]:
    """What the passes map, per mapping function: the device ids for `map_device`, else a count of the
    calls that produced something."""
    calls: Mapped = Counter()

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            if name == "map_device":
                calls[f"device {args[0]['id']}"] += 1
            elif result:
                calls[name] += 1
            return result

        return wrapper

    for name in ("map_device", "map_status", "map_install_row", "map_installed"):
        monkeypatch.setattr(intune_passes, name, counting(name, getattr(intune_passes, name)))
    yield calls


async def test_an_unchanged_sweep_maps_nothing(runtime: Runtime, estate: IntuneTenant, mapped: Mapped) -> None:
    await first_sweep(runtime)
    first = sum(mapped.values())
    mapped.clear()

    records, failures = await sync(runtime)

    assert (records, failures) == ([], [])
    assert first > len(estate.devices) and mapped == Counter()
    status = await runtime.store(TENANT_ID).status("intune")
    assert int(status["unchanged"]) >= first


def flip_configuration(estate: IntuneTenant) -> str:
    """A configuration's status on a device goes to error: the device's own properties do not move."""
    policy = next(iter(estate.configurations))
    device = pick(estate, estate.policy_platform[policy], lambda d: estate.status(policy, d) == "compliant")
    estate.set_status(policy, device.id, "error")
    return device.id


def fail_install(estate: IntuneTenant) -> str:
    [(_, _, key, _)] = install_fails(estate)
    return str(key).split("|")[0]


@pytest.mark.parametrize("change", [flip_configuration, fail_install], ids=["configuration-status", "install-state"])
async def test_a_change_only_in_a_derived_object_is_emitted_while_the_device_is_skipped(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, mapped: Mapped, change: Callable[[IntuneTenant], str]
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    mapped.clear()
    device_id = change(estate)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and records
    assert summary(records) == expected_changes(before, after)
    assert all(r["key"].split("|")[0] == device_id or device_id in r["key"] for r in records)
    assert await mirror(runtime) == after
    assert not [name for name in mapped if name.startswith("device ")]  # the device itself was skipped


async def test_a_device_whose_type_changes_retypes_everything_read_with_it(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, mapped: Mapped
) -> None:
    await first_sweep(runtime)
    before = await mirror(runtime)
    device = pick(estate, "windowsRT", lambda d: bool(estate.device_apps(d.id)))
    # The same platform (its policies and apps stay), but a virtual machine: a `server`.
    device.kind = next(n for n, kind in enumerate(DEVICE_KINDS) if "Virtual Machine" in kind.models)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    assert await mirror(runtime) == after
    retyped = {r["type"] for r in records if r["op"] == "upsert" and r["type"].startswith("server_")}
    assert {"server_installed_intune_detected_application", "server_assigned_intune_managed_application"} <= retyped


async def test_a_user_who_leaves_takes_the_relationships_of_unchanged_devices(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """A logged-on user leaves the directory: the device's Graph object does not change (it names the
    user by id), yet its USES relationship goes."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    device = next(d for d in estate.devices.values() if any(u != d.user_id for u in d.logged_on))
    user = next(u for u in device.logged_on if u != device.user_id)
    tenant.hard_delete_user(user)
    await sync(runtime, ("users",))

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    assert ("delete", f"{user}|uses|{device.id}") in {(r["op"], r["key"]) for r in records}
    assert device.id not in {r["key"] for r in records}  # the device entity itself is unchanged
    assert await mirror(runtime) == after


async def test_a_new_mapping_maps_everything_once(
    runtime: Runtime, estate: IntuneTenant, mapped: Mapped, monkeypatch: pytest.MonkeyPatch
) -> None:
    await first_sweep(runtime)
    mapped.clear()
    monkeypatch.setattr(intune_units, "MAPPING_VERSION", b"another")

    records, failures = await sync(runtime)

    assert (records, failures) == ([], [])
    assert len([name for name in mapped if name.startswith("device ")]) == len(estate.devices)
    assert int((await runtime.store(TENANT_ID).status("intune"))["unchanged"]) == 0


async def test_the_records_of_a_retired_device_are_pruned(runtime: Runtime, estate: IntuneTenant) -> None:
    await first_sweep(runtime)
    device = pick(estate, "iPhone")
    unit = intune_units.unit(intune_passes._DEVICES, device.id, {}, [], list)
    store = runtime.store(TENANT_ID)
    held = store.keys.sweep_units(intune_passes._DEVICES, unit.bucket)
    assert await store.redis.hexists(held, unit.uid)
    units_before = await _records(runtime)
    estate.retire_device(device.id)

    records, failures = await sync(runtime)

    assert failures == [] and records
    assert not await store.redis.hexists(held, unit.uid)
    assert sum((await _records(runtime)).values()) < sum(units_before.values())


async def _records(runtime: Runtime) -> Counter[str]:
    store = runtime.store(TENANT_ID)
    counts: Counter[str] = Counter()
    for name in ("devices", "compliance", "configurations", "apps", "detected"):
        source = f"intune.{name}"
        for bucket in await store.redis.smembers(store.keys.sweep_unit_buckets(source)):
            counts[name] += await store.redis.hlen(store.keys.sweep_units(source, int(bucket)))
    return counts


async def test_a_unit_that_maps_to_less_takes_its_objects_with_it(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """A status back to compliant maps to one object instead of four: no unit went, yet its finding
    and the finding's relationships are deleted (the sweep scans for absence when a unit shrank)."""
    policy = next(iter(estate.compliance_policies))
    device = pick(estate, estate.policy_platform[policy], lambda d: estate.status(policy, d) == "nonCompliant")
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.set_status(policy, device.id, "compliant")

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    finding = f"{estate.account_id}_{policy}_{device.id}"
    assert ("delete", finding) in {(r["op"], r["key"]) for r in records}
    assert await mirror(runtime) == after


async def test_objects_without_unit_records_are_still_deleted_by_absence(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """A mirror whose objects have no unit records (written before them) is scanned for absence on
    the next sweep: an application uninstalled meanwhile goes, although no unit says so."""
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    async for key in store.redis.scan_iter(match=f"{store.keys.base}:units*"):
        await store.redis.delete(key)
    before = await mirror(runtime)
    device = pick(estate, "macMDM", lambda d: any(estate.device_count(a) > 1 for a in estate.device_apps(d.id)))
    app = next(a for a in estate.device_apps(device.id) if estate.device_count(a) > 1)
    estate.uninstall_detected(device.id, app)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    assert [r["op"] for r in records] == ["delete"] and device.id in records[0]["key"]
    assert await mirror(runtime) == after


def test_the_collector_runs_less_often_while_rounds_run_and_as_before_after() -> None:
    before = gc.get_threshold()
    with collector.fewer_collections():
        with collector.fewer_collections():  # two tenants' rounds in one process
            assert gc.get_threshold() == collector.ROUND_THRESHOLDS
        assert gc.get_threshold() == collector.ROUND_THRESHOLDS
    assert gc.get_threshold() == before


async def test_an_unchanged_sweep_checks_no_unit_of_a_page_it_knows(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page records (`intune_units`, "Page records"): the detected applications' pages are known whole,
    so none of their units is built or checked; the other passes still check theirs."""
    await first_sweep(runtime)
    checked = _count_checked(monkeypatch)

    records, failures = await sync(runtime)

    assert (records, failures) == ([], [])
    assert checked["detected"] == 0 and checked["devices"] == len(estate.devices)


async def test_a_retired_device_changes_only_its_part_of_each_page_it_was_on(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detected application's page is recorded in parts, a device's part chosen by its id alone
    (`intune_passes.device_groups`): a retired device makes only the devices of its own part, on each
    page it was on, checked again; every other part is known and skipped whole."""
    await first_sweep(runtime)
    checked = _count_checked(monkeypatch)
    device = pick(estate, "windowsRT", lambda d: len(estate.device_apps(d.id)) > 1)
    apps = estate.device_apps(device.id)
    estate.retire_device(device.id)
    part = intune_passes.device_groups

    _, failures = await sync(runtime)

    same_part = [
        other
        for app in apps
        for group in part(list(estate.devices_with_app(app)) + [device.id])
        if device.id in group
        for other in group
        if other != device.id
    ]
    assert failures == [] and checked["detected"] == len(same_part)
    assert sum(len(list(estate.devices_with_app(app))) for app in apps) > 4 * len(same_part)
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))
    # The records of the parts checked again name the refs of their units whose records matched as
    # well: the next sweep skips those parts, and when another device goes (so that it looks for
    # absent objects) it deletes none of their objects.
    estate.retire_device(pick(estate, "macMDM", lambda d: not set(apps) & set(estate.device_apps(d.id))).id)
    _, failures = await sync(runtime)
    assert failures == []
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))


def _count_checked(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many units each pass checks against their records from now on."""
    checked: Counter[str] = Counter()
    check = PassWriter._changed

    async def counting(writer: PassWriter, units: Sequence[intune_units.Unit], want_refs: bool = False) -> Any:
        checked[writer.pass_name] += len(units)
        return await check(writer, units, want_refs)

    monkeypatch.setattr(PassWriter, "_changed", counting)
    return checked


async def test_a_page_that_changed_and_changed_back_is_mapped_again(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, mapped: Mapped
) -> None:
    """A device becomes a virtual machine and then is what it was: the pages of its detected
    applications read as they did two sweeps ago, but the record of that form went with the sweep that
    changed them, so they are checked and the device's INSTALLED relationships are retyped back."""
    await first_sweep(runtime)
    original = await mirror(runtime)
    device = pick(estate, "windowsRT", lambda d: bool(estate.device_apps(d.id)))
    kind = device.kind
    device.kind = next(n for n, each in enumerate(DEVICE_KINDS) if "Virtual Machine" in each.models)
    _, failures = await sync(runtime)
    assert failures == [] and await mirror(runtime) != original
    device.kind = kind
    mapped.clear()

    records, failures = await sync(runtime)

    assert failures == [] and records
    assert await mirror(runtime) == original == expected_intune(estate, set(tenant.users))
    assert mapped["map_installed"] == len(estate.device_apps(device.id))  # only that device's units


async def test_a_failed_commit_of_the_last_page_fails_its_pass(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages commit while the pass reads on (`PassWriter.commit_units`): the commit of the last one is
    still waited for, and its failure fails the pass, which then deletes nothing."""
    await first_sweep(runtime)
    commit = PassWriter._commit_units
    pages = Counter[str]()

    async def counting(writer: PassWriter, units: Sequence[intune_units.Unit], **kwargs: Any) -> int:
        pages[writer.pass_name] += 1
        return await commit(writer, units, **kwargs)

    monkeypatch.setattr(PassWriter, "_commit_units", counting)
    await sync(runtime)
    left = pages["compliance"]
    policy = next(iter(estate.compliance_policies))
    device = pick(estate, estate.policy_platform[policy], lambda d: estate.status(policy, d) == "nonCompliant")
    estate.set_status(policy, device.id, "compliant")  # its finding would be deleted
    before = await mirror(runtime)

    async def failing_last(writer: PassWriter, units: Sequence[intune_units.Unit], **kwargs: Any) -> int:
        nonlocal left
        left -= writer.pass_name == "compliance"
        if writer.pass_name == "compliance" and left == 0:
            raise GraphError("Redis refused the page", status=500)
        return await commit(writer, units, **kwargs)

    monkeypatch.setattr(PassWriter, "_commit_units", failing_last)

    records, failures = await sync(runtime)

    assert [f.source for f in failures] == ["intune"] and "compliance" in str(failures[0])
    assert not [r for r in records if r["op"] == "delete"]
    assert left == 0 and await mirror(runtime) != before  # other pages committed


async def test_passes_after_the_devices_run_side_by_side_and_a_first_sweep_never_collides(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passes after the device pass run `PASSES_SIDE_BY_SIDE` at a time. On a first sweep they write
    new objects into the same device-anchored scopes; its pages are fresh (`PageWrite.fresh`: each
    checks only its own objects), so no commit collides with another and is computed again. A later
    sweep still emits a change once."""
    run_pass = intune._run_pass
    running: list[str] = []
    most: list[int] = []

    async def watched(context: Any, intune_pass: intune_passes.IntunePass, *args: Any) -> Any:
        running.append(intune_pass.name)
        most.append(len(running))
        try:
            return await run_pass(context, intune_pass, *args)
        finally:
            running.remove(intune_pass.name)

    write = TenantStore._write
    answers: list[int] = []

    async def written(store: TenantStore, *args: Any) -> int:
        answers.append(await write(store, *args))
        return answers[-1]

    monkeypatch.setattr(intune, "_run_pass", watched)
    monkeypatch.setattr(TenantStore, "_write", written)
    await first_sweep(runtime)
    assert max(most) == intune.PASSES_SIDE_BY_SIDE == 2
    assert len(answers) > 20 and min(answers) >= 0  # -1: a collision
    before = await mirror(runtime)
    device_id = flip_configuration(estate)
    most.clear()

    records, failures = await sync(runtime)

    assert failures == [] and max(most) == 2
    assert summary(records) == expected_changes(before, expected_intune(estate, set(tenant.users)))
    assert all(device_id in r["key"] for r in records)


async def test_a_page_is_mapped_while_the_page_before_it_commits_and_pages_commit_in_order(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PassWriter.commit_units`: a page's units are checked and mapped while the page before it is
    still committing (up to `PAGES_IN_FLIGHT` pages at once), and each pass's pages commit one at a
    time, in the order they were read; the sweep writes the whole estate."""
    monkeypatch.setattr(intune_sweep, "PAGES_IN_FLIGHT", 3)
    units_write, commit = PassWriter._units_write, PassWriter._commit
    order: dict[int, tuple[str, int]] = {}  # id of a page's write -> (pass, its place in the pass)
    mapped: Counter[str] = Counter()
    committed: dict[str, list[int]] = {}
    overlaps = 0

    async def mapping(writer: PassWriter, *args: Any) -> Any:
        nonlocal overlaps
        page = await units_write(writer, *args)
        order[id(page)] = (writer.pass_name, mapped[writer.pass_name])
        overlaps += mapped[writer.pass_name] > len(committed.get(writer.pass_name, [])) + 1
        mapped[writer.pass_name] += 1
        return page

    async def committing(writer: PassWriter, page: Any, objects: int) -> int:
        emitted = await commit(writer, page, objects)
        if id(page) in order:
            committed.setdefault(writer.pass_name, []).append(order.pop(id(page))[1])
        return emitted

    monkeypatch.setattr(PassWriter, "_units_write", mapping)
    monkeypatch.setattr(PassWriter, "_commit", committing)

    assert await first_sweep(runtime)

    assert overlaps > 0  # a page mapped while two before it had not committed
    assert all(places == list(range(len(places))) for places in committed.values())
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))


async def test_a_pass_that_raises_ends_the_sweep_with_no_pass_left_running(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not a pass's own failure (a lost lease) ends the sweep: the passes beside it are
    cancelled and waited for before it is raised, and nothing is deleted."""
    await first_sweep(runtime)
    run_pass = intune._run_pass
    running: set[str] = set()

    async def failing(context: Any, intune_pass: intune_passes.IntunePass, *args: Any) -> Any:
        if intune_pass.name == "apps":
            raise RuntimeError("lease lost")
        running.add(intune_pass.name)
        try:
            return await run_pass(context, intune_pass, *args)
        finally:
            running.discard(intune_pass.name)

    monkeypatch.setattr(intune, "_run_pass", failing)
    before = await mirror(runtime)
    estate.retire_device(pick(estate, "iPhone").id)
    seq = await runtime.store(TENANT_ID).last_seq()

    with pytest.raises(RuntimeError, match="lease lost"):
        await sync(runtime)

    assert running == set() and await runtime.store(TENANT_ID).last_seq() == seq
    assert await mirror(runtime) == before


async def test_a_pass_that_knew_every_page_prunes_nothing_and_one_that_did_not_reads_only_what_it_did_not_find(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page of the detected applications known, and every page the last sweep left found: its
    unit records are the last sweep's, so pruning them is skipped. A retired device changes the pages
    it was on, and the records of its units go; as the page records named every unit record, the prune
    reads only the records of the units of the page parts not found again (`prune_pages`), not all."""
    await first_sweep(runtime)
    pruned = _recording_prunes(monkeypatch)
    records, failures = await sync(runtime)
    assert (records, failures) == ([], [])
    assert ("detected", "pages") not in pruned and ("detected", "units") not in pruned
    assert ("devices", "units") in pruned
    device = pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id)))
    held, apps = await _records(runtime), len(estate.device_apps(device.id))
    estate.retire_device(device.id)
    pruned.clear()

    records, failures = await sync(runtime)

    assert failures == [] and ("detected", "units") not in pruned
    read = pruned[("detected", "pages")]
    assert apps <= read < held["detected"] / 4
    assert (await _records(runtime))["detected"] == held["detected"] - apps


def _recording_prunes(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """The prunes of the sweeps from now on, by pass and kind ("units": every record read; "pages": those
    named by the page records not found), with how many unit ids the page records not found named."""
    pruned: Counter[tuple[str, str]] = Counter()
    prune_units, prune_pages = intune_sweep.prune_units, intune_sweep.prune_pages

    async def units(context: Any, name: str, recorded: bool) -> int:
        pruned[(name, "units")] += 1
        return await prune_units(context, name, recorded)

    async def pages(context: Any, name: str, recorded: bool) -> int:
        store = context.store
        gone = await store.redis.hvals(store.keys.sweep_pages(intune_sweep.seen_source(name), "gone"))
        pruned[(name, "pages")] += len({uid for record in gone for uid in intune_units.page_record_units(record)})
        return await prune_pages(context, name, recorded)

    monkeypatch.setattr(intune, "prune_units", units)
    monkeypatch.setattr(intune, "prune_pages", pages)
    return pruned


async def test_page_records_that_did_not_name_every_unit_record_leave_the_prune_reading_them_all(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the detected applications' page records went (as a re-read between sweeps drops them), the
    unit records of a device retired since are named by no page record: the next prune reads every
    record, drops exactly the device's, and the page records name every unit record again after it."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    store = runtime.store(TENANT_ID)
    source = intune_sweep.seen_source("detected")
    await store.redis.delete(store.keys.sweep_pages(source, "current"), store.keys.sweep_pages_complete(source))

    pruned = await _retire_a_device_and_sweep(runtime, tenant, estate, monkeypatch, before)

    assert ("detected", "units") in pruned and await store.redis.exists(store.keys.sweep_pages_complete(source))
    estate.retire_device(pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id))).id)
    pruned.clear()
    _, failures = await sync(runtime)
    assert failures == [] and ("detected", "pages") in pruned and ("detected", "units") not in pruned
    assert await mirror(runtime) == expected_intune(estate, set(tenant.users))


async def test_a_detected_pass_that_fails_part_way_leaves_the_next_prune_reading_every_record(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detected pass that fails after it carried some page records over: those it did not reach are
    lost when the next pass starts, and with them the names of the units on them. The next prune then
    reads every record, and the sweep still deletes exactly what went."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    store = runtime.store(TENANT_ID)
    source = intune_sweep.seen_source("detected")
    commit_page, pages = PassWriter.commit_page, 0

    async def failing(writer: PassWriter, *args: Any, **kwargs: Any) -> None:
        nonlocal pages
        if writer.pass_name == "detected":
            pages += 1
            if pages == 3:
                raise GraphError("the third page failed", status=500)
        await commit_page(writer, *args, **kwargs)

    monkeypatch.setattr(PassWriter, "commit_page", failing)
    _, failures = await sync(runtime)
    assert failures and await mirror(runtime) == before
    assert await store.redis.hlen(store.keys.sweep_pages(source, "previous"))  # records not reached
    monkeypatch.undo()

    pruned = await _retire_a_device_and_sweep(runtime, tenant, estate, monkeypatch, before)

    assert ("detected", "units") in pruned


async def _retire_a_device_and_sweep(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch, before: Any
) -> Counter[tuple[str, str]]:
    """Retire a device with detected applications and sweep: exactly what went is deleted (the mirror was
    `before`), and exactly the device's detected unit records are pruned. Returns the prunes run."""
    device = pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id)))
    held, apps = await _records(runtime), len(estate.device_apps(device.id))
    estate.retire_device(device.id)
    pruned = _recording_prunes(monkeypatch)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after) and await mirror(runtime) == after
    assert (await _records(runtime))["detected"] == held["detected"] - apps
    return pruned


async def test_a_sweep_that_dies_before_the_detected_prune_leaves_the_next_reading_every_record(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detected pass ended (the page records it did not find kept for its prune), then the sweep died
    before the prune read them: the next pass finds every page again, and still prunes the records of
    the units that went, reading every record (the mark that page records name every unit record went
    when the dead pass started its pages, and came back only after a prune)."""
    await first_sweep(runtime)
    before, held = await mirror(runtime), await _records(runtime)
    device = pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id)))
    apps = len(estate.device_apps(device.id))
    estate.retire_device(device.id)

    async def dying(context: Any, name: str, recorded: bool) -> int:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(intune, "prune_pages", dying)
    with pytest.raises(RedisConnectionError, match="Redis went away"):
        await sync(runtime)
    store = runtime.store(TENANT_ID)
    gone = store.keys.sweep_pages(intune_sweep.seen_source("detected"), "gone")
    assert await store.redis.hlen(gone) and await mirror(runtime) == before
    monkeypatch.undo()
    pruned = _recording_prunes(monkeypatch)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after) and await mirror(runtime) == after
    assert (await _records(runtime))["detected"] == held["detected"] - apps
    assert ("detected", "units") in pruned and not await store.redis.exists(gone)


def test_a_page_record_names_the_units_it_holds_before_their_refs() -> None:
    uids = ["00000000000000ff", "8000000000000001"]
    record = intune_units.page_record(uids, b"r" * 24)
    assert intune_units.page_record_units(record) == uids and record.endswith(b"r" * 24)
    assert intune_units.page_record_units(intune_units.page_record([], b"r" * 8)) == []


async def test_the_next_pass_of_a_lane_starts_while_the_pass_before_it_prunes(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune runs in Redis: the pass after it in its lane (the configurations after the managed apps)
    does not wait for it, and deletion by absence does, so the retired device's objects still go."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    prune, run_pass = intune_sweep.prune_units, intune._run_pass
    configurations = asyncio.Event()

    async def starting(context: Any, intune_pass: Any, *args: Any) -> Any:
        if intune_pass.name == "configurations":
            configurations.set()
        if intune_pass.name == "detected":  # holds the other lane until then
            await asyncio.wait_for(configurations.wait(), 10)
        return await run_pass(context, intune_pass, *args)

    async def pruning(context: Any, name: str, recorded: bool) -> int:
        if name == "apps":  # held until the next pass of its lane has started: never, were it waited for
            await asyncio.wait_for(configurations.wait(), 10)
        return await prune(context, name, recorded)

    monkeypatch.setattr(intune, "_run_pass", starting)
    monkeypatch.setattr(intune, "prune_units", pruning)
    estate.retire_device(pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id))).id)

    _, failures = await sync(runtime)

    assert failures == [] and await mirror(runtime) == expected_intune(estate, set(tenant.users))
    assert await mirror(runtime) != before


async def test_a_prune_that_fails_fails_the_sweep_before_it_deletes_anything(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune's error (Redis gone in the middle of it) is the sweep's, raised as any Redis error is:
    nothing is deleted by absence, and the next sweep deletes what went."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    prune = intune_sweep.prune_units

    async def failing(context: Any, name: str, recorded: bool) -> int:
        if name == "compliance":
            raise RedisConnectionError("Redis went away")
        return await prune(context, name, recorded)

    monkeypatch.setattr(intune, "prune_units", failing)
    estate.retire_device(pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id))).id)
    with pytest.raises(RedisConnectionError, match="Redis went away"):
        await sync(runtime)
    assert await mirror(runtime) == before
    monkeypatch.undo()

    _, failures = await sync(runtime)

    assert failures == [] and await mirror(runtime) != before


async def test_a_pass_prunes_its_records_as_it_ends_while_the_other_passes_run(
    runtime: Runtime, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning needs only the pass's own seen set and records: the device pass prunes before the
    passes after it have read anything, not after all of them."""
    await first_sweep(runtime)
    events: list[str] = []
    finish = PassWriter.finish_pages

    def pruning(prune: Callable[..., Any]) -> Callable[..., Any]:
        async def recorded(context: Any, name: str, recorded: bool) -> int:
            events.append(f"prune {name}")
            return int(await prune(context, name, recorded))

        return recorded

    async def finishing(writer: PassWriter) -> None:
        events.append(f"{writer.pass_name} read")
        await finish(writer)

    monkeypatch.setattr(intune, "prune_units", pruning(intune_sweep.prune_units))
    monkeypatch.setattr(intune, "prune_pages", pruning(intune_sweep.prune_pages))
    monkeypatch.setattr(PassWriter, "finish_pages", finishing)
    estate.retire_device(pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id))).id)

    _, failures = await sync(runtime)

    assert failures == [] and events.index("prune devices") < events.index("detected read")
    assert events.index("detected read") < events.index("prune detected")


async def test_a_scan_for_absent_objects_keeps_those_stored_in_the_earlier_layout(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """The scan computes seen refs from the fields it reads (`field_ref`); an object whose field is of
    the layout before packing gives a ref nothing has, is checked by its key, and stays."""
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    scope = (await store.known_scopes("relationship", DEVICE_FAMILY))[0]
    stored = await store.redis.hgetall(store.mirror_key(scope))
    for field, value in stored.items():
        key, raw = decode_entry(field, value)
        await store.redis.hdel(store.mirror_key(scope), field)
        await store.redis.hset(store.mirror_key(scope), key, raw)
    before = await mirror(runtime)
    estate.retire_device(pick(estate, "iPhone").id)  # a unit goes: the scan follows

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    assert await mirror(runtime) == after and stored


async def test_a_scan_for_absent_objects_unpacks_only_the_keys_of_objects_no_pass_saw(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retired device makes the sweep scan the mirror for what went: of the hundreds of objects it
    reads, it unpacks the keys of the retired device's objects alone."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    unpack = mirror_codec.unpack_keys
    unpacked: list[str] = []

    def counting(fields: list[bytes]) -> list[str]:
        keys = unpack(fields)
        unpacked.extend(keys)
        return keys

    monkeypatch.setattr(intune_sweep, "unpack_keys", counting)
    device = pick(estate, "iPhone")
    estate.retire_device(device.id)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    gone = {key for (_, key) in before} - {key for (_, key) in after}
    assert gone and set(unpacked) == {key for key in gone if device.id in key}


@pytest.mark.parametrize("check", ["_owed_candidates", "_candidates"], ids=["objects owed", "whole scopes"])
async def test_the_scan_for_absent_objects_scans_the_next_scopes_while_it_deletes_from_these(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    """The scan works a chunk of scopes ahead: when it handles one chunk's candidates (checks their
    keys, deletes), the next chunk's read and check are under way; and it deletes exactly what went.
    So does the check of the objects owed one and the scan of whole scopes, when the records are not
    known to be complete (the completeness marks gone: every scope is owed a scan)."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    if check == "_candidates":
        store = runtime.store(TENANT_ID)
        await store.redis.delete(*(store.keys.sweep_units_complete(f"intune.{p.name}") for p in intune_passes.PASSES))
    scan, handle, delete_owed = getattr(intune_sweep, check), intune_sweep._unseen, intune_sweep.delete_owed
    ahead: list[int] = []  # at each chunk handled: chunks whose scan was started minus chunks handled
    started = Counter[str]()
    checking = {"owed": False}

    def scanning(*args: Any) -> Any:
        started["scan"] += 1
        return scan(*args)

    async def handling(*args: Any) -> Any:
        if checking["owed"] == (check == "_owed_candidates"):  # the chunks of the check under test
            started["handle"] += 1
            ahead.append(started["scan"] - started["handle"])
        return await handle(*args)

    async def checking_owed(*args: Any) -> int:
        checking["owed"] = True
        try:
            return int(await delete_owed(*args))
        finally:
            checking["owed"] = False

    monkeypatch.setattr(intune_sweep, "SCOPES_PER_READ", 1)
    monkeypatch.setattr(intune_sweep, check, scanning)
    monkeypatch.setattr(intune_sweep, "_unseen", handling)
    monkeypatch.setattr(intune, "delete_owed", checking_owed)
    for device in list(estate.devices.values())[:8]:
        estate.retire_device(device.id)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    assert started["scan"] == started["handle"] > 3  # each chunk scanned once
    # A chunk is handled with the scans of the next ones started (but near the end of a family).
    assert max(ahead) == intune_sweep.SCANS_AHEAD and ahead.count(max(ahead)) > len(ahead) / 2


async def test_the_scan_for_absent_objects_reads_only_the_scopes_owed_one(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retired device's unit records name the scopes its objects are in (a seen ref starts with its
    scope's prefix), so the scan reads those scopes, not the mirror, and deletes exactly what went."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    read = intune_sweep._scope_fields
    scanned: list[Any] = []

    async def reading(writer: PassWriter, scopes: Any) -> Any:
        scanned.extend(scopes)
        return await read(writer, scopes)

    monkeypatch.setattr(intune_sweep, "_scope_fields", reading)
    device = pick(estate, "iPhone", lambda d: bool(estate.device_apps(d.id)))
    estate.retire_device(device.id)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after)
    store = runtime.store(TENANT_ID)
    devices = [s for s in scanned if s.family == DEVICE_FAMILY]
    anchored = scope_of(Placement("relationship", DEVICE_FAMILY, device.id))
    assert anchored in devices and len(devices) * 10 < len(await store.known_scopes("relationship", DEVICE_FAMILY))
    assert await store.redis.smembers(store.keys.sweep_scan_owed("intune")) == set()  # scanned: none owed
    assert await store.redis.smembers(store.keys.sweep_owed_refs("intune")) == set()


async def test_the_check_for_absent_objects_asks_the_seen_sets_only_for_the_objects_owed_one(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records of a retired device's units name its objects: the check asks the seen sets for those
    refs alone, reads the scopes where one was not seen, and looks there for those fields alone, not for
    every field of the scope (which the scan of whole scopes asked the seen sets about)."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    asked, read = Counter[str](), Counter[str]()
    unseen_refs, scope_fields, unseen_fields = (
        intune_sweep._unseen_refs,
        intune_sweep._scope_fields,
        intune_sweep._unseen_fields,
    )

    async def asking(writer: Any, sets: Any, refs: list[bytes]) -> Any:
        asked["owed"] += len(refs)
        return await unseen_refs(writer, sets, refs)

    async def reading(writer: Any, scopes: Any) -> Any:
        fields = await scope_fields(writer, scopes)
        read["fields"] += sum(len(listed) for listed in fields)
        return fields

    async def scanning(writer: Any, sets: Any, fields: dict[ScopeId, list[bytes]]) -> Any:
        asked["whole"] += sum(len(listed) for scope, listed in fields.items() if scope.family == DEVICE_FAMILY)
        return await unseen_fields(writer, sets, fields)

    monkeypatch.setattr(intune_sweep, "_unseen_refs", asking)
    monkeypatch.setattr(intune_sweep, "_scope_fields", reading)
    monkeypatch.setattr(intune_sweep, "_unseen_fields", scanning)
    device = pick(estate, "iPhone", lambda d: bool(estate.device_apps(d.id)))
    estate.retire_device(device.id)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after) and after != before
    gone = sum(1 for key in before if key not in after)
    assert asked["whole"] == 0 and gone <= asked["owed"] < 2 * gone
    assert read["fields"] > 5 * asked["owed"]


async def test_the_scan_reads_only_the_scopes_that_held_an_object_of_a_unit_that_went(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seen ref's prefix names its scope's family and kind as well as its bucket, so the scopes owed a
    scan after devices retire are exactly those their objects were in: not every family's scope of
    the same bucket number (a device's findings are in a bucket of 64, which a device scope also has)."""
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    recorded = [each for each in intune_passes.FAMILIES if each not in intune_passes.UNRECORDED_FAMILIES]

    async def keys_by_scope() -> dict[Any, set[str]]:
        return {
            scope: set(await store.scope_objects(scope))
            for kind, family in recorded
            for scope in await store.known_scopes(kind, family)
        }

    before = await keys_by_scope()
    read = intune_sweep._scope_fields
    scanned: set[Any] = set()

    async def reading(writer: PassWriter, scopes: Any) -> Any:
        scanned.update(scopes)
        return await read(writer, scopes)

    monkeypatch.setattr(intune_sweep, "_scope_fields", reading)
    for device in [d for d in estate.devices.values() if estate.device_apps(d.id)][:3]:
        estate.retire_device(device.id)

    _, failures = await sync(runtime)

    after = await keys_by_scope()
    emptied = {scope for scope, keys in before.items() if keys - after.get(scope, set())}
    assert failures == [] and len({scope.family for scope in emptied}) > 1
    assert {scope for scope in scanned if (scope.kind, scope.family) in recorded} == emptied


def test_the_scan_computes_a_scopes_refs_at_once_and_finds_each_unseen_field_in_its_scope() -> None:
    """`scope_refs` is `field_ref` of each field; the positions `UNSEEN_BY_ANY` answers, counted over
    the fields of every scope one after another, map back to their own scopes (an empty scope too)."""
    devices, findings = ScopeId("relationship", DEVICE_FAMILY, 3), ScopeId("entity", FINDING_FAMILY, 60)
    entities = ScopeId("entity", DEVICE_FAMILY, 3)
    fields = {devices: [b"a", b"b"], findings: [], entities: [b"c", b"d"]}
    for scope, listed in fields.items():
        assert intune_units.scope_refs(scope, listed) == b"".join(intune_units.field_ref(scope, f) for f in listed)
    assert intune_sweep._fields_at(fields, [1, 3, 4]) == {devices: [b"a"], entities: [b"c", b"d"]}
    assert intune_sweep._fields_at(fields, [2]) == {devices: [b"b"]}
    assert intune_sweep._fields_at(fields, []) == {}


def test_every_family_an_intune_pass_writes_has_a_scope_code_of_its_own_that_fits_a_ref_prefix() -> None:
    """A seen ref's two-byte prefix is 4 bits of scope code (0 is the earlier layout's) and 12 of bucket."""
    codes = intune_units.SCOPE_CODES
    assert set(intune_passes.FAMILIES) <= set(codes)
    assert len(set(codes.values())) == len(codes) and all(1 <= code <= 15 for code in codes.values())
    assert all(bucket_count(kind, family) <= 4096 for kind, family in codes)


def test_a_scope_is_owed_a_scan_by_its_own_prefix_or_by_its_bucket_alone_as_the_earlier_layout_wrote_it() -> None:
    """Refs and owed scopes written before the prefix named the family (a bucket number alone, below
    4,096) still owe a scan of that bucket in every family, so no deletion is lost across the upgrade."""
    device, finding = ScopeId("entity", DEVICE_FAMILY, 7), ScopeId("relationship", FINDING_FAMILY, 7)
    refs = [intune_units.key_ref(device, "d1"), intune_units.key_ref(finding, "f|d1")]
    assert [intune_units.ref_scope(ref) for ref in refs] == [device, finding]
    assert [int.from_bytes(ref[:2], "big") for ref in refs] == [intune_units.scope_prefix(s) for s in (device, finding)]
    assert all(int.from_bytes(ref[:2], "big") >= 4096 for ref in refs)
    earlier = (7).to_bytes(2, "big") + bytes(6)  # a ref of the bucket-only layout
    assert intune_units.ref_scope(earlier) is None and intune_units.earlier_prefixes([*refs, earlier]) == {7}
    assert intune_units.owes_scan(device, {intune_units.scope_prefix(device)})
    assert not intune_units.owes_scan(finding, {intune_units.scope_prefix(device)})
    assert not intune_units.owes_scan(ScopeId("relationship", DEVICE_FAMILY, 7), {intune_units.scope_prefix(device)})
    assert intune_units.owes_scan(device, {7}) and intune_units.owes_scan(finding, {7})
    assert not intune_units.owes_scan(device, {8})


async def test_records_of_the_bucket_only_layout_still_owe_the_scans_that_delete_a_retired_device(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    """Upgrading from refs whose prefix was the bucket alone: the records are left as that layout wrote
    them (and, as a new mapping version makes them, matching no digest), so the first sweep after the
    upgrade owes scans by bucket number alone, which must still read every family's scope of those
    buckets and delete exactly what went."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    store = runtime.store(TENANT_ID)
    for name in ("devices", "compliance", "configurations", "apps", "detected"):
        source = intune_sweep.seen_source(name)
        await store.redis.delete(store.keys.sweep_pages(source, "current"), store.keys.sweep_pages(source, "previous"))
        for bucket in await store.redis.smembers(store.keys.sweep_unit_buckets(source)):
            key = store.keys.sweep_units(source, int(bucket))
            earlier: dict[Any, Any] = await store.redis.hgetall(key)
            await store.redis.hset(key, mapping={uid: _bucket_only(record) for uid, record in earlier.items()})
    estate.retire_device(pick(estate, "macMDM", lambda d: bool(estate.device_apps(d.id))).id)

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and after != before
    assert summary(records) == expected_changes(before, after) and await mirror(runtime) == after


def _bucket_only(record: bytes) -> bytes:
    """A unit record as the layout before scope codes wrote it, with a digest no unit has."""
    refs = record[intune_units.DIGEST_SIZE :]
    old = b"".join(
        (int.from_bytes(refs[at : at + 2], "big") & 0x0FFF).to_bytes(2, "big") + refs[at + 2 : at + 8]
        for at in range(0, len(refs), intune_units.REF_SIZE)
    )
    return intune_units.STALE_DIGEST + old


async def test_a_sweep_killed_before_its_scan_leaves_the_scan_owed_to_the_next(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records of a retired device's units are pruned, then the sweep dies before it deletes: the
    next sweep finds nothing more to prune, and still deletes the device's objects (the scopes owed a
    scan were written with the pruning)."""
    await first_sweep(runtime)
    before = await mirror(runtime)
    estate.retire_device(pick(estate, "iPhone", lambda d: bool(estate.device_apps(d.id))).id)

    async def dying(*args: Any) -> int:
        raise GraphError("the process was killed", status=500)

    monkeypatch.setattr(intune, "delete_owed", dying)
    monkeypatch.setattr(intune, "delete_absent", dying)
    _, failures = await sync(runtime)
    assert failures and await mirror(runtime) == before
    store = runtime.store(TENANT_ID)
    assert await store.redis.scard(store.keys.sweep_owed_refs("intune"))
    monkeypatch.undo()

    records, failures = await sync(runtime)

    after = expected_intune(estate, set(tenant.users))
    assert failures == [] and summary(records) == expected_changes(before, after) and after != before
    assert await mirror(runtime) == after


async def test_the_scan_and_prune_scripts_answer_past_a_thousand_refs_a_call(runtime: Runtime) -> None:
    """`UNSEEN_BY_ANY`, `PRUNE_UNITS` and `PRUNE_NAMED` ask Redis a thousand refs a call: past that, every
    answer is still where it belongs (refs in the first set, the second, neither; records seen and gone)."""
    redis = runtime.store(TENANT_ID).redis
    base = runtime.store(TENANT_ID).keys.base
    refs = [(n // 100).to_bytes(2, "big") + n.to_bytes(6, "big") for n in range(2500)]  # bucket n // 100
    first, second = f"{base}:test:first", f"{base}:test:second"
    await redis.sadd(first, *refs[:1200])
    await redis.sadd(second, *refs[1200:2400:2])
    unseen = redis.register_script(intune_sweep.UNSEEN_BY_ANY)
    missing = await unseen(keys=[first, second], args=[b"".join(refs)])
    assert missing == [n + 1 for n in range(1200, 2500) if n >= 2400 or n % 2]
    bucket = f"{base}:test:bucket"
    await redis.hset(bucket, mapping={f"u{n}": bytes(8) + ref for n, ref in enumerate(refs[:1500])})
    prune = redis.register_script(intune_units.PRUNE_UNITS)
    owed, owed_refs = f"{base}:test:owed", f"{base}:test:owed-refs"
    assert await prune(keys=[first, owed, owed_refs, bucket], args=[""]) == 300
    assert sorted(await redis.hkeys(bucket)) == sorted(f"u{n}".encode() for n in range(1200))
    assert await redis.smembers(owed_refs) == set(refs[1200:1500])  # the objects of the records dropped
    await redis.hset(bucket, "gone", bytes(8) + refs[2499])
    assert await prune(keys=[first, owed, owed_refs, bucket], args=["*"]) == 1  # records not known complete
    assert await redis.smembers(owed) == {b"*"} and await redis.scard(owed_refs) == 300
    # The same, for records named: two hashes, the first with 1,500 names (some with no record).
    await redis.delete(bucket, owed, owed_refs)
    other = f"{base}:test:other"
    uids = [f"{n:016x}" for n in range(2500)]
    await redis.hset(bucket, mapping={uids[n]: bytes(8) + refs[n] for n in range(0, 1500, 2)})
    await redis.hset(other, mapping={uids[n]: bytes(8) + refs[n] for n in range(1500, 2500)})
    named = redis.register_script(intune_units.PRUNE_NAMED)
    counts, ids = b"[1500,1000]", "".join(uids).encode()
    assert await named(keys=[first, owed, owed_refs, bucket, other], args=[counts, ids, ""]) == 150 + 1000
    assert sorted(await redis.hkeys(bucket)) == sorted(uids[n].encode() for n in range(0, 1200, 2))
    assert sorted(await redis.hkeys(other)) == []
    assert await redis.smembers(owed_refs) == set(refs[1200:1500:2] + refs[1500:2500])
