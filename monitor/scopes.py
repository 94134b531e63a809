"""Scopes: how the tenant's graph is cut into small pieces (pure).

A mirror scope is (kind, family, bucket): the mirror keeps one Redis hash per scope. The bucket of
an object is a stable hash of its anchor key (`monitor.model.types`: a relationship's anchor is the
entity whose lifecycle it follows, and always one of its two ends).

**One bucket count per family, for both kinds.** The entities of family F in bucket b and the
relationships anchored on them are therefore one *upload scope* `F:b`, which the JupiterOne
publisher uploads as one DIFF job (`monitor.sinks.jupiterone`): every relationship travels in the
job of its anchor end, so that DIFF's "missing is deleted" covers relationship deletions as it
covers entity deletions. The mirror's layout and JupiterOne's are the same cut: an upload scope is
exactly two mirror hashes, `e:F:b` and `r:F:b`.

Bucket counts are sized so that an upload scope of a large tenant (100,000 users, 10,000 groups,
1,000,000 memberships) holds a few hundred objects: a membership change uploads its group's scope
(a few groups and their ~250 memberships), not a tenth of the directory. **They must never change
once a deployment holds data**: a new count would move objects between hashes and JupiterOne
scopes. (The counts of groups and devices changed once, from 32 and 256 entity buckets, when
entities and their relationships were brought into one scope; `TenantStore.upgrade` moves the
entities of a mirror written before that into their scopes, once.) Small tenants simply use few of the buckets.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from monitor.model.types import Kind, Placement

DEFAULT_BUCKETS = 64

# Buckets per family, for entities and the relationships anchored on them alike.
BUCKETS: dict[str, int] = {
    "microsoft_365_account": 1,
    "azure_user": 256,  # 100,000 users and their account HAS edges -> ~780 objects per scope
    "azure_user_group": 4096,  # 10,000 groups, 1,000,000 memberships -> ~2 groups, ~250 memberships
    "azure_group_member": 16,  # devices, service principals, contacts that are group members
    "intune_device": 512,  # 100,000 devices, agents and their relationships
    "intune_policy": 4,  # compliance policies and device configurations
    "intune_finding": 64,
    "intune_application": 64,
}

# Publication order (`monitor.sinks.jupiterone`): a relationship's far end must exist at JupiterOne
# before the job of its anchor is finalized, so families are published in waves, each after the
# families its relationships point into (account HAS user lives with the user; a membership with its
# group; user HAS device and agent ASSIGNED policy with the device; policy IDENTIFIED finding and
# device HAS finding with the finding). `tests/test_scopes.py` checks this against the mappers.
PUBLISH_WAVES: tuple[frozenset[str], ...] = (
    frozenset({"microsoft_365_account"}),
    frozenset({"azure_user", "azure_group_member", "intune_policy", "intune_application"}),
    frozenset({"azure_user_group", "intune_device"}),
    frozenset({"intune_finding"}),
)


class ScopeId(NamedTuple):
    """A mirror scope: one Redis hash of entities (`e:`) or relationships (`r:`)."""

    kind: Kind
    family: str
    bucket: int

    def __str__(self) -> str:
        return f"{'e' if self.kind == 'entity' else 'r'}:{self.family}:{self.bucket}"

    @classmethod
    def parse(cls, text: str) -> ScopeId:
        """Inverse of `str()`; raises ValueError on anything else."""
        kind_code, family, bucket = text.split(":")
        if kind_code not in ("e", "r") or not family:
            raise ValueError(f"not a scope id: {text!r}")
        return cls("entity" if kind_code == "e" else "relationship", family, int(bucket))

    @property
    def upload(self) -> UploadScope:
        return UploadScope(self.family, self.bucket)


class UploadScope(NamedTuple):
    """An upload scope `F:b`: the entities of family F in bucket b and the relationships anchored
    on them, published to JupiterOne as one DIFF job."""

    family: str
    bucket: int

    def __str__(self) -> str:
        return f"{self.family}:{self.bucket}"

    @classmethod
    def parse(cls, text: str) -> UploadScope:
        """Inverse of `str()`; raises ValueError on anything else (a bucket outside the family's count too)."""
        family, _, bucket = text.rpartition(":")
        if not family or ":" in family or not bucket.isdigit() or int(bucket) >= bucket_count("entity", family):
            raise ValueError(f"not an upload scope: {text!r}")
        return cls(family, int(bucket))

    @property
    def entities(self) -> ScopeId:
        return ScopeId("entity", self.family, self.bucket)

    @property
    def relationships(self) -> ScopeId:
        return ScopeId("relationship", self.family, self.bucket)

    @property
    def wave(self) -> int:
        return publish_wave(self.family)


def bucket_count(kind: Kind, family: str) -> int:
    """Buckets of `family` (the same for both kinds; `kind` is kept for the callers' clarity)."""
    del kind
    return BUCKETS.get(family, DEFAULT_BUCKETS)


def bucket_of(key: str, buckets: int) -> int:
    # crc32 is stable across processes and Python versions (unlike hash()) and cheap.
    return zlib.crc32(key.encode()) % buckets


@lru_cache(maxsize=1 << 16)
def scope_of(placement: Placement) -> ScopeId:
    # Cached: a page's memberships share their group's placement, and scope ids are looked up
    # several times per object.
    count = bucket_count(placement.kind, placement.family)
    return ScopeId(placement.kind, placement.family, bucket_of(placement.anchor_key, count))


def upload_scope_of(placement: Placement) -> UploadScope:
    return scope_of(placement).upload


def upload_scopes_of(names: Iterable[str]) -> list[UploadScope]:
    """The upload scopes of mirror scope ids (an `e:` and an `r:` id make one); other names are skipped."""
    found: set[UploadScope] = set()
    for name in names:
        with contextlib.suppress(ValueError):
            found.add(ScopeId.parse(name).upload)
    return sorted(found)


def family_scopes(kind: Kind, family: str) -> list[ScopeId]:
    return [ScopeId(kind, family, b) for b in range(bucket_count(kind, family))]


def publish_wave(family: str) -> int:
    """The wave of `family` in `PUBLISH_WAVES`; a family not listed goes last."""
    for wave, families in enumerate(PUBLISH_WAVES):
        if family in families:
            return wave
    return len(PUBLISH_WAVES)
