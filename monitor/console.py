"""Terminal output: a live progress line while rounds run, and the summaries commands print."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from monitor.rounds import RoundResult


def number(value: float) -> str:
    return f"{value:,.0f}"


class ProgressLine:
    """Rewrites one line on a terminal (stderr) at most 10 times a second; silent elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, result: RoundResult) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        line = (
            f"  {result.source:<8} {result.kind}: page {number(result.pages)}, "
            f"{number(result.objects)} objects, {number(result.change_count)} changes"
        )
        self.stream.write("\r" + line[:119].ljust(119))
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 119 + "\r")
            self.stream.flush()


def round_summary(result: RoundResult) -> str:
    kinds = ", ".join(f"{name} {number(count)}" for name, count in sorted(result.changes.items()))
    parts = [
        f"{result.source:<8}",
        f"{result.kind:<5}",
        f"{number(result.pages):>6} pages",
        f"{number(result.objects):>9} objects",
        f"{number(result.change_count):>9} changes",
        f"{number(result.requests):>5} requests",
        f"{result.duration:7.2f}s",
    ]
    text = "  ".join(parts)
    if result.resyncs:
        text += f"  (resynced {result.resyncs}x)"
    if result.deleted_by_absence:
        text += f"  ({number(result.deleted_by_absence)} deleted as absent)"
    return text + (f"\n{'':10}{kinds}" if kinds else "")


def sync_summary(tenant: str, results: Sequence[RoundResult], failures: Sequence[str], stats: dict[str, float]) -> str:
    lines = [f"tenant {tenant}"]
    lines += [f"  {round_summary(r)}" for r in results]
    lines += [f"  FAILED {failure}" for failure in failures]
    lines.append(
        f"  Graph: {number(stats.get('requests', 0))} requests, {number(stats.get('retries', 0))} retries, "
        f"{number(stats.get('throttled', 0))} throttled, {stats.get('waited', 0):.1f}s waited"
    )
    return "\n".join(lines)
