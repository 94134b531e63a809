"""The simulated JupiterOne's query API: the J1QL subset monitor uses, paged and deferred as documented."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from monitor.simulator.jupiterone import GRAPHQL, RunningJupiterOne, SimJupiterOne
from tests.jupiterone.raw_api import GROUPS, USERS, Api, JsonObject, entity, to_user

ENTITIES = f"FIND * WITH _scope = '{GROUPS}'"
EDGES = (
    f"FIND * WITH _scope = '{GROUPS}' AS a THAT RELATES TO AS r * AS b WHERE r._scope = '{GROUPS}' "
    "RETURN r.*, a._key, a._scope, b._key, b._scope"
)
SCOPES = "FIND UNIQUE * WITH _scope ^= 'test/' AS e RETURN e._scope"
EDGE_SCOPES = (
    "FIND UNIQUE * WITH _scope ^= 'test/' AS a THAT RELATES TO AS r * WHERE r._scope ^= 'test/' RETURN r._scope"
)


@pytest.fixture
async def api(j1: SimJupiterOne, j1_server: RunningJupiterOne) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, j1_server.url, j1)


async def query(api: Api, j1ql: str, **variables: Any) -> JsonObject:
    status, body, _ = await api.call(
        "POST", GRAPHQL, {"query": "query { queryV1 }", "variables": {"query": j1ql, **variables}}
    )
    assert status == 200, body
    return body


async def seed(api: Api) -> None:
    await api.run(USERS, entities=[entity(f"user-{n:06d}") for n in range(3)])
    groups = [entity(f"group-{n:05d}") for n in range(5)]
    edges = [to_user("group-00000", "user-000001"), to_user("group-00001", "user-000002")]
    await api.run(GROUPS, entities=groups, relationships=edges)


async def test_entities_of_a_scope_come_in_pages_until_the_cursor_is_null(api: Api, j1: SimJupiterOne) -> None:
    await seed(api)
    j1.query_page_size = 2
    rows, cursor, pages = [], None, 0
    while True:
        answer = (await query(api, ENTITIES, **({"cursor": cursor} if cursor else {})))["data"]["queryV1"]
        assert answer["type"] == "list"
        rows += answer["data"]
        pages += 1
        cursor = answer["cursor"]
        if cursor is None:
            break
    assert pages == 3 and [row["entity"]["_key"] for row in rows] == [f"group-{n:05d}" for n in range(5)]
    first = rows[0]
    assert first["id"] == first["entity"]["_id"] and first["entity"]["_scope"] == GROUPS
    assert first["entity"]["_type"] == ["azure_user"] and first["properties"] == {"name": "group-00000"}


async def test_relationships_of_a_scope_come_as_a_table_with_their_ends(api: Api, j1: SimJupiterOne) -> None:
    await seed(api)
    inner = {**to_user("group-00003", "group-00004"), "_toEntityScope": GROUPS}  # both ends in GROUPS
    await api.run(
        GROUPS,
        entities=[entity(f"group-{n:05d}") for n in range(5)],
        relationships=[to_user("group-00000", "user-000001"), to_user("group-00001", "user-000002"), inner],
    )
    j1.query_page_size = 2

    rows, cursor = [], None
    while True:
        answer = (await query(api, EDGES, **({"cursor": cursor} if cursor else {})))["data"]["queryV1"]
        assert answer["type"] == "table"
        rows += answer["data"]
        if (cursor := answer["cursor"]) is None:
            break

    seen = sorted((r["r._key"], r["a._key"], r["b._scope"], r["b._key"]) for r in rows)
    assert seen == [
        ("group-00000|has|user-000001", "group-00000", USERS, "user-000001"),
        ("group-00001|has|user-000002", "group-00001", USERS, "user-000002"),
        ("group-00003|has|group-00004", "group-00003", GROUPS, "group-00004"),  # once from each end
        ("group-00003|has|group-00004", "group-00004", GROUPS, "group-00003"),
    ]
    first = next(r for r in rows if r["r._key"].startswith("group-00000"))
    assert (first["r._type"], first["r._class"], first["r._scope"], first["r._fromEntityKey"]) == (
        "azure_group_has_member",
        "HAS",
        GROUPS,
        "group-00000",
    )
    assert "r._toEntitySource" not in first  # what the upload labelled is not a property of the relationship


async def test_the_scopes_under_a_prefix_are_listed_once_each(api: Api) -> None:
    await seed(api)
    await api.run("other/e:x", entities=[entity("other-00001")])
    entity_scopes = (await query(api, SCOPES))["data"]["queryV1"]
    edge_scopes = (await query(api, EDGE_SCOPES))["data"]["queryV1"]
    assert entity_scopes["type"] == "table" and entity_scopes["data"] == [{"e._scope": GROUPS}, {"e._scope": USERS}]
    assert edge_scopes["data"] == [{"r._scope": GROUPS}]


async def test_a_deferred_answer_is_fetched_from_its_url_without_credentials(api: Api) -> None:
    await seed(api)
    answer = (await query(api, SCOPES, deferredResponse="FORCE"))["data"]["queryV1"]
    assert answer["type"] == "deferred"
    async with api.session.get(answer["url"]) as response:  # no Authorization, no account header
        state = await response.json()
    assert state["status"] == "COMPLETED"
    async with api.session.get(state["url"]) as response:
        result = await response.json()
    assert result["type"] == "table" and {"e._scope": GROUPS} in result["data"]


@pytest.mark.parametrize(
    "j1ql",
    ["FIND User", f"FIND * WITH _scope ~= '{GROUPS}'", f"{ENTITIES} LIMIT 5", f"{EDGES} LIMIT 2", "DELETE it"],
)
async def test_a_query_outside_the_subset_is_a_graphql_error(api: Api, j1ql: str) -> None:
    body = await query(api, j1ql)
    assert body["data"]["queryV1"] is None and body["errors"][0]["message"]


async def test_a_cursor_of_another_query_is_refused(api: Api, j1: SimJupiterOne) -> None:
    await seed(api)
    j1.query_page_size = 1
    cursor = (await query(api, ENTITIES))["data"]["queryV1"]["cursor"]
    body = await query(api, SCOPES, cursor=cursor)
    assert body["errors"] and "another query" in body["errors"][0]["message"]


async def test_queries_need_the_api_key(api: Api) -> None:
    status, body, _ = await api.call("POST", GRAPHQL, {"query": "query { queryV1 }"}, headers={})
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
