"""The change record, monitor's main output, as a type (docs/change-record.md), and its one encoder.

Pure: no I/O. A `ChangeRecord` is a `TypedDict`, so at run time it is the very dict the store builds
and every consumer reads; the JSON on the wire is `encode_record`'s (compact, fields in contract
order), the same bytes as before the type existed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NotRequired, TypedDict, cast

import orjson

from monitor.model.types import JsonObject, Kind

RecordOp = Literal["upsert", "delete"]


class ChangeRecord(TypedDict):
    """One change of one JupiterOne object of one tenant; the fields are docs/change-record.md's."""

    seq: int
    tenant: str
    source: str  # a source of monitor.source_registry
    op: RecordOp
    kind: Kind
    type: str
    key: str
    changed: list[str]
    before: JsonObject | None
    after: JsonObject | None
    observedAt: str
    # Why an object changed when it is not its own change (a membership leaving with its deleted
    # member; monitor.model.types.Upsert.reason). Absent otherwise.
    reason: NotRequired[str]


def encode_record(record: ChangeRecord) -> bytes:
    """The record's JSON: one line of the JSONL sink, one item of a webhook request."""
    return orjson.dumps(record)


def encode_records(records: Iterable[ChangeRecord]) -> bytes:
    """A webhook sink request body, `{"records": [...]}` in seq order."""
    return b'{"records":[' + b",".join(encode_record(record) for record in records) + b"]}"


def decode_record(seq: int, line: bytes) -> ChangeRecord:
    """A record of the change log: its `seq` and the stored JSON of the rest (monitor.store writes
    both; the log holds nothing else)."""
    return cast(ChangeRecord, {"seq": seq, **orjson.loads(line)})
