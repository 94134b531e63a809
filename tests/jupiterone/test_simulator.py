"""The simulated JupiterOne's documented semantics, over raw HTTP (the sync-jobs pages of
docs.jupiterone.io; see `monitor.simulator.jupiterone`)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from monitor.simulator.ca import CertificateAuthority
from monitor.simulator.jupiterone import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    JOBS,
    SYNC_JOB_COUNTERS,
    RunningJupiterOne,
    SimJupiterOne,
    serve_jupiterone,
    strip_system,
)
from tests.jupiterone.raw_api import EDGES, GROUPS, USERS, Api, JsonObject, cross, edge, entity, to_user


@pytest.fixture
async def api(j1: SimJupiterOne, j1_server: RunningJupiterOne) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, j1_server.url, j1)


def keys(objects: dict[tuple[str, str], JsonObject]) -> set[str]:
    return {key for _, key in objects}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"JupiterOne-Account": DEFAULT_ACCOUNT},
        {"Authorization": "Bearer nope", "JupiterOne-Account": DEFAULT_ACCOUNT},
        {"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        {"Authorization": f"Bearer {DEFAULT_API_KEY}", "JupiterOne-Account": "other"},
    ],
    ids=["none", "no-key", "wrong-key", "no-account", "wrong-account"],
)
async def test_requests_without_valid_auth_headers_are_401(api: Api, headers: dict[str, str]) -> None:
    status, body, _ = await api.call("POST", JOBS, {"source": "api", "scope": USERS}, headers=headers)
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    assert api.sim.jobs == {}
    status, _, _ = await api.call("POST", JOBS, {"source": "api", "scope": USERS})
    assert status == 200


@pytest.mark.parametrize(
    ("job", "code", "message"),
    [
        ({"source": "api", "syncMode": "DIFF"}, "SCOPE_REQUIRED", "scope is required"),
        (
            {"source": "api", "scope": USERS, "syncMode": "CREATE_OR_UPDATE"},
            "SYNC_MODE_NOT_SUPPORTED",
            "no longer functions",
        ),
        ({"source": "api", "scope": USERS, "syncMode": "OVERRIDE"}, "NOT_SIMULATED", "OVERRIDE"),
        ({"source": "api", "scope": USERS, "syncMode": "MERGE"}, "INVALID_SYNC_MODE", "MERGE"),
        ({"source": "elsewhere", "scope": USERS}, "INVALID_SOURCE", "source must be one of"),
        ({"source": "integration-managed", "scope": USERS}, "INVALID_SCOPE", "only with source api"),
        ({"source": "integration-external"}, "INTEGRATION_INSTANCE_REQUIRED", "integrationInstanceId"),
    ],
)
async def test_create_job_validates_source_scope_and_mode(api: Api, job: JsonObject, code: str, message: str) -> None:
    status, body, _ = await api.call("POST", JOBS, job)
    assert status == 400 and body["error"]["code"] == code and message in body["error"]["message"]


async def test_create_job_defaults_to_diff_and_takes_integration_sources(api: Api) -> None:
    _, body, _ = await api.call("POST", JOBS, {"source": "api", "scope": USERS})
    assert body["job"]["syncMode"] == "DIFF" and body["job"]["status"] == "AWAITING_UPLOADS"
    status, body, _ = await api.call("POST", JOBS, {"source": "integration-external", "integrationInstanceId": "i-1"})
    assert status == 200 and body["job"]["scope"] == "integration:i-1"


async def test_diff_replaces_the_scope_and_deletes_what_is_missing(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001"), entity("user-000002")])
    await api.run(GROUPS, entities=[entity("group-00001")], relationships=[edge("group-00001", "group-00001")])

    job = await api.run(USERS, entities=[entity("user-000002", jobTitle="CTO"), entity("user-000003")])

    assert keys(api.sim.entities(USERS)) == {"user-000002", "user-000003"}
    assert (job["numEntitiesCreated"], job["numEntitiesUpdated"], job["numEntitiesDeleted"]) == (1, 1, 1)
    assert strip_system(api.sim.entities(USERS)[(USERS, "user-000002")]) == entity("user-000002", jobTitle="CTO")
    assert keys(api.sim.entities(GROUPS)) == {"group-00001"}  # other scopes untouched
    await api.run(GROUPS)
    assert api.sim.entities(GROUPS) == {} and api.sim.relationships(GROUPS) == {}  # an empty DIFF empties


async def test_stored_objects_carry_scope_source_and_a_stable_id(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001")])
    first = api.sim.entities(USERS)[(USERS, "user-000001")]
    await api.run(USERS, entities=[entity("user-000001", jobTitle="x")])
    second = api.sim.entities(USERS)[(USERS, "user-000001")]
    assert (first["_scope"], first["_source"]) == (USERS, "api") and first["_id"] == second["_id"]


async def test_deleting_an_entity_deletes_its_relationships_in_any_scope(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001"), entity("user-000002")])
    edges = [to_user("group-00001", "user-000001"), to_user("group-00001", "user-000002")]
    await api.run(GROUPS, entities=[entity("group-00001")], relationships=edges)

    job = await api.run(USERS, entities=[entity("user-000002")])

    assert keys(api.sim.relationships(GROUPS)) == {"group-00001|has|user-000002"}
    assert job["numRelationshipsDeleted"] == 1


async def test_patch_takes_entities_only_merges_and_never_deletes(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001", jobTitle="CTO"), entity("user-000002")])
    job_id = await api.create(USERS, "PATCH")
    status, body, _ = await api.call(
        "POST", f"{JOBS}/{job_id}/relationships", {"relationships": [edge("a" * 10, "b" * 10)]}
    )
    assert status == 400 and body["error"]["code"] == "RELATIONSHIPS_NOT_ALLOWED"

    assert (
        await api.upload(job_id, [{"_key": "user-000001", "_type": "azure_user", "_class": ["User"], "active": True}])
        == 200
    )
    await api.finish(job_id)

    patched = api.sim.entities(USERS)[(USERS, "user-000001")]
    assert patched["jobTitle"] == "CTO" and patched["active"] is True
    assert keys(api.sim.entities(USERS)) == {"user-000001", "user-000002"}


async def test_cross_scope_takes_relationships_between_scopes_only(api: Api) -> None:
    job_id = await api.create(EDGES, "CROSS_SCOPE")
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", {"entities": [entity("user-000001")]})
    assert status == 400 and body["error"]["code"] == "ENTITIES_NOT_ALLOWED"
    unlabelled = edge("group-00001", "user-000001")
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/relationships", {"relationships": [unlabelled]})
    assert status == 400 and body["error"]["code"] == "MISSING_ENTITY_SCOPE"
    # "If the entities in question are in the same scope, use DIFF or PATCH."
    same = edge("user-000001", "user-000002", _fromEntityScope=USERS, _toEntityScope=USERS)
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/relationships", {"relationships": [same]})
    assert status == 400 and body["error"]["code"] == "SAME_SCOPE_RELATIONSHIP"
    assert set(body["error"]) == {"code", "message"}  # the documented error shape, nothing more


async def test_cross_scope_adds_and_updates_but_never_deletes(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001"), entity("user-000002")])
    await api.run(GROUPS, entities=[entity("group-00001")])
    await api.run(EDGES, "CROSS_SCOPE", relationships=[cross("group-00001", "user-000001")])

    job = await api.run(EDGES, "CROSS_SCOPE", relationships=[cross("group-00001", "user-000002")])

    # Nothing documents that a relationship missing from a CROSS_SCOPE upload is deleted.
    assert keys(api.sim.relationships(EDGES)) == {"group-00001|has|user-000001", "group-00001|has|user-000002"}
    assert (job["numRelationshipsCreated"], job["numRelationshipsDeleted"]) == (1, 0)


async def test_a_diff_relationship_to_a_labelled_entity_of_another_scope_is_created_and_deleted_by_diff(
    api: Api,
) -> None:
    await api.run(USERS, entities=[entity("user-000001"), entity("user-000002")])
    await api.run(GROUPS, entities=[entity("group-00001")], relationships=[to_user("group-00001", "user-000001")])
    [stored] = api.sim.relationships(GROUPS).values()
    assert (stored["_fromEntityScope"], stored["_toEntityScope"]) == (GROUPS, USERS)

    job = await api.run(GROUPS, entities=[entity("group-00001")], relationships=[to_user("group-00001", "user-000002")])

    assert keys(api.sim.relationships(GROUPS)) == {"group-00001|has|user-000002"}  # DIFF: missing is deleted
    assert (job["numRelationshipsCreated"], job["numRelationshipsDeleted"]) == (1, 1)


async def test_a_diff_relationship_with_no_end_in_the_jobs_scope_is_refused(api: Api) -> None:
    job_id = await api.create(EDGES)
    status, body, _ = await api.call(
        "POST", f"{JOBS}/{job_id}/relationships", {"relationships": [cross("g" * 10, "u" * 10)]}
    )
    assert status == 400 and body["error"]["code"] == "RELATIONSHIP_OUTSIDE_SCOPE"


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"_toEntityScope": USERS},
        {"_toEntitySource": "api"},
        {"_toEntitySource": "integration-managed", "_toEntityScope": USERS},
    ],
    ids=["unlabelled", "scope-only", "source-only", "wrong-source"],
)
async def test_an_end_in_another_scope_is_found_only_with_its_source_and_scope(
    api: Api, labels: dict[str, str]
) -> None:
    await api.run(USERS, entities=[entity("user-000001")])
    job = await api.run(
        GROUPS, entities=[entity("group-00001")], relationships=[edge("group-00001", "user-000001", **labels)]
    )
    created = labels == {"_toEntityScope": USERS}  # a scope alone names it; the docs ask for both
    assert job["numRelationshipCreateErrors"] == (0 if created else 1)
    assert (api.sim.relationships(GROUPS) != {}) is created


async def test_a_relationship_whose_end_is_missing_is_counted_not_listed(api: Api) -> None:
    await api.run(USERS, entities=[entity("user-000001")])

    job = await api.run(
        GROUPS,
        entities=[entity("group-00001")],
        relationships=[to_user("group-00001", "user-000001"), to_user("group-00001", "user-000009")],
    )

    assert job["status"] == "FINISHED" and job["done"] is True and job["numRelationshipCreateErrors"] == 1
    assert "errors" not in job
    assert set(job) == {"id", "source", "scope", "accountId", "status", "done", "startTimestamp", "syncMode"} | set(
        SYNC_JOB_COUNTERS
    )
    assert keys(api.sim.relationships(GROUPS)) == {"group-00001|has|user-000001"}


async def test_objects_rejected_at_finalize_count_as_create_or_update_errors(api: Api, j1: SimJupiterOne) -> None:
    await api.run(USERS, entities=[entity("user-000001")])
    j1.reject_at_finalize("user-000001", "user-000002")

    job = await api.run(USERS, entities=[entity("user-000001", jobTitle="new"), entity("user-000002")])

    assert (job["numEntityUpdateErrors"], job["numEntityCreateErrors"], job["status"]) == (1, 1, "FINISHED")
    assert "jobTitle" not in j1.entities(USERS)[(USERS, "user-000001")] and len(j1.entities(USERS)) == 1


@pytest.mark.parametrize("where", ["one request", "two requests", "entity and relationship"])
async def test_a_duplicate_key_in_a_job_is_refused(api: Api, where: str) -> None:
    job_id = await api.create(USERS)
    duplicate = entity("user-000001")
    if where == "one request":
        assert await api.upload(job_id, [duplicate, duplicate]) == 400
    elif where == "two requests":
        assert await api.upload(job_id, [duplicate]) == 200
        assert await api.upload(job_id, [duplicate]) == 400
    else:
        assert (
            await api.upload(job_id, [entity("group-00001|has|user-000001")], [edge("group-00001", "user-000001")])
            == 400
        )
    assert api.sim.requests[-1].status == 400


async def test_ignore_duplicates_keeps_the_last(api: Api) -> None:
    job_id = await api.create(USERS, ignoreDuplicates=True)
    assert await api.upload(job_id, [entity("user-000001", jobTitle="a"), entity("user-000001", jobTitle="b")]) == 200
    await api.finish(job_id)
    assert api.sim.entities(USERS)[(USERS, "user-000001")]["jobTitle"] == "b"


async def test_duplicate_key_error_names_the_key(api: Api) -> None:
    job_id = await api.create(USERS)
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", {"entities": [entity("user-000001")] * 2})
    assert status == 400 and body["error"] == {
        "code": "DUPLICATE_KEY_DETECTED",
        "message": "duplicate _key 'user-000001' in job",
    }


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        (entity("short"), "INVALID_GRAPH_OBJECT"),
        ({**entity("user-000001"), "_type": "x"}, "INVALID_GRAPH_OBJECT"),
        ({**entity("user-000001"), "manager": {"id": 1}}, "INVALID_PROPERTY_VALUE"),
        ({**entity("user-000001"), "mixed": [1, "a"]}, "INVALID_PROPERTY_VALUE"),
    ],
)
async def test_uploads_are_checked_against_the_property_rules(api: Api, obj: JsonObject, code: str) -> None:
    job_id = await api.create(USERS)
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", {"entities": [obj]})
    assert status == 400 and body["error"]["code"] == code
    assert api.sim.jobs[job_id].entities == {}


async def test_raw_data_may_be_nested(api: Api) -> None:
    raw = [{"name": "default", "rawData": {"id": "x", "nested": {"a": 1}}}]
    await api.run(USERS, entities=[entity("user-000001", _rawData=raw)])
    assert api.sim.entities(USERS)[(USERS, "user-000001")]["_rawData"] == raw


async def test_entities_must_be_an_array(api: Api) -> None:
    job_id = await api.create(USERS)
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", {"entities": {"_key": "user-000001"}})
    assert status == 400 and body["error"]["code"] == "ENTITY_IS_NOT_ARRAY"


async def test_gzip_bodies_are_accepted_and_the_size_limit_applies_before_and_after(
    api: Api, j1: SimJupiterOne
) -> None:
    j1.max_body_bytes = 5_000
    job_id = await api.create(USERS)
    small = {"entities": [entity(f"user-{n:06d}") for n in range(5)]}
    status, _, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", small, compress=True)
    assert status == 200 and len(j1.jobs[job_id].entities) == 5

    large = {"entities": [entity(f"user-{n:06d}", note="z" * 100) for n in range(5, 100)]}
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", large)
    assert status == 413 and body["error"]["code"] == "RequestEntityTooLargeException"
    status, _, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", large, compress=True)  # small on the wire
    assert status == 413 and len(j1.jobs[job_id].entities) == 5
    status, body, _ = await api.call(
        "POST", f"{JOBS}/{job_id}/entities", b"not gzip", headers={**api.headers(), "Content-Encoding": "gzip"}
    )
    assert status == 400 and body["error"]["code"] == "INVALID_BODY"


async def test_the_default_limit_is_six_megabytes(api: Api) -> None:
    job_id = await api.create(USERS)
    padding = "p" * 1_000_000
    body = {"entities": [entity(f"user-{n:06d}", note=padding) for n in range(7)]}
    status, _, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", body)
    assert status == 413
    status, _, _ = await api.call("POST", f"{JOBS}/{job_id}/entities", {"entities": body["entities"][:5]})
    assert status == 200


async def test_finalize_is_asynchronous(api: Api, j1: SimJupiterOne) -> None:
    j1.slow_finalize(3)
    job_id = await api.create(USERS)
    await api.upload(job_id, [entity("user-000001")])
    _, body, _ = await api.call("POST", f"{JOBS}/{job_id}/finalize", {})
    statuses = [body["job"]["status"]]
    for _ in range(3):
        _, body, _ = await api.call("GET", f"{JOBS}/{job_id}")
        statuses.append(body["job"]["status"])
    assert statuses == ["FINALIZE_PENDING", "FINALIZE_PENDING", "FINALIZE_PENDING", "FINISHED"]
    assert body["job"]["numEntitiesCreated"] == 1 and body["job"]["numEntitiesUploaded"] == 1


async def test_a_job_that_is_not_awaiting_uploads_refuses_uploads_and_finalize(api: Api) -> None:
    job_id = await api.create(USERS)
    await api.finish(job_id)
    for path, payload in (("entities", {"entities": [entity("user-000001")]}), ("finalize", {})):
        status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/{path}", payload)
        assert status == 400 and body["error"]["code"] == "JOB_NOT_AWAITING_UPLOADS"


async def test_jobs_are_applied_in_the_order_they_were_finalized(api: Api, j1: SimJupiterOne) -> None:
    first, second = await api.create(USERS), await api.create(USERS)
    await api.upload(first, [entity("user-000001", jobTitle="old")])
    await api.upload(second, [entity("user-000001", jobTitle="new")])
    await api.call("POST", f"{JOBS}/{first}/finalize", {})
    await api.call("POST", f"{JOBS}/{second}/finalize", {})

    _, body, _ = await api.call("GET", f"{JOBS}/{second}")  # the first is applied before it

    assert body["job"]["status"] == "FINISHED" and j1.jobs[first].status == "FINISHED"
    assert j1.entities(USERS)[(USERS, "user-000001")]["jobTitle"] == "new"


async def test_settle_applies_finalized_jobs_and_never_unfinalized_ones(api: Api, j1: SimJupiterOne) -> None:
    finalized, open_job = await api.create(USERS), await api.create(GROUPS)
    await api.upload(finalized, [entity("user-000001")])
    await api.upload(open_job, [entity("group-00001")])
    await api.call("POST", f"{JOBS}/{finalized}/finalize", {})
    assert j1.entities() == {}
    j1.settle()
    assert keys(j1.entities()) == {"user-000001"} and j1.jobs[open_job].status == "AWAITING_UPLOADS"


async def test_abort_ends_a_job_awaiting_uploads(api: Api, j1: SimJupiterOne) -> None:
    job_id = await api.create(USERS)
    status, body, _ = await api.call("POST", f"{JOBS}/{job_id}/abort", {"reason": "test"})
    assert status == 200 and body["job"]["status"] == "ABORTED"
    status, _, _ = await api.call("POST", f"{JOBS}/{job_id}/abort", {"reason": "again"})
    assert status == 400


async def test_unknown_jobs_are_404(api: Api) -> None:
    status, body, _ = await api.call("GET", f"{JOBS}/nope")
    assert status == 404 and body["error"]["code"] == "JOB_NOT_FOUND"


async def test_throttling_answers_429_with_ratelimit_headers(api: Api, j1: SimJupiterOne) -> None:
    j1.throttle(requests=2, reset=12)
    answers = [await api.call("POST", JOBS, {"source": "api", "scope": USERS}) for _ in range(3)]
    assert [status for status, _, _ in answers] == [429, 429, 200]
    headers = answers[0][2]
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"], headers["RateLimit-Reset"]) == ("30", "0", "12")
    assert "Retry-After" not in headers and answers[0][1]["error"]["code"] == "RATE_LIMIT_EXCEEDED"


async def test_down_for_n_requests_then_back(api: Api, j1: SimJupiterOne) -> None:
    j1.down(requests=2)
    statuses = [(await api.call("POST", JOBS, {"source": "api", "scope": USERS}))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in j1.requests] == [503, 503, 200]
    assert len(j1.jobs) == 1


async def test_graph_for_prefix_reads_one_tenant_and_catches_a_key_in_two_scopes(api: Api, j1: SimJupiterOne) -> None:
    await api.run("a/1/e:users:0", entities=[entity("user-000001")])
    await api.run("b/1/e:users:0", entities=[entity("user-000002")])
    assert set(j1.graph_for_prefix("a/").entities) == {"user-000001"}
    await api.run("a/1/e:users:1", entities=[entity("user-000001")])
    with pytest.raises(ValueError, match="user-000001"):
        j1.graph_for_prefix("a/")


async def test_served_over_https_with_a_given_ca() -> None:
    authority = CertificateAuthority.create()
    sim = SimJupiterOne()
    async with serve_jupiterone(sim, tls=True, ca=authority) as running:
        assert running.ca_bundle_path is not None and running.ca_bundle_path.read_bytes() == authority.certificate_pem
        context = ssl.create_default_context(cafile=str(running.ca_bundle_path))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            status, _, _ = await Api(session, running.url, sim).call("POST", JOBS, {"source": "api", "scope": USERS})
    assert status == 200
