"""`python -m bench [NAME ...] [--scale S]`: run benchmarks and rewrite their BENCHMARKS.md sections."""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.common import write_section

BENCHMARKS = ("directory", "effective", "realtime", "jupiterone", "intune")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="which benchmarks (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="tenant size as a fraction of the full benchmark")
    parser.add_argument("--dry-run", action="store_true", help="print the sections instead of writing them")
    args = parser.parse_args(argv)
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", file=sys.stderr, flush=True)
        section: str = module.run(args.scale)
        if args.dry_run:
            print(section)
        else:
            write_section(name, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
