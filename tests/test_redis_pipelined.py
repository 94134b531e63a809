"""`monitor.redis_conn.Pipelined`: batches written on a connection of their own without waiting for
the replies to earlier ones, each batch given its own replies, and every failure reaching the batches
it concerns (on a real redis-server; the webhook's hint writes go through it)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.redis_conn import Pipelined, connect
from monitor.simulator.redis_process import start_redis_server
from tests.conftest import RedisServer


@pytest.fixture
async def link(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[Pipelined]:
    client = await connect(redis_server.url)
    if not Pipelined.available(client):
        await client.aclose()
        pytest.skip("Pipelined is for one server; a cluster client writes through its pipeline")
    pipelined = Pipelined(client)
    yield pipelined
    await pipelined.aclose()
    await client.aclose()


async def clients(redis: aioredis.Redis) -> list[dict[str, str]]:
    """CLIENT LIST, one dict per connection (https://redis.io/docs/latest/commands/client-list/)."""
    listing: bytes = await redis.execute_command("CLIENT", "LIST")  # type: ignore[no-untyped-call]
    return [dict(field.split("=", 1) for field in line.split()) for line in listing.decode().splitlines()]


async def test_concurrent_batches_get_their_own_replies_on_one_connection(
    link: Pipelined, redis: aioredis.Redis
) -> None:
    before = len(await clients(redis))
    replies = await asyncio.gather(*(link.execute([("INCRBY", f"n{i}", i), ("GET", f"n{i}")]) for i in range(200)))
    assert replies == [[i, str(i).encode()] for i in range(200)]
    assert len(await clients(redis)) == before + 1  # 200 batches in flight, one connection


async def test_a_batch_is_written_while_an_earlier_one_waits_for_its_reply(
    link: Pipelined, redis: aioredis.Redis
) -> None:
    blocked = asyncio.create_task(link.execute([("BLPOP", "list", 0)]))  # no reply until the list has an item
    await _until(lambda: _blocked_clients(redis), 1)
    after = asyncio.create_task(link.execute([("INCR", "counter")]))
    # Redis holds the second batch in the blocked connection's query buffer: it was sent without
    # waiting for the first one's reply (qbuf: the bytes of "*2 $4 INCR $7 counter").
    pending = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n"
    await _until(lambda: _blocked_query_buffer(redis), len(pending))
    assert not after.done()
    await redis.rpush("list", "item")
    assert await blocked == [[b"list", b"item"]]
    assert await after == [1]


async def test_an_error_reply_fails_its_batch_only(link: Pipelined, redis: aioredis.Redis) -> None:
    await redis.set("text", "not a hash")
    wrong: object
    right: object
    wrong, right = await asyncio.gather(
        link.execute([("INCR", "counter"), ("HINCRBY", "text", "field", 1)]),
        link.execute([("INCR", "counter")]),
        return_exceptions=True,
    )
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    assert right == [2]  # the failed batch's other command ran: a batch is not a transaction
    assert await link.execute([("INCR", "counter")]) == [3]  # the connection goes on


async def test_a_lost_connection_fails_the_waiting_batches_and_the_next_one_connects_again(
    link: Pipelined, redis: aioredis.Redis
) -> None:
    waiting = asyncio.create_task(link.execute([("BLPOP", "list", 0)]))
    await _until(lambda: _blocked_clients(redis), 1)
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await link.execute([("INCR", "counter")]) == [1]


async def test_a_batch_without_a_reply_in_time_fails_and_the_connection_is_dropped(
    redis_server: RedisServer, link: Pipelined, redis: aioredis.Redis
) -> None:
    impatient = Pipelined(link.client, timeout=0.2)
    try:
        waiting = asyncio.create_task(impatient.execute([("BLPOP", "list", 0)]))
        follower = asyncio.create_task(impatient.execute([("INCR", "counter")]))
        with pytest.raises(RedisTimeoutError):
            await waiting
        with pytest.raises(RedisTimeoutError):  # sent behind it, on the same connection
            await follower
        assert await _blocked_clients(redis) == 0  # the connection was closed, not left blocked
        assert await impatient.execute([("INCR", "counter")]) == [1]  # a new one
    finally:
        await impatient.aclose()


async def _blocked_clients(redis: aioredis.Redis) -> int:
    return sum(1 for c in await clients(redis) if "b" in c["flags"])


async def _blocked_query_buffer(redis: aioredis.Redis) -> int:
    return sum(int(c["qbuf"]) for c in await clients(redis) if "b" in c["flags"])


async def _until(measure: Callable[[], Awaitable[int]], expected: int) -> None:
    """Poll `measure` until it returns `expected`; fail after 10 s."""
    for _ in range(1000):
        if await measure() == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {expected}")


async def test_a_unix_socket_url_connects_and_pipelines(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    server = start_redis_server(tmp_path, "--unixsocket", str(socket), "--unixsocketperm", "700")
    try:
        client = await connect(f"unix://{socket}")
        pipelined = Pipelined(client)
        try:
            assert Pipelined.available(client)
            assert await asyncio.gather(*(pipelined.execute([("INCR", "n")]) for _ in range(3))) == [[1], [2], [3]]
        finally:
            await pipelined.aclose()
            await client.aclose()
    finally:
        server.stop()


async def test_batches_share_one_attempt_to_connect_and_a_server_that_never_answers_fails_it(
    tmp_path: Path,
) -> None:
    server = start_redis_server(tmp_path)
    client = await connect(server.url)
    impatient = Pipelined(client, timeout=0.2)
    try:
        before = await _connections_received(client)
        server.process.send_signal(signal.SIGSTOP)  # its port still accepts; nothing answers
        try:
            failures = await asyncio.gather(
                *(impatient.execute([("INCR", "counter")]) for _ in range(5)), return_exceptions=True
            )
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert all(isinstance(f, RedisTimeoutError) for f in failures), failures
        assert await _connections_received(client) == before + 1  # one attempt for the five batches
        assert await impatient.execute([("INCR", "counter")]) == [1]
    finally:
        await impatient.aclose()
        await client.aclose()
        server.stop()


async def _connections_received(client: aioredis.Redis) -> int:
    stats = await client.info("stats")
    return int(stats["total_connections_received"])


async def test_a_connection_idle_for_longer_than_the_clients_health_check_interval_is_made_anew(
    tmp_path: Path,
) -> None:
    server = start_redis_server(tmp_path)
    client = aioredis.Redis.from_url(server.url, health_check_interval=0.05)
    checked = Pipelined(client)
    try:
        before = await _connections_received(client)
        assert await checked.execute([("INCR", "counter")]) == [1]
        assert await checked.execute([("INCR", "counter")]) == [2]  # used again at once: the same one
        await asyncio.sleep(0.1)
        assert await checked.execute([("INCR", "counter")]) == [3]
        assert await _connections_received(client) == before + 2
    finally:
        await checked.aclose()
        await client.aclose()
        server.stop()


async def test_a_batch_that_comes_as_the_connection_opens_shares_it_with_the_batches_that_waited(
    link: Pipelined, redis: aioredis.Redis
) -> None:
    """The turns between a connection being made and the batches that waited for it being sent: a
    batch arriving then finds a connection on which nothing was sent yet, which is new, not idle."""
    before = await _connections_received(redis)
    waited = [asyncio.create_task(link.execute([("INCR", "counter")])) for _ in range(3)]
    await _until_connected(link)  # the batches that waited for it are not sent yet
    arrived = asyncio.create_task(link.execute([("INCR", "counter")]))
    replies = await asyncio.gather(*waited, arrived)
    assert sorted(replies) == [[1], [2], [3], [4]]
    assert await _connections_received(redis) == before + 1
    assert await link.execute([("INCR", "counter")]) == [5]  # the replies still match their batches


async def test_batches_that_waited_for_a_connection_given_up_before_their_turn_fail_at_once(
    link: Pipelined, redis: aioredis.Redis
) -> None:
    waited = [asyncio.create_task(link.execute([("INCR", "counter")])) for _ in range(3)]
    await _until_connected(link)
    link._fail(link._connection, RedisConnectionError("lost"))  # as the reader does on a lost connection
    arrived = asyncio.create_task(link.execute([("INCR", "counter")]))  # connects anew
    outcomes = await asyncio.gather(*waited, return_exceptions=True)
    # Failed as their connection did, not sent on it to wait for replies that never come (or that
    # a new connection's reader would hand them).
    assert all(type(o) is RedisConnectionError for o in outcomes), outcomes
    assert await arrived == [1]
    assert await link.execute([("INCR", "counter")]) == [2]


async def _until_connected(link: Pipelined) -> None:
    """Return in the turn the connection is made, before the batches waiting for it resume."""
    for _ in range(100_000):
        if link._connection is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError("never connected")
