"""The change record's type and its encoder keep the contract's bytes (docs/change-record.md)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from monitor.records import ChangeRecord, decode_record, encode_record, encode_records

DOC = Path(__file__).resolve().parents[2] / "docs" / "change-record.md"


def _documented_line() -> bytes:
    """The record "as the JSONL file holds it" in docs/change-record.md."""
    block = re.search(r"as the JSONL file holds it:\n\n```\n(.+?)\n```", DOC.read_text(), re.DOTALL)
    assert block is not None
    return block.group(1).encode()


def test_a_logged_record_encodes_to_the_documented_bytes() -> None:
    line = _documented_line()
    stored = orjson.loads(line)
    seq = stored.pop("seq")
    # The log stores a record without its seq (monitor.store); decoding puts it back first.
    record = decode_record(seq, orjson.dumps(stored))
    assert list(record) == list(ChangeRecord.__annotations__)[: len(record)]
    assert encode_record(record) == line


def test_a_webhook_body_is_the_records_in_order() -> None:
    stored = orjson.loads(_documented_line())
    del stored["seq"]
    first = decode_record(1, orjson.dumps(stored))
    second: ChangeRecord = {**first, "seq": 2, "reason": "member_deleted"}
    body = encode_records([first, second])
    assert body == orjson.dumps({"records": [first, second]})
    assert [r["seq"] for r in orjson.loads(body)["records"]] == [1, 2]
