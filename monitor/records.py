"""The records monitor keeps, as types, each with its one encoder and decoder.

- The change record, monitor's main output (docs/change-record.md).
- The subscription record: one Graph subscription we made for a tenant, a field of the tenant's
  subscription registry (`monitor.keys.TenantKeys.subscriptions`), and the pending create.

Pure: no I/O. A `ChangeRecord` is a `TypedDict`, so at run time it is the very dict the store builds
and every consumer reads; the JSON on the wire is `encode_record`'s (compact, fields in contract
order), the same bytes as before the type existed. The subscription records are TypedDicts too,
stored as the same JSON as before they had a type (fields in the order the manager always wrote).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


# -- subscription records ---------------------------------------------------------------------

# The registry field of a create in flight: `pending:<resource>` (monitor.keys.TenantKeys.subscriptions).
PENDING_PREFIX = "pending:"


class SubscriptionRecord(TypedDict):
    """One Graph subscription we made for a tenant (docs/graph.md 2): what the webhook checks a
    notification's clientState against, what status, /readyz and /metrics show."""

    createdAt: str
    id: str
    resource: str  # the Graph resource path, e.g. "/users" (monitor.source_registry.NOTIFIED)
    clientState: str  # a secret shared with Graph: never shown
    expiration: str  # Graph's expirationDateTime; "" if Graph did not say
    notificationUrl: str
    # When we last renewed it (a renew also reauthorizes; docs/graph.md 2.5). Absent until then.
    renewedAt: NotRequired[str]


class PendingCreate(TypedDict):
    """The clientState of a create in flight, saved before the POST so that a subscription whose
    creation response was lost can be adopted."""

    clientState: str
    at: str


def encode_subscription(record: SubscriptionRecord) -> bytes:
    """The stored JSON of a subscription record, its fields always in the same order."""
    fields = {
        "createdAt": record["createdAt"],
        "id": record["id"],
        "resource": record["resource"],
        "clientState": record["clientState"],
        "expiration": record["expiration"],
        "notificationUrl": record["notificationUrl"],
    }
    if "renewedAt" in record:
        fields["renewedAt"] = record["renewedAt"]
    return orjson.dumps(fields)


def decode_subscription(subscription_id: str, raw: bytes | str) -> SubscriptionRecord:
    """A stored subscription record. A field missing from the JSON reads as "" (and the id as the
    registry field's), so a record written by any version is read the same way."""
    stored = orjson.loads(raw)
    record = SubscriptionRecord(
        createdAt=_text(stored, "createdAt"),
        id=_text(stored, "id") or subscription_id,
        resource=_text(stored, "resource"),
        clientState=_text(stored, "clientState"),
        expiration=_text(stored, "expiration"),
        notificationUrl=_text(stored, "notificationUrl"),
    )
    if stored.get("renewedAt"):
        record["renewedAt"] = _text(stored, "renewedAt")
    return record


def decode_registry(fields: Mapping[bytes | str, bytes | str]) -> dict[str, SubscriptionRecord]:
    """The subscription records of a registry hash (`HGETALL`), by subscription id, without the
    pending creates."""
    registry: dict[str, SubscriptionRecord] = {}
    for field, raw in fields.items():
        name = field.decode() if isinstance(field, bytes) else field
        if not name.startswith(PENDING_PREFIX):
            registry[name] = decode_subscription(name, raw)
    return registry


def encode_pending(pending: PendingCreate) -> bytes:
    return orjson.dumps({"clientState": pending["clientState"], "at": pending["at"]})


def decode_pending(raw: bytes | str) -> PendingCreate:
    stored = orjson.loads(raw)
    return PendingCreate(clientState=_text(stored, "clientState"), at=_text(stored, "at"))


def _text(stored: Mapping[str, object], name: str) -> str:
    value = stored.get(name)
    return "" if value is None else str(value)
