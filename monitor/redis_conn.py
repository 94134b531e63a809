"""Connecting to Redis: a server (`redis://`, `rediss://`, `unix://`) or the embedded engine (`memory://`).

The embedded engine is an in-process Redis (fakeredis, with Lua) for `monitor demo` and one-off
trials: state lives in memory and is gone when the process exits. Every process component built
with the same `memory://` URL shares one engine, so `monitor serve` behaves as with a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.connection import UnixDomainSocketConnection as AsyncUnixConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.errors import RedisUnavailable

log = logging.getLogger(__name__)

Redis = aioredis.Redis

# What a Redis client raises when the server cannot be used: redis-py's own errors, its cluster
# client's (RedisClusterException, not a RedisError, when no node answers), and the socket errors
# that surface as they are. Callers that wait for Redis to come back catch exactly these.
REDIS_UNAVAILABLE = (RedisError, RedisClusterException, OSError)

_memory_servers: dict[str, Any] = {}


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


def is_memory(url: str) -> bool:
    return url.startswith("memory://")


def is_cluster(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def client_for(url: str) -> Redis:
    """A client for `url` (no I/O yet). Use `connect`: a cluster client must learn the cluster's
    layout once before it is used concurrently (concurrent first commands race in redis-py)."""
    if is_memory(url):
        import fakeredis

        server = _memory_servers.setdefault(url, fakeredis.FakeServer())
        client: Redis = fakeredis.FakeAsyncRedis(server=server)
        return client
    if is_cluster(url):
        # The cluster client speaks the same commands; every key of a tenant shares one hash tag,
        # so each script, transaction and multi-key command stays in one slot (monitor.keys).
        seed = url.replace("+cluster://", "://", 1)
        cluster = RedisCluster.from_url(seed, socket_connect_timeout=5, socket_keepalive=True)
        return cast(Redis, cluster)
    if url.startswith("unix://"):  # TCP keepalive is for TCP: redis-py's unix socket connection refuses it
        return aioredis.Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5)
    return aioredis.Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5, socket_keepalive=True)


async def connect(url: str) -> Redis:
    """A client that has answered PING; `RedisUnavailable` with a one-line reason otherwise."""
    client = client_for(url)
    try:
        await client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await client.aclose()
        raise RedisUnavailable(f"cannot reach Redis at {redact(url)}: {exc}") from None
    except RedisClusterException as exc:  # not a RedisError: no seed answered, or not a cluster
        await client.aclose()
        raise RedisUnavailable(f"cannot use the Redis Cluster at {redact(url)}: {exc}") from None
    except RedisError as exc:
        await client.aclose()
        raise RedisUnavailable(f"Redis at {redact(url)} refused us: {exc}") from None
    return client


# -- a connection of its own, pipelined -----------------------------------------------------------

# How long a pipelined batch may wait for its replies before its connection is given up (the
# timeout the pool's connections have by default, redis-py's `socket_timeout`).
PIPELINE_TIMEOUT = 5.0


class Pipelined:
    """One connection of its own to the server behind `client`, on which each batch of commands is
    written the moment it is ready, without waiting for the replies to the batches before it
    (pipelining: https://redis.io/docs/latest/develop/use/pipelining/). Redis answers the commands
    of a connection in the order they arrive, so the replies are matched to their batches in order.

    For a path that writes all the time (the webhook's hints): no pool checkout per batch, and a
    batch never waits for another batch's round trip. The connection is made with the client's
    settings (address, TLS, credentials, database) by redis-py itself, on first use, again after a
    failure, and again after it was left idle for longer than the client's pool lets a connection go
    unchecked (`health_check_interval`). A batch fails with the connection (a connection error, or no reply within
    `timeout` seconds: the connection is then dropped), or with its first error reply.

    Only for a server (`redis://`, `rediss://`, `unix://`): `available` says whether `client` is one.
    """

    def __init__(self, client: Redis, *, timeout: float = PIPELINE_TIMEOUT) -> None:
        self.client = client
        self.timeout = timeout
        self._connection: Any = None
        self._opening: asyncio.Task[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        # The batches sent and not yet answered, oldest first (the order of their replies).
        self._waiting: deque[_Batch] = deque()
        self._deadline: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()  # connections given up, being closed
        self._last_sent = 0.0
        checked_after = client.connection_pool.connection_kwargs.get("health_check_interval")
        self._idle_limit = float(checked_after) if checked_after else math.inf

    @staticmethod
    def available(client: Any) -> bool:
        """Whether `client` talks to one server through redis-py's own connections."""
        pool = getattr(client, "connection_pool", None)
        return type(client) is aioredis.Redis and pool is not None and pool.connection_class in _SERVER_CONNECTIONS

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send `commands` now (after the batches sent before them) and return their replies."""
        connection = self._connection
        now = time.monotonic()
        if connection is not None and not connection.is_connected:  # closed by redis-py, reader not yet told
            self._fail(connection, RedisConnectionError("the connection to Redis was closed"))
            connection = None
        elif connection is not None and not self._waiting and now - self._last_sent > self._idle_limit:
            # Idle for longer than the client's pool lets a connection go unchecked (its
            # `health_check_interval`): a new connection rather than one a proxy may have dropped.
            self._fail(connection, RedisConnectionError("the connection was idle"))
            connection = None
        if connection is None:
            connection = await self._connect()
            if connection is not self._connection:  # given up in the turns before this batch's
                raise RedisConnectionError("the connection to Redis was closed")
        packed = _pack(commands)
        batch = _Batch(len(commands), asyncio.get_running_loop().create_future(), time.monotonic())
        # No await between queueing the batch and writing it: the order of `_waiting` is the order
        # of the bytes on the connection (redis-py writes at once; it waits only to drain a full buffer),
        # and `_waiting` holds only the batches of the connection in use (`_fail` empties it).
        self._waiting.append(batch)
        try:
            await connection.send_packed_command(packed, check_health=False)
        except BaseException as exc:
            self._fail(connection, exc)
            raise
        self._last_sent = batch.sent_at
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.timeout, self._check_deadline)
        replies: list[Any] = await batch.future
        return replies

    async def aclose(self) -> None:
        opening = self._opening
        if opening is not None:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        connection = self._connection
        if connection is not None:
            self._fail(connection, RedisConnectionError("the connection was closed"))
            await connection.disconnect(nowait=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connect(self) -> Any:
        """The connection, made now. Batches that need one meanwhile share the attempt, and its
        failure: none waits for another's attempt to fail before making its own."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    async def _open(self) -> Any:
        pool = self.client.connection_pool
        # No read timeout of redis-py's: the reader waits for replies as long as there are none to
        # wait for; `_check_deadline` bounds the wait of a batch sent.
        settings = {**pool.connection_kwargs, "socket_timeout": None, "health_check_interval": 0}
        connection = pool.connection_class(**settings)
        try:
            # Bounded as a batch's wait is: a server that accepts and never answers the handshake.
            async with asyncio.timeout(self.timeout):
                await connection.connect()  # type: ignore[no-untyped-call]
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise RedisTimeoutError(f"no answer from Redis within {self.timeout:g}s of connecting") from None
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        self._connection = connection
        # New, not idle: batches that come before the ones that waited for it are sent must use it.
        self._last_sent = time.monotonic()
        self._reader = asyncio.create_task(self._read(connection), name="redis pipelined replies")
        return connection

    def _opened(self, attempt: asyncio.Task[Any]) -> None:
        self._opening = None
        if not attempt.cancelled():
            attempt.exception()  # raised to every batch that waited for it

    async def _read(self, connection: Any) -> None:
        """Match every reply to its batch, in order, until the connection fails or is dropped."""
        waiting = self._waiting
        while self._connection is connection:
            try:
                reply = await connection.read_response()
            except ResponseError as exc:  # an error reply: the batch fails with its first one
                reply = exc
            except BaseException as exc:
                self._fail(connection, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not waiting:  # a reply nobody asked for: the replies no longer match the batches
                self._fail(connection, RedisConnectionError("an unexpected reply from Redis"))
                return
            batch = waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                waiting.popleft()
                if not batch.future.done():
                    error = next((r for r in batch.replies if isinstance(r, ResponseError)), None)
                    if error is None:
                        batch.future.set_result(batch.replies)
                    else:
                        batch.future.set_exception(error)

    def _check_deadline(self) -> None:
        """Drop the connection if its oldest batch has waited `timeout` for its replies; otherwise
        look again when that batch's time is up (one timer for the connection, not one per batch)."""
        self._deadline = None
        if not self._waiting or self._connection is None:
            return
        late = self._waiting[0].sent_at + self.timeout - time.monotonic()
        if late <= 0:
            self._fail(self._connection, RedisTimeoutError(f"no reply from Redis within {self.timeout:g}s"))
        else:
            self._deadline = asyncio.get_running_loop().call_later(late, self._check_deadline)

    def _fail(self, connection: Any, exc: BaseException) -> None:
        """Give up `connection`: every batch still waiting fails with `exc` (a connection error for a
        cancellation), and the next batch connects again."""
        if self._connection is not connection:
            return
        self._connection = None
        if not isinstance(exc, Exception):
            exc = RedisConnectionError("the connection to Redis was closed")
        while self._waiting:
            batch = self._waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(exc)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        # Closed at once (the reader, if waiting, then fails and stops); no wait for the server.
        closing = asyncio.get_running_loop().create_task(connection.disconnect(nowait=True))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)


def _pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """`commands` in the Redis protocol (RESP arrays of bulk strings:
    https://redis.io/docs/latest/develop/reference/protocol-spec/#sending-commands-to-a-redis-server).
    Arguments are bytes, text (UTF-8) or integers."""
    parts = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for argument in command:
            data = argument if isinstance(argument, bytes) else str(argument).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(slots=True)
class _Batch:
    expected: int
    future: asyncio.Future[list[Any]]
    sent_at: float
    replies: list[Any] = field(default_factory=list)


_SERVER_CONNECTIONS = (AsyncConnection, AsyncSSLConnection, AsyncUnixConnection)
