"""What one upload scope sends to JupiterOne (pure): its objects, checked, labelled and serialized.

An upload scope `F:b` (`monitor.scopes.UploadScope`) is published as one DIFF job of JupiterOne
scope `<prefix>/<tenant>/F:b` holding the scope's entities and the relationships anchored on them.
A relationship's anchor end is in the job's own scope and is named by its key alone; its other end,
when it lives in another upload scope, is labelled with that scope and our source
(`_toEntitySource: "api"`, `_toEntityScope: ...`), as JupiterOne asks for an end it does not find
in the job's scope ("you will need to use a _key and include a _source and _scope of the existing
entities in the graph", https://docs.jupiterone.io/features/assets/relationships-across-scopes).
A relationship between two entities of the same upload scope carries no label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from monitor.model.registry import end_placements
from monitor.model.types import JsonObject, Placement
from monitor.scopes import UploadScope, upload_scope_of
from monitor.settings import TenantConfig
from monitor.sinks.j1_validate import Invalid, check_entity, check_relationship, too_large

# The `source` of every job monitor runs: only `api` jobs may name their scope (api-reference,
# https://docs.jupiterone.io/api/sync-jobs/api-reference: scope "Can only be used when source is api").
SOURCE = "api"
ACCOUNT_NAME_TAG = "tag.AccountName"
# Room in a request body for `{"entities":[` and `]}` around one object (see `batch_bodies`).
_BODY_OVERHEAD = 32
END_LABELS = ("_fromEntitySource", "_fromEntityScope", "_toEntitySource", "_toEntityScope")


def j1_scope_name(prefix: str, tenant_id: str, scope: UploadScope | str) -> str:
    """The JupiterOne `scope` of one of our upload scopes: `<prefix>/<tenant id>/<family>:<bucket>`."""
    return f"{prefix}/{tenant_id}/{scope}"


def tenant_prefix(prefix: str, tenant_id: str) -> str:
    """What every JupiterOne scope of the tenant starts with."""
    return f"{prefix}/{tenant_id}/"


@dataclass(frozen=True, slots=True)
class Payload:
    """One upload scope's DIFF job: its JupiterOne scope, the objects that passed (as uploaded, and
    serialized), the objects left out, and the other upload scopes its relationships point into."""

    j1_scope: str
    entities: list[JsonObject]
    relationships: list[JsonObject]
    encoded_entities: list[bytes]
    encoded_relationships: list[bytes]
    rejected: list[Invalid]
    far_scopes: frozenset[str]

    @property
    def objects(self) -> int:
        return len(self.encoded_entities) + len(self.encoded_relationships)


class _EndScopes:
    """The upload scope of a relationship end, memoised for one payload (a group's members share
    their `from` end, and a scope's relationships often share ends)."""

    def __init__(self) -> None:
        self._scopes: dict[Placement, UploadScope] = {}

    def __call__(self, end: Placement) -> UploadScope:
        scope = self._scopes.get(end)
        if scope is None:
            scope = self._scopes[end] = upload_scope_of(end)
        return scope


def label_ends(
    relationship: JsonObject, own: UploadScope, base: str, ends: _EndScopes
) -> tuple[JsonObject, list[Invalid], list[str]]:
    """`relationship` as uploaded in `own`'s job (far ends labelled with `base` + their upload scope),
    its problems, and its far upload scopes."""
    key, type_ = str(relationship.get("_key")), str(relationship.get("_type"))
    try:
        from_end, to_end = end_placements(relationship)
    except KeyError as exc:
        return relationship, [Invalid(key, type_, "relationship-ends", str(exc.args[0]))], []
    scopes = (ends(from_end), ends(to_end))
    if own not in scopes:
        detail = f"neither end is in upload scope {own} (ends in {scopes[0]} and {scopes[1]})"
        return relationship, [Invalid(key, type_, "relationship-anchor", detail)], []
    labelled, far = dict(relationship), []
    for side, scope in zip(("from", "to"), scopes, strict=True):
        if scope != own:
            labelled[f"_{side}EntitySource"] = SOURCE
            labelled[f"_{side}EntityScope"] = f"{base}{scope}"
            far.append(str(scope))
    return labelled, [], far


def build_payload(
    upload: UploadScope,
    entities: Mapping[str, JsonObject],
    relationships: Mapping[str, JsonObject],
    *,
    tenant: TenantConfig,
    prefix: str,
    max_request_bytes: int,
) -> Payload:
    """The upload of one upload scope's complete state (pure): valid objects, the rest reported.

    Entities get `tag.AccountName` when the tenant asks for it; relationships get their far ends
    labelled. Objects go in key order, so the same state gives the same bytes.
    """
    j1_scope = j1_scope_name(prefix, tenant.id, upload)
    room = max_request_bytes - _BODY_OVERHEAD
    rejected: list[Invalid] = []
    kept_entities: list[JsonObject] = []
    for key in sorted(entities):
        entity = entities[key]
        if tenant.tag_account_name and tenant.account_name:
            entity = {**entity, ACCOUNT_NAME_TAG: tenant.account_name}
        problems = check_entity(entity)
        rejected.extend(problems)
        if not problems:
            kept_entities.append(entity)
    kept_relationships: list[JsonObject] = []
    far: set[str] = set()
    ends, base = _EndScopes(), tenant_prefix(prefix, tenant.id)
    left_out = {problem.key for problem in rejected}
    for key in sorted(relationships):
        problems = check_relationship(relationships[key]) or _end_left_out(relationships[key], left_out)
        if problems:
            rejected.extend(problems)
            continue
        labelled, problems, far_ends = label_ends(relationships[key], upload, base, ends)
        rejected.extend(problems)
        if not problems:
            kept_relationships.append(labelled)
            far.update(far_ends)
    encoded_entities, entities_left = _encode(kept_entities, room, max_request_bytes, rejected)
    encoded_relationships, relationships_left = _encode(kept_relationships, room, max_request_bytes, rejected)
    return Payload(
        j1_scope,
        entities_left,
        relationships_left,
        encoded_entities,
        encoded_relationships,
        rejected,
        frozenset(far),
    )


def _end_left_out(relationship: JsonObject, left_out: set[str]) -> list[Invalid]:
    """A relationship to an entity of its own scope left out as invalid could not be created either."""
    for side in ("_fromEntityKey", "_toEntityKey"):
        if relationship[side] in left_out:
            detail = f"its end {relationship[side]} is left out as invalid"
            return [Invalid(str(relationship["_key"]), str(relationship["_type"]), "end-left-out", detail)]
    return []


def _encode(
    objects: list[JsonObject], room: int, limit: int, rejected: list[Invalid]
) -> tuple[list[bytes], list[JsonObject]]:
    encoded, kept = [], []
    for obj in objects:
        raw = orjson.dumps(obj)
        if len(raw) > room:
            rejected.append(too_large(obj, len(raw), limit))
            continue
        encoded.append(raw)
        kept.append(obj)
    return encoded, kept
