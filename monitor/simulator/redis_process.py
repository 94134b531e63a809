"""A private `redis-server` process for the test suite and the benchmarks.

Started on a free port with its own data directory and no persistence, so nothing ever touches a
Redis that someone else runs; stopped when done.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 15.0


class RedisServerMissing(RuntimeError):
    """No `redis-server` executable on PATH."""


@dataclass(frozen=True)
class RedisProcess:
    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

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


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(data_dir: Path, *extra_args: str) -> RedisProcess:
    """Start `redis-server` on a free loopback port; raises if it is missing or will not start."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisServerMissing("redis-server is not installed (./dev test and ./dev bench install it)")
    for _ in range(5):  # the free port may be taken between probing and binding: try another
        port = free_port()
        process = subprocess.Popen(
            [
                executable,
                *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)),
                *("--save", "", "--appendonly", "no", "--logfile", str(data_dir / "redis.log")),
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping("127.0.0.1", port):
                return RedisProcess("127.0.0.1", port, data_dir, process)
            time.sleep(0.05)
        process.kill()
        process.wait()
    raise RuntimeError(f"redis-server did not start; see {data_dir / 'redis.log'}")
