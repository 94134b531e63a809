"""The change record's type and its encoder keep the contract's bytes (docs/change-record.md)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from monitor.records import (
    ChangeRecord,
    decode_pending,
    decode_record,
    decode_registry,
    decode_subscription,
    encode_pending,
    encode_record,
    encode_records,
    encode_subscription,
)

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


# -- subscription records (monitor.keys.TenantKeys.subscriptions) -------------------------------

# A registry hash as the subscription manager has always written it: a renewed record, a record
# never renewed, and the clientState of a create in flight.
STORED_REGISTRY: dict[bytes | str, bytes | str] = {
    b"3b7e": b'{"createdAt":"2024-05-01T10:00:00.000Z","id":"3b7e","resource":"/users",'
    b'"clientState":"s3cret","expiration":"2024-05-29T09:55:00.000Z",'
    b'"notificationUrl":"https://monitor.example/graph/notifications","renewedAt":"2024-05-02T10:00:00.000Z"}',
    b"9a01": b'{"createdAt":"2024-05-01T10:00:01.000Z","id":"9a01","resource":"/groups",'
    b'"clientState":"other","expiration":"2024-05-29T09:55:01.000Z",'
    b'"notificationUrl":"https://monitor.example/graph/notifications"}',
    b"pending:/users": b'{"clientState":"inflight","at":"2024-05-01T10:00:00.000Z"}',
}


def test_a_stored_subscription_registry_decodes_and_encodes_to_the_same_bytes() -> None:
    registry = decode_registry(STORED_REGISTRY)
    assert sorted(registry) == ["3b7e", "9a01"], "the pending create is not a subscription"
    assert registry["3b7e"]["resource"] == "/users"
    assert registry["3b7e"]["clientState"] == "s3cret"
    assert registry["3b7e"]["renewedAt"] == "2024-05-02T10:00:00.000Z"
    assert "renewedAt" not in registry["9a01"]
    for name, record in registry.items():
        assert encode_subscription(record) == STORED_REGISTRY[name.encode()]
    pending = decode_pending(STORED_REGISTRY[b"pending:/users"])
    assert pending == {"clientState": "inflight", "at": "2024-05-01T10:00:00.000Z"}
    assert encode_pending(pending) == STORED_REGISTRY[b"pending:/users"]


def test_a_subscription_record_missing_fields_reads_as_empty_strings() -> None:
    record = decode_subscription("4c2d", '{"resource":"/groups","clientState":"x","renewedAt":null}')
    assert record == {
        "createdAt": "",
        "id": "4c2d",
        "resource": "/groups",
        "clientState": "x",
        "expiration": "",
        "notificationUrl": "",
    }
