"""A private `redis-server` process for the test suite and the benchmarks.

Started on a free port with its own data directory and no persistence, so nothing ever touches a
Redis that someone else runs; stopped when done.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

START_TIMEOUT = 15.0
CLUSTER_SLOTS = 16_384


class RedisServerMissing(RuntimeError):
    """No `redis-server` executable on PATH."""


@dataclass(frozen=True)
class RedisProcess:
    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def restarted(self) -> RedisProcess:
        """The same server started again (same port, directory and arguments) after `stop()`; with
        persistence among the arguments (`--appendonly yes`) it comes back with its data."""
        return start_redis_server(self.data_dir, *self.args, port=self.port)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# A cluster node also listens on its port + 10,000 (the cluster bus), so Redis refuses a port above
# 55,535 ("Redis port number too high"). The kernel's ephemeral ports go up to 60,999 and successive
# picks are close together, so a node's port is drawn below that, with its bus port free as well.
CLUSTER_BUS_OFFSET = 10_000
HIGHEST_CLUSTER_PORT = 65_535 - CLUSTER_BUS_OFFSET


def free_cluster_port() -> int:
    """A free loopback port for a cluster node whose bus port (port + 10,000) is free too."""
    for _ in range(100):
        port = free_port()
        if port > HIGHEST_CLUSTER_PORT:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for a Redis Cluster node and its bus port")


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(data_dir: Path, *extra_args: str, port: int | None = None) -> RedisProcess:
    """Start `redis-server` on `port` (by default a free loopback port); raises if it is missing or
    will not start. `extra_args` come last, so they override the defaults (e.g. `--appendonly yes`)."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisServerMissing("redis-server is not installed (./dev test and ./dev bench install it)")
    for _ in range(1 if port is not None else 5):  # a free port may be taken before we bind it: try another
        chosen = port or (free_cluster_port() if "--cluster-enabled" in extra_args else free_port())
        process = subprocess.Popen(
            [
                executable,
                *("--bind", "127.0.0.1", "--port", str(chosen), "--dir", str(data_dir)),
                *("--save", "", "--appendonly", "no", "--logfile", str(data_dir / "redis.log")),
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping("127.0.0.1", chosen):
                return RedisProcess("127.0.0.1", chosen, data_dir, process, extra_args)
            time.sleep(0.05)
        process.kill()
        process.wait()
    raise RuntimeError(f"redis-server did not start; see {data_dir / 'redis.log'}")


@dataclass(frozen=True)
class RedisClusterProcesses:
    """A Redis Cluster of private `redis-server` processes (masters only, slots split evenly)."""

    nodes: tuple[RedisProcess, ...]

    @property
    def url(self) -> str:
        """monitor's URL for it: any node is a seed; the client discovers the others."""
        first = self.nodes[0]
        return f"redis+cluster://{first.host}:{first.port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restarted(self) -> RedisClusterProcesses:
        """Every node started again after `stop()` (each keeps its `nodes.conf`, so the cluster
        re-forms as it was), once the cluster reports itself healthy."""
        nodes: list[RedisProcess] = []
        with _stopped_on_failure(nodes):
            for node in self.nodes:
                nodes.append(node.restarted())
            _wait_for_cluster(nodes)
        return RedisClusterProcesses(tuple(nodes))


def start_redis_cluster(data_dir: Path, masters: int = 3, *, extra_args: tuple[str, ...] = ()) -> RedisClusterProcesses:
    """Start `masters` cluster-enabled servers, give each a share of the 16,384 slots, join them,
    and wait until every node reports the cluster healthy."""
    nodes: list[RedisProcess] = []
    with _stopped_on_failure(nodes):
        for n in range(masters):
            node_dir = data_dir / f"node-{n}"
            node_dir.mkdir(parents=True, exist_ok=True)
            cluster_args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", *extra_args)
            nodes.append(start_redis_server(node_dir, *cluster_args))
        clients: list[Any] = [redis.Redis(host=node.host, port=node.port) for node in nodes]
        share = CLUSTER_SLOTS // masters
        for n, client in enumerate(clients):
            last = CLUSTER_SLOTS - 1 if n == masters - 1 else (n + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * share, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", nodes[0].host, nodes[0].port)
        for client in clients:
            client.close()
        _wait_for_cluster(nodes)
    return RedisClusterProcesses(tuple(nodes))


@contextmanager
def _stopped_on_failure(nodes: list[RedisProcess]) -> Iterator[None]:
    """Stop the nodes started so far if the block fails."""
    try:
        yield
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _wait_for_cluster(nodes: list[RedisProcess]) -> None:
    clients: list[Any] = [redis.Redis(host=node.host, port=node.port) for node in nodes]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_cluster_ok(client, len(nodes)) for client in clients):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster did not form; see the logs under {nodes[0].data_dir.parent}")
            time.sleep(0.1)
    finally:
        for client in clients:
            client.close()


def _cluster_ok(client: Any, masters: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(masters)
