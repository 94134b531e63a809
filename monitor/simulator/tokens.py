"""Opaque paging tokens, and the bounded store of running rounds and list snapshots.

Graph's `$skiptoken` and `$deltatoken` are opaque and carry the original query options
(docs/graph.md 7.2: "tokens are opaque and hold the original query options such as $select, so copy
the links exactly"). Here a token is base64url JSON: clients must not parse it, and the tests
never do.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str) -> dict[str, Any] | None:
    """The payload, or None when the token is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


@dataclass
class ListSnapshot:
    """A paged list call in progress: the items as of its first page, and its query options."""

    tenant_id: str
    path: str
    items: list[Any]
    query: dict[str, str]


class BoundedStore(Generic[T]):
    """Least-recently-used store keyed by random ids: rounds in progress, list snapshots.

    Bounded so an abandoned round (a client that never reads its last page) cannot pin memory;
    a page token for an evicted round gets Graph's expired-page-token error.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, T] = OrderedDict()

    def put(self, value: T) -> str:
        key = secrets.token_hex(8)
        self._items[key] = value
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return key

    def get(self, key: str) -> T | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __len__(self) -> int:
        return len(self._items)
