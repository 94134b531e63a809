"""Train the zstd dictionary of the mirror's values (`monitor/mirror.zdict`, `monitor.mirror_codec`).

It syncs a simulated tenant (users, groups, memberships and an Intune estate, as the benchmarks do)
into a private Redis, takes a sample of every mirrored object as it is compressed (canonical JSON with
the key's UUIDs replaced by tokens), and trains a 32 KiB dictionary on it:

    python -m scripts.mirror_dictionary --out /tmp/mirror.zdict

The dictionary shipped in the package must never change: values written with it say so by their
format byte. A better dictionary is added beside it under a new format byte, and the old one kept
for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis
import zstandard

from bench.common import TENANT, environment
from monitor import mirror_codec
from monitor.store import TenantStore, canonical

SIZE = 32 * 1024
SAMPLES = 30_000
SIMULATED = [
    *("--users", "10000", "--groups", "1000", "--memberships", "100000"),
    *("--intune-devices", "10000", "--intune-detected-titles", "150", "--intune-apps-per-device", "10"),
]


async def _samples(url: str) -> list[bytes | bytearray | memoryview]:
    client = aioredis.Redis.from_url(url)
    try:
        dump = await TenantStore(client, TENANT).mirror_dump()
    finally:
        await client.aclose()
    bodies: list[bytes | bytearray | memoryview] = [
        mirror_codec.tokenized(key, canonical(obj)) for (_, key), obj in dump.items()
    ]
    return random.Random(1).sample(bodies, min(SAMPLES, len(bodies)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.mirror_dictionary", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with environment(SIMULATED) as env:
        sync = [sys.executable, "-m", "monitor", "sync", "--intune"]
        subprocess.run(sync, env=env.monitor_env(), check=True, capture_output=True)
        samples = asyncio.run(_samples(env.redis.url))
    dictionary = zstandard.train_dictionary(SIZE, samples, level=mirror_codec.LEVEL)
    args.out.write_bytes(dictionary.as_bytes())
    print(f"{args.out}: {len(dictionary.as_bytes())} bytes from {len(samples)} objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
