"""The cyclic garbage collector during rounds and sweeps.

A round or sweep allocates millions of short-lived containers (Graph pages, mapped objects, change
records), nearly all freed by reference counting as soon as their page is committed. With Python's
default thresholds (700, 10, 10) the cyclic collector still runs every few hundred allocations and
regularly walks every live object: measured on the Intune sweep benchmark, about a quarter of a
first sweep's CPU time. While any round runs in the process, the thresholds are raised; they are
restored when the last one ends (https://docs.python.org/3/library/gc.html#gc.set_threshold).

A server freezes what it holds once started (`freeze_start_up`): the modules, settings and
connections it loaded then live as long as the process, and a full collection walking them (about
100,000 objects for `monitor web`) stalled the webhook for tens of milliseconds at a time under load
(docs/graph.md 4.3: Graph counts slow answers).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

ROUND_THRESHOLDS = (50_000, 50, 1000)
_running = 0
_saved: tuple[int, int, int] = gc.get_threshold()


def freeze_start_up() -> None:
    """Collect once, then move every object alive into the permanent generation, which later
    collections never walk (https://docs.python.org/3/library/gc.html#gc.freeze). Objects created
    from now on are collected as usual."""
    gc.collect()
    gc.freeze()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's thresholds while any round of the process runs, then restore them."""
    global _running, _saved
    if _running == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(*ROUND_THRESHOLDS)
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            gc.set_threshold(*_saved)
