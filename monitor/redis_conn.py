"""Connecting to Redis: a server (`redis://`, `rediss://`, `unix://`) or the embedded engine (`memory://`).

The embedded engine is an in-process Redis (fakeredis, with Lua) for `monitor demo` and one-off
trials: state lives in memory and is gone when the process exits. Every process component built
with the same `memory://` URL shares one engine, so `monitor serve` behaves as with a server.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
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
