"""What the sweep asks of the mirror while it maps (`monitor.sources.intune_mirror`): which users
exist and each device's `_type`, answered for every id asked, across many mirror hashes, on a real
redis-server."""

from __future__ import annotations

import uuid

from monitor.app import Runtime
from monitor.simulator import SimTenant
from monitor.simulator.intune import IntuneTenant
from monitor.sources.intune_mirror import device_types, known_users
from tests.conftest import TENANT_ID

from .test_sweep import first_sweep, mirror


async def test_known_users_are_the_ids_of_users_in_the_mirror(
    runtime: Runtime, tenant: SimTenant, estate: IntuneTenant
) -> None:
    await first_sweep(runtime)
    users = sorted(tenant.users)
    strangers = [str(uuid.uuid4()) for _ in range(50)]
    asked = [*users, *strangers, *users[:10]]  # repeats, and ids the mirror never held

    found = await known_users(runtime.store(TENANT_ID), asked)

    assert found == set(users) and len(users) > 20 and estate.devices


async def test_device_types_answer_every_id_asked_and_read_each_once(runtime: Runtime, estate: IntuneTenant) -> None:
    await first_sweep(runtime)
    store = runtime.store(TENANT_ID)
    stored = {key: obj["_type"] for (kind, key), obj in (await mirror(runtime)).items() if kind == "entity"}
    devices = sorted(estate.devices)
    stranger = str(uuid.uuid4())
    cache: dict[str, str | None] = {}

    known = await device_types(store, [*devices, stranger, *devices[:3]], cache)

    assert {device: known[device] for device in devices} == {device: stored[device] for device in devices}
    assert known[stranger] is None
    await store.redis.flushdb()  # what the cache holds is not read again
    again = await device_types(store, devices, cache)
    assert {device: again[device] for device in devices} == {device: stored[device] for device in devices}
    assert (await device_types(store, devices[:1]))[devices[0]] is None  # no cache: the mirror's answer
