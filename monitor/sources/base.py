"""What every source gets (`SourceContext`), what a delta source provides (`DeltaSource`), and what a
round of any source reports (`RoundResult`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from monitor.graph.client import GraphClient
from monitor.graph.delta import DeltaResource
from monitor.model.account import account_key
from monitor.model.types import JsonObject, Kind, Op, Placement
from monitor.records import ChangeRecord
from monitor.settings import TenantConfig
from monitor.store import PageWrite, TenantStore

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SourceContext:
    tenant: TenantConfig
    store: TenantStore
    client: GraphClient
    clock: Clock = utc_now

    @property
    def account_key(self) -> str:
        return account_key(self.tenant.integration_instance_id or self.tenant.id)


@dataclass(slots=True)
class PageOps:
    """A page turned into operations (pure mapping) plus the keys a full round has now seen.

    `hint` is what the mapping learnt that spares `expand` a scan of the ops (source-specific).
    """

    ops: list[Op]
    seen: list[str]
    hint: Any = None


class DeltaSource(Protocol):
    """A directory resource read with delta queries."""

    name: str
    resource: DeltaResource
    # (kind, family) pairs whose objects a complete full round may delete by absence.
    owned: tuple[tuple[Kind, str], ...]

    async def page_ops(self, objects: list[JsonObject], *, full: bool = False) -> PageOps:
        """The page mapped to operations; `full`: the page belongs to a full round (its objects
        come whole, see `monitor.model.graph_state`)."""
        ...

    def placement_of(self, kind: Kind, family: str, key: str) -> Placement: ...

    async def expand(self, ops: list[Op], hint: Any = None) -> PageWrite: ...


@dataclass(slots=True)
class RoundResult:
    tenant: str
    source: str
    full: bool = False
    sweep: bool = False  # a list-everything pass (account, sign-ins, Intune) rather than a delta round
    resyncs: int = 0
    pages: int = 0
    objects: int = 0
    deleted_by_absence: int = 0
    skipped: int = 0  # objects a sweep read as the last sweep did, not mapped again
    changes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    duration: float = 0.0

    def add(self, records: list[ChangeRecord]) -> None:
        for record in records:
            self.changes[f"{record['kind']} {record['op']}"] += 1

    @property
    def kind(self) -> str:
        return "sweep" if self.sweep else "full" if self.full else "delta"

    @property
    def change_count(self) -> int:
        return sum(self.changes.values())


Progress = Callable[[RoundResult], None]
RecordListener = Callable[[list[ChangeRecord]], None]
