"""Scopes: how the tenant's graph is cut into small pieces (pure).

A scope is (kind, family, bucket). The mirror keeps one Redis hash per scope and the JupiterOne
publisher uploads one scope per job, so a change to one object costs one small upload and a
deletion is exact (JupiterOne's DIFF mode deletes what a scope's upload omits).

The bucket of an object is a stable hash of its anchor key. Bucket counts are sized so that a
scope of a large tenant (100,000 users, 10,000 groups, 1,000,000 memberships) holds a few hundred
objects. **They must never change once a deployment has published**: a new count would move
objects between scopes. Small tenants simply use few of the buckets.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import NamedTuple

from monitor.model.types import Kind, Placement

DEFAULT_BUCKETS = 64

# Entities per family, divided to reach a few hundred per scope at the benchmark size.
ENTITY_BUCKETS: dict[str, int] = {
    "microsoft_365_account": 1,
    "azure_user": 256,  # 100,000 users -> ~390 per scope
    "azure_user_group": 32,  # 10,000 groups -> ~310
    "azure_group_member": 16,  # devices, service principals, contacts that are group members
    "intune_device": 256,  # 100,000 devices and their agents -> ~780 objects
    "intune_policy": 4,  # compliance policies and device configurations
    "intune_finding": 64,
    "intune_application": 64,
}

# Relationships per anchor family.
RELATIONSHIP_BUCKETS: dict[str, int] = {
    "microsoft_365_account": 1,
    "azure_user": 256,  # account HAS user: one per user
    "azure_user_group": 4096,  # memberships: 1,000,000 -> ~245 per scope
    "intune_device": 512,  # agent MANAGES, user HAS/USES, ASSIGNED, INSTALLED, HAS finding
    "intune_policy": 4,
    "intune_finding": 64,
    "intune_application": 64,
}


class ScopeId(NamedTuple):
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


def bucket_count(kind: Kind, family: str) -> int:
    table = ENTITY_BUCKETS if kind == "entity" else RELATIONSHIP_BUCKETS
    return table.get(family, DEFAULT_BUCKETS)


def bucket_of(key: str, buckets: int) -> int:
    # crc32 is stable across processes and Python versions (unlike hash()) and cheap.
    return zlib.crc32(key.encode()) % buckets


@lru_cache(maxsize=1 << 16)
def scope_of(placement: Placement) -> ScopeId:
    # Cached: a page's memberships share their group's placement, and scope ids are looked up
    # several times per object.
    count = bucket_count(placement.kind, placement.family)
    return ScopeId(placement.kind, placement.family, bucket_of(placement.anchor_key, count))


def family_scopes(kind: Kind, family: str) -> list[ScopeId]:
    return [ScopeId(kind, family, b) for b in range(bucket_count(kind, family))]
