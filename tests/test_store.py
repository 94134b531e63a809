"""The mirror and change log against the suite's real redis-server."""

from __future__ import annotations

import asyncio
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.keys import TenantKeys
from monitor.mirror_codec import FRAME, is_current, pack_key, unpack_key
from monitor.model.types import Delete, JsonObject, Kind, Patch, Upsert, entity_placement, relationship_placement
from monitor.records import ChangeRecord
from monitor.redis_conn import connect
from monitor.scopes import ScopeId, bucket_of, scope_of
from monitor.store import Flag, PageWrite, Parked, TenantStore, canonical
from tests.conftest import RedisServer

TENANT = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def user(uid: str, **props: Any) -> Upsert:
    obj = {"_key": uid, "_type": "azure_user", "_class": ["User"], "name": uid, **props}
    return Upsert(entity_placement("azure_user", uid), obj)


def membership(group: str, member: str) -> Upsert:
    key = f"{group}|has|{member}"
    obj = {
        "_key": key,
        "_type": "azure_group_has_member",
        "_class": "HAS",
        "_fromEntityKey": group,
        "_toEntityKey": member,
    }
    return Upsert(relationship_placement("azure_user_group", group), obj)


def replay(records: list[ChangeRecord]) -> dict[tuple[Kind, str], JsonObject]:
    state: dict[tuple[Kind, str], JsonObject] = {}
    for record in records:
        if record["op"] == "delete":
            del state[(record["kind"], record["key"])]
        else:
            state[(record["kind"], record["key"])] = obj(record["after"])
    return state


def obj(value: JsonObject | None) -> JsonObject:
    """A record's `before` or `after` that the test knows is there."""
    assert value is not None
    return value


async def commit(store: TenantStore, *ops: Any) -> list[ChangeRecord]:
    return await store.commit(PageWrite(ops=list(ops)), source="test", observed_at=NOW)


async def test_new_objects_are_upserts_with_increasing_seq(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    records = await commit(store, user("user-00001"), user("user-00002"), membership("group-0001", "user-00001"))
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert {(r["op"], r["kind"], r["before"]) for r in records} == {
        ("upsert", "entity", None),
        ("upsert", "relationship", None),
    }
    assert records[0]["tenant"] == TENANT and records[0]["observedAt"] == "2026-11-27T10:00:00.000Z"
    assert await store.last_seq() == 3
    assert await store.get(entity_placement("azure_user", "user-00001"), "user-00001") == user("user-00001").obj


async def test_recommitting_a_page_emits_nothing(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    page = [user("user-00001", jobTitle="CTO"), membership("group-0001", "user-00001")]
    assert len(await commit(store, *page)) == 2
    assert await commit(store, *page) == []
    assert await store.last_seq() == 2
    assert await store.changelog_entries() == 1


async def test_update_names_changed_properties_with_before_and_after(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    await commit(store, user("user-00001", jobTitle="CTO", active=True))
    [record] = await commit(store, user("user-00001", jobTitle="CEO", active=True))
    assert record["op"] == "upsert"
    assert record["changed"] == ["jobTitle"]
    assert obj(record["before"])["jobTitle"] == "CTO" and obj(record["after"])["jobTitle"] == "CEO"


async def test_delete_and_delete_of_missing(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    await commit(store, user("user-00001"))
    placement = entity_placement("azure_user", "user-00001")
    [record] = await commit(store, Delete(placement, "user-00001"))
    assert (record["op"], record["after"], obj(record["before"])["_key"]) == ("delete", None, "user-00001")
    assert await store.get(placement, "user-00001") is None
    assert await commit(store, Delete(placement, "user-00001")) == []


async def test_net_effect_within_a_page(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    placement = relationship_placement("azure_user_group", "group-0001")
    assert (
        await commit(store, membership("group-0001", "user-00001"), Delete(placement, "group-0001|has|user-00001"))
        == []
    )
    [record] = await commit(store, user("user-00001", jobTitle="A"), user("user-00001", jobTitle="B"))
    assert obj(record["after"])["jobTitle"] == "B"


async def test_preserve_and_patch(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    placement = entity_placement("azure_user", "user-00001")
    await commit(store, user("user-00001"))
    [patched] = await commit(store, Patch(placement, "user-00001", {"lastSignInDateTime": 1700000000000}))
    assert patched["changed"] == ["lastSignInDateTime"]
    kept = Upsert(placement, {**user("user-00001").obj, "jobTitle": "CTO"}, preserve=("lastSignInDateTime",))
    [updated] = await commit(store, kept)
    assert updated["changed"] == ["jobTitle"]
    assert obj(updated["after"])["lastSignInDateTime"] == 1700000000000
    [replaced] = await commit(store, Patch(placement, "user-00001", {}, remove=("lastSignInDateTime",)))
    assert "lastSignInDateTime" not in obj(replaced["after"])
    missing = entity_placement("azure_user", "user-99999")
    assert await commit(store, Patch(missing, "user-99999", {"lastSignInDateTime": 1})) == []


async def test_reordered_array_is_no_change_and_mirror_keeps_before(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    placement = entity_placement("azure_user", "user-00001")
    await commit(store, user("user-00001", email=["a@x", "b@x"]))
    assert await commit(store, user("user-00001", email=["b@x", "a@x"])) == []
    mirrored = await store.get(placement, "user-00001")
    assert mirrored is not None and mirrored["email"] == ["a@x", "b@x"]


async def test_replaying_the_log_rebuilds_the_mirror(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    group = relationship_placement("azure_user_group", "group-0001")
    await commit(
        store,
        *(user(f"user-{i:05}") for i in range(50)),
        *(membership("group-0001", f"user-{i:05}") for i in range(20)),
    )
    await commit(store, user("user-00003", jobTitle="X"), Delete(group, "group-0001|has|user-00004"))
    await commit(store, Delete(entity_placement("azure_user", "user-00007"), "user-00007"))
    records = await store.read_changes(0, 10_000)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert replay(records) == await store.mirror_dump()


async def test_a_log_written_before_compression_still_reads(redis: aioredis.Redis) -> None:
    """Entries of the earlier layouts (records uncompressed, in field `r`; zlib-compressed, in `z`) read
    back in order with the entries committed after an upgrade (zstd-compressed, in `s`)."""
    store = TenantStore(redis, TENANT)
    created = [(await commit(store, user(f"user-0000{n}")))[0] for n in (1, 2)]
    lines = [orjson.dumps({k: v for k, v in record.items() if k != "seq"}) for record in created]
    await redis.delete(store.keys.changes)
    await redis.xadd(store.keys.changes, {"first": 1, "n": 1, "r": lines[0]}, id="1-0")
    await redis.xadd(store.keys.changes, {"first": 2, "n": 1, "z": zlib.compress(lines[1])}, id="2-0")
    await commit(store, user("user-00001", jobTitle="Auditor"), user("user-00003"))

    records = await store.read_changes(0)

    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[:2] == created
    assert replay(records) == await store.mirror_dump()
    newest: Any = await redis.xrange(store.keys.changes, min="3", max="+")
    assert [set(fields) for _, fields in newest] == [{b"first", b"n", b"s"}]  # written with zstd


async def fresh(store: TenantStore, *ops: Any) -> list[ChangeRecord]:
    return await store.commit(PageWrite(ops=list(ops), fresh=True), source="test", observed_at=NOW)


def count_reads(store: TenantStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time the store reads a page's objects before writing them."""
    reads: list[int] = []
    read_slots = store._read_slots

    async def counted(*args: Any) -> Any:
        reads.append(1)
        return await read_slots(*args)

    monkeypatch.setattr(store, "_read_slots", counted)
    return reads


async def test_a_fresh_page_of_absent_objects_is_written_without_reading_them(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh page is one round trip; another writer's object in the same scope, written since, does
    not make it collide (only its own objects are checked)."""
    store = TenantStore(redis, TENANT)
    reads = count_reads(store, monkeypatch)
    await commit(store, membership("group-0001", "user-00001"))
    assert reads == [1]

    records = await fresh(store, membership("group-0001", "user-00002"), user("user-00002"))

    assert reads == [1]  # not read, and written on the first try
    assert [(r["op"], r["key"], r["before"]) for r in records] == [
        ("upsert", "group-0001|has|user-00002", None),
        ("upsert", "user-00002", None),
    ]
    assert replay(await store.read_changes(0)) == await store.mirror_dump()


async def test_a_fresh_page_with_an_object_already_there_is_read_and_its_records_are_exact(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken to be absent, an object that is there is found so by the write, which writes nothing; the
    page is then read and committed as usual: an update shows what it replaced, a delete is recorded."""
    store = TenantStore(redis, TENANT)
    await commit(store, user("user-00001", jobTitle="Engineer"), user("user-00002"))
    reads = count_reads(store, monkeypatch)

    records = await fresh(
        store,
        user("user-00001", jobTitle="CTO"),
        Delete(entity_placement("azure_user", "user-00002"), "user-00002"),
        user("user-00003"),
    )

    assert reads == [1]
    assert [(r["op"], r["key"], r["changed"]) for r in records] == [
        ("upsert", "user-00001", ["jobTitle"]),
        ("delete", "user-00002", ["_class", "_key", "_type", "name"]),
        ("upsert", "user-00003", ["_class", "_key", "_type", "name"]),
    ]
    assert obj(records[0]["before"])["jobTitle"] == "Engineer"
    assert replay(await store.read_changes(0)) == await store.mirror_dump()


async def test_a_fresh_page_of_only_a_delete_still_deletes_the_object_that_is_there(redis: aioredis.Redis) -> None:
    """Taken to be absent, a deleted object makes no change and the page writes nothing else; the
    page is still checked, so the object that is there is deleted and recorded."""
    store = TenantStore(redis, TENANT)
    await commit(store, user("user-00001"))

    records = await fresh(store, Delete(entity_placement("azure_user", "user-00001"), "user-00001"))

    assert [(r["op"], r["key"]) for r in records] == [("delete", "user-00001")]
    assert await store.mirror_dump() == {}


async def test_concurrent_writers_never_lose_or_reuse_a_seq(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    """Sources committing to the same scopes at once: the commit's version check makes the losers retry."""
    stores = [TenantStore(await connect(redis_server.url), TENANT) for _ in range(4)]
    try:
        await asyncio.gather(
            *(
                commit(store, *(user(f"user-{w}-{i:04}", n=i) for i in range(30)))
                for w, store in enumerate(stores)
                for _ in range(3)
            )
        )
        store = stores[0]
        records = await store.read_changes(0, 10_000)
        assert [r["seq"] for r in records] == list(range(1, 121))
        assert replay(records) == await store.mirror_dump()
    finally:
        for store in stores:
            await store.redis.aclose()


async def test_writers_racing_on_one_object_form_an_unbroken_chain(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Each record's `before` is exactly the previous record's `after`: no write is based on a stale read."""
    clients = [await connect(redis_server.url) for _ in range(6)]
    try:
        stores = [TenantStore(client, TENANT) for client in clients]
        await asyncio.gather(
            *(commit(store, user("user-00001", n=w * 100 + i)) for w, store in enumerate(stores) for i in range(15))
        )
        records = await stores[0].read_changes(0, 10_000)
        assert len(records) == 90
        for previous, record in zip(records, records[1:], strict=False):
            assert record["before"] == previous["after"]
        final = await stores[0].get(entity_placement("azure_user", "user-00001"), "user-00001")
        assert final == records[-1]["after"]
    finally:
        for client in clients:
            await client.aclose()


async def test_a_reason_travels_with_the_record(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    edge = membership("group-0001", "user-00001")
    [added] = await commit(store, Upsert(edge.placement, edge.obj, reason="member_restored"))
    [plain] = await commit(store, user("user-00002"))
    [gone] = await commit(store, Delete(edge.placement, edge.key, "member_deleted"))
    assert (added["reason"], "reason" in plain, gone["reason"]) == ("member_restored", False, "member_deleted")
    assert await store.read_changes(0) == [added, plain, gone]


async def test_the_last_write_of_a_bookkeeping_field_wins(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    write = PageWrite(
        parked=[Parked("u1", "g1|has|u1", b"#microsoft.graph.user"), Parked("u1", "g1|has|u1", None)],
        soft_deleted=[Flag("u1", None), Flag("u1", b"")],
        member_names=[Flag("d1", None), Flag("d1", b'{"displayName":"Kiosk"}')],
    )
    await store.commit(write, source="test", observed_at=NOW)
    assert await store.parked(["u1"]) == {"u1": {}}
    assert await redis.smembers(store.keys.soft_deleted) == {b"u1"}
    assert await store.member_names(["d1", "d2"]) == {"d1": {"displayName": "Kiosk"}}
    await store.commit(PageWrite(parked=[Parked("u1", "~", b"{}")]), source="test", observed_at=NOW)
    assert 0 < await redis.ttl(store.keys.parked("u1")) <= store.keys.PARKED_TTL
    assert await store.soft_deleted() == {"u1"}
    await redis.delete(store.keys.parked("u1"))  # expired: the soft-deleted mark goes with it
    assert await store.soft_deleted() == set()
    assert await redis.smembers(store.keys.soft_deleted) == set()


async def test_memberships_of_a_member_are_found_in_every_scope(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    groups = [f"group-{n:04}" for n in range(40)]
    account = Upsert(relationship_placement("azure_user_group", "user-x"), {"_key": "acct|has|user-x", "_type": "t"})
    await commit(store, *(membership(g, "user-x") for g in groups[::3]), *(membership(g, "user-y") for g in groups))
    await commit(store, account)
    scopes = await store.known_scopes("relationship", "azure_user_group")
    assert len(scopes) > 1
    found = await store.memberships_of(["user-x"], scopes, skip_prefix="acct|")
    assert sorted(found) == sorted(f"{g}|has|user-x" for g in groups[::3])
    assert found[f"{groups[0]}|has|user-x"]["_toEntityKey"] == "user-x"


async def test_a_mirror_written_before_packing_reads_and_is_rewritten(redis: aioredis.Redis) -> None:
    """Entries of the earlier layout (the `_key` as field, canonical JSON as value) read as before: an
    unchanged page emits nothing, a change carries the earlier object as `before`, the membership
    scan finds them, and every entry ends up packed and compressed with nothing lost."""
    group, member, other = (str(uuid.UUID(int=n)) for n in (0xA1, 0xB2, 0xC3))
    earlier = [user(member, jobTitle="Clerk"), user(other), membership(group, member), membership(group, other)]
    writer = TenantStore(redis, TENANT)
    for op in earlier:
        scope = scope_of(op.placement)
        await redis.hset(writer.keys.mirror(scope), op.key, canonical(op.obj))
        await redis.sadd(writer.keys.scopes, str(scope))
        await redis.hset(writer.keys.scope_versions, str(scope), 3)
    dump = {(op.placement.kind, op.key): op.obj for op in earlier}
    assert await writer.mirror_dump() == dump  # whole-scope readers need no rewrite

    store = TenantStore(redis, TENANT)
    assert await store.get(entity_placement("azure_user", member), member) == earlier[0].obj
    assert await commit(store, *earlier) == []
    [changed] = await commit(store, user(member, jobTitle="Auditor"))
    scopes = await store.known_scopes("relationship", "azure_user_group")
    found = await store.memberships_of([other], scopes, skip_prefix="acct|")

    assert changed["before"] == earlier[0].obj and changed["changed"] == ["jobTitle"]
    assert found == {f"{group}|has|{other}": earlier[3].obj}
    assert await store.mirror_dump() == {**dump, ("entity", member): {**earlier[0].obj, "jobTitle": "Auditor"}}
    for scope in await store.known_scopes():
        entries: dict[bytes, bytes] = await redis.hgetall(store.keys.mirror(scope))  # type: ignore[assignment]
        assert entries and all(is_current(f, v, unpack_key(f)) for f, v in entries.items())
    assert await redis.get(store.keys.mirror_format) == TenantKeys.MIRROR_FORMAT.encode()


async def test_a_mirror_of_the_earlier_scope_layout_is_moved_into_its_scopes(redis: aioredis.Redis) -> None:
    """Groups and devices were once cut into 32 and 256 entity scopes (now as many as their
    relationships: 4,096 and 512). Entities the earlier version wrote there are found, moved into their
    own scopes, and neither lost nor emitted again."""
    groups = [str(uuid.UUID(int=0x6000 + n)) for n in range(12)]
    devices = [str(uuid.UUID(int=0xD000 + n)) for n in range(12)]
    earlier = [
        *(
            Upsert(entity_placement("azure_user_group", g), {"_key": g, "_type": "azure_user_group", "id": g})
            for g in groups
        ),
        *(Upsert(entity_placement("intune_device", d), {"_key": d, "_type": "laptop", "id": d}) for d in devices),
    ]
    writer = TenantStore(redis, TENANT)
    for op in earlier:
        old = ScopeId(
            "entity", op.placement.family, bucket_of(op.key, 32 if op.placement.family == "azure_user_group" else 256)
        )
        await redis.hset(writer.keys.mirror(old), op.key, canonical(op.obj))
        await redis.sadd(writer.keys.scopes, str(old))
        await redis.hset(writer.keys.scope_versions, str(old), 3)
    assert any(scope_of(op.placement) != ScopeId(*scope_of(op.placement)[:2], bucket_of(op.key, 32)) for op in earlier)

    # A reader of whole scopes (the JupiterOne publisher uploads one at a time) sees each where it belongs.
    publisher = TenantStore(redis, TENANT)
    for op in earlier:
        assert (await publisher.scope_objects(scope_of(op.placement)))[op.key] == op.obj
    store = TenantStore(redis, TENANT)
    for op in earlier:
        assert await store.get(op.placement, op.key) == op.obj
    assert await commit(store, *earlier) == []
    assert await store.mirror_dump() == {(op.placement.kind, op.key): op.obj for op in earlier}
    for scope in await store.known_scopes():
        for field in await redis.hkeys(store.keys.mirror(scope)):
            key = unpack_key(field)
            assert scope == scope_of(entity_placement(scope.family, key)), (scope, key)
    assert await store.last_seq() == 0


async def test_objects_keyed_by_uuids_are_stored_packed_and_compressed(redis: aioredis.Redis) -> None:
    store = TenantStore(redis, TENANT)
    group, member = str(uuid.UUID(int=1 << 100)), str(uuid.UUID(int=(1 << 128) - 1))  # raw bytes hold 0xFF
    await commit(store, user(member), membership(group, member))
    scope = scope_of(relationship_placement("azure_user_group", group))
    [(field, value)] = (await redis.hgetall(store.keys.mirror(scope))).items()

    assert field == pack_key(f"{group}|has|{member}") and len(field) == 2 * 17 + len("|has|")
    assert value[0] == FRAME and len(value) < len(canonical(membership(group, member).obj)) / 3
    found = await store.memberships_of([member], [scope], skip_prefix="acct|")
    assert found == {f"{group}|has|{member}": membership(group, member).obj}
