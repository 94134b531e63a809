"""The JupiterOne API client against the simulated JupiterOne: headers, sizes, retries, job states."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import orjson
import pytest

from monitor.settings import Settings
from monitor.simulator.jupiterone import RunningJupiterOne, SimJupiterOne
from monitor.sinks.j1_client import (
    J1JobFailed,
    J1QueryError,
    J1Refused,
    J1Unavailable,
    JobNotAwaitingUploads,
    JupiterOneClient,
    batch_bodies,
    job_errors,
    rate_limit_reset,
)
from tests.conftest import RedisServer
from tests.jupiterone.conftest import Sleeps, make_settings

SCOPE = "monitor/test/e:azure_user:1"


def user(n: int, padding: int = 0) -> bytes:
    entity = {
        "_key": f"user-key-{n:06d}",
        "_type": "azure_user",
        "_class": ["User"],
        "name": f"User {n}",
        "displayName": f"User {n}",
        "notes": "n" * padding,
    }
    return orjson.dumps(entity)


@pytest.fixture
async def client(settings: Settings, sleeps: Sleeps) -> AsyncIterator[JupiterOneClient]:
    made = JupiterOneClient(settings, sleep=sleeps)
    yield made
    await made.close()


def test_batches_stay_under_the_limit_and_keep_every_object_in_order() -> None:
    objects = [user(n, padding=n * 7) for n in range(200)]
    bodies = batch_bodies("entities", objects, 4_000)
    assert len(bodies) > 1 and all(len(body) <= 4_000 for body in bodies)
    decoded = [obj for body in bodies for obj in orjson.loads(body)["entities"]]
    assert decoded == [orjson.loads(obj) for obj in objects]
    assert batch_bodies("relationships", [], 4_000) == []
    with pytest.raises(ValueError, match="cannot fit"):
        batch_bodies("entities", [user(1, padding=5_000)], 4_000)


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("0.5", 0.5), ("1700000030", 30.0), ("soon", None), (None, None), ("-3", 0.0)]
)
def test_ratelimit_reset_is_seconds_or_an_epoch_time(value: str | None, seconds: float | None) -> None:
    assert rate_limit_reset(value, now=1_700_000_000.0) == seconds


async def test_a_job_runs_through_create_upload_finalize_and_finished(
    j1: SimJupiterOne, client: JupiterOneClient
) -> None:
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    assert job["status"] == "AWAITING_UPLOADS"
    upload = await client.upload(job["id"], "entities", [user(n) for n in range(3)])
    finalized = await client.finalize(job["id"])
    assert finalized["status"] == "FINALIZE_PENDING"
    finished = await client.wait_finished(job["id"], finalized)

    assert finished["status"] == "FINISHED" and finished["numEntitiesCreated"] == 3
    assert upload.requests == 1 and upload.wire_bytes < upload.raw_bytes
    assert len(j1.entities(SCOPE)) == 3
    [record] = [r for r in j1.requests if r.path.endswith("/entities")]
    assert record.wire_bytes == upload.wire_bytes and record.body_bytes == upload.raw_bytes


async def test_uploads_are_gzipped_with_a_correlation_id_kept_across_retries(
    j1: SimJupiterOne, client: JupiterOneClient
) -> None:
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    j1.fail(502, requests=1)
    await client.upload(job["id"], "entities", [user(1)])

    create = j1.requests[0]
    failed, accepted = j1.requests[1:]
    assert create.content_encoding == "" and create.correlation_id == ""
    assert accepted.status == 200 and accepted.content_encoding == "gzip"
    assert accepted.correlation_id and failed.correlation_id == accepted.correlation_id
    assert accepted.wire_bytes < accepted.body_bytes


async def test_an_upload_is_split_into_requests_under_the_limit(
    j1: SimJupiterOne, redis_server: RedisServer, j1_server: RunningJupiterOne
) -> None:
    client = JupiterOneClient(make_settings(redis_server, j1_server, j1_max_request_bytes=10_000), sleep=Sleeps())
    try:
        job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
        upload = await client.upload(job["id"], "entities", [user(n, padding=300) for n in range(100)])
        await client.wait_finished(job["id"], await client.finalize(job["id"]))
    finally:
        await client.close()

    bodies = [r.body_bytes for r in j1.requests if r.path.endswith("/entities")]
    assert upload.requests == len(bodies) > 1 and all(size <= 10_000 for size in bodies)
    assert len(j1.entities(SCOPE)) == 100


async def test_throttling_honours_retry_after_before_ratelimit_reset(
    j1: SimJupiterOne, client: JupiterOneClient, sleeps: Sleeps
) -> None:
    j1.throttle(requests=1, reset=30, retry_after=2)
    j1.throttle(requests=1, reset=5)
    await client.create_job(scope=SCOPE, sync_mode="DIFF")
    assert 2 <= sleeps.delays[0] < 5 and 5 <= sleeps.delays[1] < 30
    assert client.stats.throttled == 2 and client.stats.retries == 2


async def test_server_errors_are_retried_then_given_up(
    j1: SimJupiterOne, client: JupiterOneClient, sleeps: Sleeps
) -> None:
    j1.fail(500, requests=2)
    await client.create_job(scope=SCOPE, sync_mode="DIFF")
    assert len(sleeps.delays) == 2

    j1.down(requests=100)
    with pytest.raises(J1Unavailable, match="503 after 3 retries") as caught:
        await client.create_job(scope=SCOPE, sync_mode="DIFF")
    assert caught.value.transient and len(sleeps.delays) == 2 + 3


async def test_a_transport_failure_is_retried(redis_server: RedisServer, j1_server: RunningJupiterOne) -> None:
    sleeps = Sleeps()
    unreachable = j1_server.url.rsplit(":", 1)[0] + ":1"
    running = RunningJupiterOne(unreachable, None, j1_server.simulator)
    client = JupiterOneClient(make_settings(redis_server, running), sleep=sleeps)
    try:
        with pytest.raises(J1Unavailable, match="cannot reach JupiterOne"):
            await client.create_job(scope=SCOPE, sync_mode="DIFF")
    finally:
        await client.close()
    assert len(sleeps.delays) == 3


async def test_a_4xx_is_not_retried(j1: SimJupiterOne, client: JupiterOneClient, sleeps: Sleeps) -> None:
    with pytest.raises(J1Refused, match="SCOPE_REQUIRED") as caught:
        await client.create_job(scope="", sync_mode="DIFF")
    assert not caught.value.transient and caught.value.status == 400 and sleeps.delays == []
    assert len(j1.requests) == 1


async def test_a_wrong_api_key_is_refused(
    j1: SimJupiterOne, redis_server: RedisServer, j1_server: RunningJupiterOne
) -> None:
    client = JupiterOneClient(make_settings(redis_server, j1_server, j1_api_key="wrong"), sleep=Sleeps())
    try:
        with pytest.raises(J1Refused, match="401 UNAUTHORIZED"):
            await client.create_job(scope=SCOPE, sync_mode="DIFF")
    finally:
        await client.close()


async def test_uploading_to_a_finalized_job_is_job_not_awaiting_uploads(client: JupiterOneClient) -> None:
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    await client.finalize(job["id"])
    with pytest.raises(JobNotAwaitingUploads) as caught:
        await client.upload(job["id"], "entities", [user(1)])
    assert caught.value.code == "JOB_NOT_AWAITING_UPLOADS"


async def test_a_slow_finalize_is_polled_with_backoff(
    j1: SimJupiterOne, client: JupiterOneClient, sleeps: Sleeps
) -> None:
    j1.slow_finalize(4)
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    finished = await client.wait_finished(job["id"], await client.finalize(job["id"]))
    assert finished["status"] == "FINISHED"
    polls = [r for r in j1.requests if r.method == "GET"]
    assert len(polls) == 4
    assert sleeps.delays == sorted(sleeps.delays) and len(sleeps.delays) == 3  # none before the first poll


async def test_a_job_ending_otherwise_than_finished_fails(j1: SimJupiterOne, client: JupiterOneClient) -> None:
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    j1.abort_job(job["id"], "ERROR_BAD_DATA")
    with pytest.raises(J1JobFailed, match="ERROR_BAD_DATA"):
        await client.wait_finished(job["id"])


async def test_a_finalize_that_never_finishes_times_out(
    j1: SimJupiterOne, redis_server: RedisServer, j1_server: RunningJupiterOne
) -> None:
    j1.slow_finalize(1_000_000)
    settings = make_settings(redis_server, j1_server, j1_poll_interval=1.0, j1_finalize_timeout=5.0)
    client = JupiterOneClient(settings, sleep=Sleeps())
    try:
        job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
        with pytest.raises(J1JobFailed, match="still FINALIZE_PENDING"):
            await client.wait_finished(job["id"], await client.finalize(job["id"]))
    finally:
        await client.close()


async def test_a_body_over_a_mebibyte_on_the_wire_is_streamed(j1: SimJupiterOne, client: JupiterOneClient) -> None:
    noise = [orjson.dumps({**orjson.loads(user(n)), "blob": os.urandom(500_000).hex()}) for n in range(3)]
    job = await client.create_job(scope=SCOPE, sync_mode="DIFF")
    upload = await client.upload(job["id"], "entities", noise)
    assert upload.requests == 1 and upload.wire_bytes > 1 << 20
    assert len(j1.jobs[job["id"]].entities) == 3


# -- J1QL through queryV1 ------------------------------------------------------------------------


async def seed_scope(j1: SimJupiterOne, count: int) -> None:
    for n in range(count):
        j1.plant_entity(SCOPE, orjson.loads(user(n)))


async def test_a_query_follows_the_cursor_until_it_is_null(j1: SimJupiterOne, client: JupiterOneClient) -> None:
    await seed_scope(j1, 5)
    j1.query_page_size = 2

    pages = [page async for page in client.query(f"FIND * WITH _scope = '{SCOPE}'")]

    assert [page.type for page in pages] == ["list"] * 3 and client.stats.queries == 3
    keys = [row["entity"]["_key"] for page in pages for row in page.data]
    assert keys == [f"user-key-{n:06d}" for n in range(5)]
    posted = [r for r in j1.requests if r.path == "/graphql"]
    assert len(posted) == 3 and all(r.credentials for r in posted)


async def test_a_deferred_answer_is_fetched_without_our_credentials(
    j1: SimJupiterOne, client: JupiterOneClient
) -> None:
    await seed_scope(j1, 2)

    pages = [
        page
        async for page in client.query("FIND UNIQUE * WITH _scope ^= 'monitor/' AS e RETURN e._scope", deferred=True)
    ]

    assert [page.data for page in pages] == [[{"e._scope": SCOPE}]]
    fetched = [r for r in j1.requests if r.path.startswith("/query-results/")]
    assert len(fetched) == 2 and not any(r.credentials for r in fetched)  # the key never leaves for a result URL


async def test_a_graphql_error_is_raised_and_not_retried(j1: SimJupiterOne, client: JupiterOneClient) -> None:
    with pytest.raises(J1QueryError, match="does not answer this J1QL") as raised:
        [page async for page in client.query("FIND User")]
    assert raised.value.reason == "query" and not raised.value.transient
    assert len(j1.requests) == 1


async def test_answers_are_counted_as_they_travel_compressed(j1: SimJupiterOne, client: JupiterOneClient) -> None:
    await seed_scope(j1, 200)
    j1.query_page_size = 1_000

    [page] = [page async for page in client.query(f"FIND * WITH _scope = '{SCOPE}'")]

    answer = orjson.dumps({"data": {"queryV1": {"type": page.type, "data": page.data, "cursor": None}}})
    assert len(page.data) == 200 and client.stats.bytes_received == j1.requests[-1].answer_bytes
    assert client.stats.bytes_received < len(answer) / 3  # gzip on the wire, decompressed here


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (403, "forbidden"), (400, "refused")])
def test_refusals_name_their_reason(status: int, reason: str) -> None:
    assert J1Refused("x", status=status).reason == reason
    assert J1Unavailable("x", status=503).reason == "unavailable"
    assert J1JobFailed("x", code="ERROR_BAD_DATA").reason == "job_failed"


def test_job_errors_are_the_error_counters_above_zero() -> None:
    job = {"status": "FINISHED", "numRelationshipCreateErrors": 2, "numEntityCreateErrors": 0, "numEntitiesCreated": 5}
    assert job_errors(job) == {"numRelationshipCreateErrors": 2}
    assert job_errors({"status": "FINISHED"}) == {}
