"""Scripted failures and the request log: what tests use to make Graph misbehave and to count calls.

Faults sit in front of everything else (like a front door or the network would): a matching
request can get a canned response (429 with Retry-After as seconds, as an HTTP date, or not at
all: the injector sends exactly what it is told), lose its connection, or be delayed.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["response", "disconnect", "delay"]


@dataclass
class Fault:
    """One rule: the next `times` matching requests, after `after` matching ones pass untouched.

    Note for "disconnect": aiohttp's client (like most HTTP clients) silently retries an
    idempotent request once when the connection drops before a response, so a client sees the
    failure only when `times` covers the retry too (times=2).
    """

    method: str | None
    path_regex: str
    kind: FaultKind = "response"
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # None: a Graph error body for `status`; str or dict: sent as given
    times: int = 1
    after: int = 0
    seconds: float = 0.0  # for kind="delay"
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and re.search(
            self.path_regex, target
        ) is not None

    @property
    def spent(self) -> bool:
        return self.fired >= self.times


class FaultInjector:
    """The rules in force; `take()` decides, at most one rule per request, first match first."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def inject(
        self,
        method: str | None = "GET",
        path_regex: str = ".*",
        status: int = 500,
        *,
        kind: FaultKind = "response",
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        after: int = 0,
        seconds: float = 0.0,
    ) -> Fault:
        """Add a rule. `path_regex` is searched in the decoded path with its query string."""
        if kind not in ("response", "disconnect", "delay"):
            raise ValueError(f"unknown fault kind {kind!r}")
        rule = Fault(method, path_regex, kind, status, dict(headers or {}), body, times, after, seconds)
        self.rules.append(rule)
        return rule

    def take(self, method: str, target: str) -> Fault | None:
        for rule in self.rules:
            if rule.spent or not rule.matches(method, target):
                continue
            rule.seen += 1
            if rule.seen > rule.after:
                rule.fired += 1
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    status: int | None  # None: the connection was dropped without a response
    tenant: str | None
    time: float  # by the simulator's clock
    client: str | None = None  # client id of the caller, when known
    body: Any = None  # the JSON body of a POST or PATCH, when there is one


class RequestLog:
    """The most recent requests (bounded, so a long benchmark cannot exhaust memory)."""

    def __init__(self, max_records: int = 200_000) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=max_records)

    def append(self, record: RequestRecord) -> None:
        self._records.append(record)

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self._records)

    def __getitem__(self, index: int) -> RequestRecord:
        return self._records[index]

    def matching(
        self, path_regex: str = ".*", *, method: str | None = None, status: int | None = None
    ) -> list[RequestRecord]:
        pattern = re.compile(path_regex)
        return [
            r
            for r in self._records
            if pattern.search(r.path)
            and (method is None or r.method == method.upper())
            and (status is None or r.status == status)
        ]

    def count(self, path_regex: str = ".*", *, method: str | None = None, status: int | None = None) -> int:
        return len(self.matching(path_regex, method=method, status=status))
