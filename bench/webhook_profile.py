"""`python -m bench.webhook_profile [--runs N] [--py-spy FILE]`: the webhook half of the real-time
benchmark (`bench/realtime.py`), without writing BENCHMARKS.md: each run's p50/p99 for `monitor web`
and the bare handler and their ratio, and optionally a py-spy profile of `monitor web` under the load
(`pip install py-spy`; FILE gets py-spy's "raw" collapsed stacks, one run only;
it records the first 22 s: start-up and most of the load)."""

from __future__ import annotations

import argparse
import asyncio

from bench.realtime import _receiver


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_profile", description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--py-spy", metavar="FILE", help="record `monitor web` with py-spy into FILE")
    args = parser.parse_args()
    wrap = ["py-spy", "record", "-r", "200", "-d", "22", "-f", "raw", "-o", args.py_spy, "--"] if args.py_spy else None
    for run in range(args.runs):
        ours, bare = asyncio.run(_receiver(wrap))
        print(
            f"run {run + 1}: accepted {ours.rate:,.0f}/s vs {bare.rate:,.0f}/s; "
            f"p50 {ours.percentile(0.5):.1f} vs {bare.percentile(0.5):.1f} ms; "
            f"p99 {ours.percentile(0.99):.1f} vs {bare.percentile(0.99):.1f} ms "
            f"(ratio {ours.percentile(0.99) / bare.percentile(0.99):.1f}x); "
            f"CPU per request {ours.cpu_per_request_ms:.3f} vs {bare.cpu_per_request_ms:.3f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
