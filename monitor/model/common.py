"""Helpers shared by the mappers (pure): timestamps, relationships, and property hygiene.

Relationship `_key` and `_type` follow the JupiterOne integration SDK (`createIntegrationRelationship.ts`,
docs/jupiterone.md section 2) so that `monitor` produces the same keys as the public Microsoft 365
integration.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from monitor.model.types import JsonMapping, JsonObject

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

# Properties each class of the current JupiterOne data model requires (docs/jupiterone.md section 13),
# parents included. A mapper keeps these present, as `null` when unknown, and drops every other `None`.
# tests/model checks this table against the vendored @jupiterone/data-model schemas.
_GRAPH_OBJECT_REQUIRED = frozenset({"_key", "_class", "_type"})
_ENTITY_REQUIRED = _GRAPH_OBJECT_REQUIRED | {"name", "displayName"}
_DEVICE_REQUIRED = _ENTITY_REQUIRED | {
    "category",
    "ipv4Addresses",
    "ipv6Addresses",
    "macAddresses",
    "publicIpAddresses",
    "privateIpAddresses",
    "hostname",
    "fqdn",
    "serial",
    "deviceId",
    "lastSeenOn",
    "make",
    "model",
    "osName",
    "osType",
    "osDetails",
    "osVersion",
}
CLASS_REQUIRED: Mapping[str, frozenset[str]] = {
    "Account": _ENTITY_REQUIRED | {"vendor"},
    "User": _ENTITY_REQUIRED | {"firstName", "lastName", "email", "shortLoginId", "username"},
    "UserGroup": _ENTITY_REQUIRED,
    "Device": _DEVICE_REQUIRED,
    "Host": _DEVICE_REQUIRED,
    "HostAgent": _ENTITY_REQUIRED | {"function", "lastSeenOn"},
    "Application": _ENTITY_REQUIRED,
    "Configuration": _ENTITY_REQUIRED,
    "ControlPolicy": _ENTITY_REQUIRED,
    # Finding extends RecordEntity, which requires the same name and displayName as Entity.
    "Finding": _ENTITY_REQUIRED | {"category", "severity", "numericSeverity", "open"},
}


def required_properties(*classes: str) -> frozenset[str]:
    """The union of the required properties of `classes` (raises KeyError for a class not in the table)."""
    return frozenset().union(*(CLASS_REQUIRED[c] for c in classes))


def iso_ms(moment: datetime) -> str:
    """`moment` in ISO 8601 to the millisecond, `Z` for UTC: the change log's timestamps."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(iso: str | None) -> int | None:
    """Milliseconds since the epoch of a Graph ISO-8601 timestamp; None for None or "".

    Accepts `Z` or a numeric offset and any number of fractional digits (Graph sends up to 7; digits past
    the millisecond are truncated, as JavaScript's `Date.parse` does). A value without an offset is taken
    as UTC, which is what Graph means by it. Anything else raises ValueError naming the value.
    """
    if not iso:
        return None
    try:
        parsed = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO-8601 timestamp: {iso!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _ONE_MS


def drop_none(properties: JsonMapping, keep: frozenset[str] = frozenset()) -> JsonObject:
    """A new dict without the `None`-valued properties, except those named in `keep` (they stay as null).

    JupiterOne rejects `undefined`, and most data-model properties are typed without null, so an unknown
    value is left out; the properties a class requires (`keep`, see `required_properties`) stay present.
    """
    return {k: v for k, v in properties.items() if v is not None or k in keep}


@lru_cache(maxsize=256)
def relationship_type(from_type: str, verb: str, to_type: str) -> str:
    """The SDK's `generateRelationshipType`: `<from>_<verb lower>_<to without the leading words it shares>`.

    As in the SDK, the last word of `to_type` is never stripped unless `to_type` is a single word equal to
    the first word of `from_type` (the SDK's do-while loop then strips it, leaving a trailing `_`).
    """
    from_parts = from_type.split("_")
    to_parts = to_type.split("_")
    i = 0
    while True:  # a do-while, exactly as the SDK's loop
        if i < len(from_parts) and to_parts[i] == from_parts[i]:
            i += 1
        else:
            break
        if i >= len(to_parts) - 1:
            break
    return f"{from_type}_{verb.lower()}_{'_'.join(to_parts[i:])}"


def relationship_key(from_key: str, verb: str, to_key: str) -> str:
    """The SDK's direct relationship `_key`: `<fromKey>|<verb lower>|<toKey>`."""
    return f"{from_key}|{verb.lower()}|{to_key}"


def direct_relationship(
    from_type: str,
    from_key: str,
    verb: str,
    to_type: str,
    to_key: str,
    *,
    type_override: str | None = None,
    key_override: str | None = None,
    extra: JsonMapping | None = None,
) -> JsonObject:
    """A direct relationship as the SDK's `createDirectRelationship` builds it.

    `_class` and `displayName` are the upper-case verb; `_type` is `relationship_type(...)` unless
    `type_override` is given (for example `microsoft_365_account_has_azure_group`), `_key` is
    `relationship_key(...)` unless `key_override` is given (the public integration's custom keys).
    `extra` properties are added last, without their `None` values (a relationship class requires no
    property, and JupiterOne rejects `undefined`); like the SDK's `properties`, they may not be used to
    change `_key` or `_type`: use the overrides.
    """
    verb_upper = verb.upper()
    relationship: JsonObject = {
        "_key": key_override if key_override is not None else relationship_key(from_key, verb, to_key),
        "_type": type_override if type_override is not None else relationship_type(from_type, verb, to_type),
        "_class": verb_upper,
        "_fromEntityKey": from_key,
        "_toEntityKey": to_key,
        "displayName": verb_upper,
    }
    if extra:
        for name, value in extra.items():
            if name in relationship and name.startswith("_"):
                raise ValueError(f"extra may not set {name!r}; use the overrides")
            if value is not None:
                relationship[name] = value
    return relationship
