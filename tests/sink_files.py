"""Reading the JSONL sink's file from a test, whole or while a process writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file no process is writing: each must be one whole JSON object."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a torn line"
    return [orjson.loads(line) for line in data.splitlines()]


def read_written_lines(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSONL file a process may be writing as we read. A read that overlaps the
    sink's write can see the first part of its last line (the sink writes a batch in one `write`, but
    a reader is not held off while it lands), so whatever follows the last newline is not read yet."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
