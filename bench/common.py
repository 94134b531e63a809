"""Shared benchmark plumbing: the simulated tenant and Redis in their own processes, monitor runs
as a child process (so its peak memory is its own), and BENCHMARKS.md updated section by section.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from monitor.keys import TenantKeys
from monitor.simulator.redis_process import RedisProcess, start_redis_server

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
TENANT = "8b3b2c2e-6a4e-4f4c-9d8e-2a1f7f6c5b10"
CLIENT = "5a7e9f31-2c4b-4e8d-a1f0-3b6c9d2e4f70"
SECRET = "bench-secret-value"


@dataclass(frozen=True)
class Environment:
    sim_url: str
    ca_bundle: str
    redis: RedisProcess
    workdir: Path
    simulator_pid: int = 0

    def service_cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the simulated services and by Redis: what a run costs the
        machine besides monitor's own process (they share its CPUs here; in production they are
        Microsoft's and the Redis host's)."""
        return cpu_seconds(self.simulator_pid), cpu_seconds(self.redis.process.pid)

    def monitor_env(self, **extra: str) -> dict[str, str]:
        """The environment a `monitor` child process runs with against this setup."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        return {
            **base,
            "MONITOR_REDIS_URL": self.redis.url,
            "MONITOR_GRAPH_URL": self.sim_url,
            "MONITOR_AUTHORITY_URL": self.sim_url,
            "MONITOR_CA_BUNDLE": self.ca_bundle,
            "MONITOR_CLIENT_ID": CLIENT,
            "MONITOR_CLIENT_SECRET": SECRET,
            "MONITOR_TENANT_ID": TENANT,
            "MONITOR_LOG_LEVEL": "WARNING",
            **extra,
        }


@contextlib.contextmanager
def environment(simulator_args: Sequence[str]) -> Iterator[Environment]:
    """A seeded simulator process and a private redis-server, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as folder:
        workdir = Path(folder)
        ready = workdir / "ready.json"
        command = [
            sys.executable,
            "-m",
            "monitor.simulator",
            *("--tenant-id", TENANT, "--client-id", CLIENT, "--client-secret", SECRET),
            *("--ready-file", str(ready)),
            *simulator_args,
        ]
        simulator = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        redis = start_redis_server(workdir)
        try:
            info = _wait_ready(ready, simulator)
            yield Environment(info["url"], info["ca_bundle"], redis, workdir, simulator.pid)
        finally:
            redis.stop()
            simulator.terminate()
            simulator.wait(30)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, from /proc (Linux); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime fields 14 and 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(ready: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    while not ready.exists() or not ready.read_text().strip():
        if process.poll() is not None:
            raise RuntimeError("the simulator exited before it was ready")
        time.sleep(0.1)
    info: dict[str, Any] = json.loads(ready.read_text())
    return info


@dataclass(frozen=True)
class ChildRun:
    wall: float
    peak_rss_mb: float
    cpu: float
    stdout: str
    stderr: str


def run_child(args: Sequence[str], env: dict[str, str]) -> ChildRun:
    """Run `python -m monitor ARGS`: wall time, peak RSS and CPU time of that process alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "monitor", *args], env=env, stdout=out, stderr=err)
        # wait4 reaps exactly this child and returns its own resource use (peak RSS in KiB).
        _, status_code, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status_code)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"monitor {' '.join(args)} failed ({process.returncode}): {stderr[-2000:]}")
    return ChildRun(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stdout, stderr)


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process (a server) for the block, terminated afterwards."""
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


async def wait_http(url: str, *, accept: tuple[int, ...] = (200,), **kwargs: Any) -> None:
    """Wait until `url` answers with one of `accept` (a server just started)."""
    import asyncio

    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(url, **kwargs) as response:
                    if response.status in accept:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def status(env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "monitor", "status", "--json"], env=env, capture_output=True, check=True
    )
    shown: dict[str, Any] = json.loads(run.stdout)
    first: dict[str, Any] = shown["tenants"][0]
    return first


def machine() -> str:
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)
    redis_version = version.stdout.split()[2]
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"Redis {redis_version.removeprefix('v=')}, {datetime.now(UTC):%Y-%m-%d}"
    )


def command_line() -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section `name` of BENCHMARKS.md, keeping the others."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


HEADER = """# Benchmarks

Measured on this project's machines with the commands given in each section (`./dev bench` runs
them all). The simulated Microsoft 365 tenant and Redis run in their own processes; monitor runs
as a child process, so its peak memory is its own. Machines are shared and noisy: compare the
ratios measured within one run rather than absolute times across runs.
"""


def number(value: float) -> str:
    return f"{value:,.0f}"


@dataclass
class RedisMemory:
    """Redis `used_memory`, how much of it is the tenant's change log, its mirror hashes and the Intune
    sweep's unit records (MEMORY USAGE of the keys), and how many objects the mirror holds."""

    total_mb: float
    changelog_mb: float
    mirror_mb: float = 0.0
    units_mb: float = 0.0
    objects: int = 0

    def per_object(self) -> float:
        """Bytes of Redis per mirrored object, the change log left out (it is counted per record)."""
        return (self.total_mb - self.changelog_mb) * 2**20 / max(1, self.objects)

    def line(self) -> str:
        return (
            f"{self.total_mb:.0f} MB, of which the change log {self.changelog_mb:.0f} MB; {number(self.objects)} "
            f"mirrored objects: {self.per_object():.0f} bytes each with everything but the log "
            f"(the mirror's hashes {self.mirror_mb * 2**20 / max(1, self.objects):.0f} bytes, the sweep's "
            f"unit records {self.units_mb * 2**20 / max(1, self.objects):.0f})"
        )


async def redis_memory(env: Environment) -> RedisMemory:
    client = aioredis.Redis.from_url(env.redis.url)
    keys = TenantKeys(TENANT)
    try:
        info = await client.info("memory")
        changelog = await client.memory_usage(keys.changes, samples=0)
        mirror, objects = await _usage(client, f"{keys.base}:mirror:*", count=True)
        units, _ = await _usage(client, f"{keys.base}:units*")
        return RedisMemory(
            float(info["used_memory"]) / 2**20, float(changelog or 0) / 2**20, mirror / 2**20, units / 2**20, objects
        )
    finally:
        await client.aclose()


async def _usage(client: aioredis.Redis, pattern: str, *, count: bool = False) -> tuple[float, int]:
    """MEMORY USAGE summed over the keys matching `pattern`, and their fields (hashes) with `count`."""
    found = [key async for key in client.scan_iter(match=pattern, count=1000)]
    total, fields = 0.0, 0
    for start in range(0, len(found), 500):
        pipe: Any = client.pipeline(transaction=False)
        for key in found[start : start + 500]:
            pipe.memory_usage(key, samples=0)
            if count:
                pipe.hlen(key)
        answers = await pipe.execute()
        step = 2 if count else 1
        total += sum(float(a or 0) for a in answers[::step])
        fields += sum(int(a) for a in answers[1::2]) if count else 0
    return total, fields
