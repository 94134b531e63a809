"""The scope layout (pure): an upload scope is one bucket of one family, holding its entities and the
relationships anchored on them; anchors are relationship ends; waves follow the relationships."""

from __future__ import annotations

import pytest

from monitor.model.intune_policies import map_policy, map_status, policy_ref
from monitor.model.registry import end_placements
from monitor.model.types import Upsert, entity_placement, relationship_placement
from monitor.scopes import BUCKETS, ScopeId, UploadScope, bucket_count, publish_wave, scope_of, upload_scope_of
from tests.intune import data as intune
from tests.jupiterone.directory import initial_ops, intune_ops


def mapped_relationships() -> list[Upsert]:
    policies = [map_policy("compliance", intune.COMPLIANCE_POLICY), map_policy("configuration", intune.CONFIGURATION)]
    statuses = [
        *map_status(
            policy_ref("compliance", intune.COMPLIANCE_POLICY),
            intune.status(intune.POLICY_ID, "nonCompliant"),
            "smartphone",
        ),
        *map_status(
            policy_ref("configuration", intune.CONFIGURATION), intune.status(intune.CONFIG_ID, "error"), "smartphone"
        ),
    ]
    ops = [*initial_ops(), *intune_ops(), *policies, *statuses]
    return [op for op in ops if isinstance(op, Upsert) and op.placement.kind == "relationship"]


RELATIONSHIPS = mapped_relationships()


def test_the_fixtures_cover_every_kind_of_anchor() -> None:
    families = {op.placement.family for op in RELATIONSHIPS}
    assert families == {"azure_user", "azure_user_group", "intune_device", "intune_finding"}


@pytest.mark.parametrize("op", RELATIONSHIPS, ids=lambda op: op.obj["_type"])
def test_a_relationship_is_anchored_on_one_of_its_ends(op: Upsert) -> None:
    """So its upload scope holds one of its ends, the one named without a label in its DIFF job."""
    ends = end_placements(op.obj)
    assert op.placement.family in {end.family for end in ends}
    assert upload_scope_of(op.placement) in {upload_scope_of(end) for end in ends}


@pytest.mark.parametrize("op", RELATIONSHIPS, ids=lambda op: op.obj["_type"])
def test_the_far_end_of_a_relationship_is_published_in_an_earlier_wave(op: Upsert) -> None:
    anchor = op.placement.family
    for end in end_placements(op.obj):
        if end.family != anchor:
            assert publish_wave(end.family) < publish_wave(anchor), (op.obj["_type"], end.family)


@pytest.mark.parametrize("family", sorted(BUCKETS))
def test_an_entity_and_the_relationships_anchored_on_it_share_one_upload_scope(family: str) -> None:
    assert bucket_count("entity", family) == bucket_count("relationship", family)
    for key in ("a-key-0000001", "another-key-02", "3f2a1c2e-6f0b-4a8a-9d5e-1f2a3b4c5d6e"):
        entity, relationship = scope_of(entity_placement(family, key)), scope_of(relationship_placement(family, key))
        assert entity.upload == relationship.upload
        assert (entity.upload.entities, entity.upload.relationships) == (entity, relationship)


def test_upload_scope_names_round_trip_and_foreign_names_are_refused() -> None:
    scope = UploadScope("azure_user_group", 4095)
    assert UploadScope.parse(str(scope)) == scope and str(scope) == "azure_user_group:4095"
    assert ScopeId.parse("r:azure_user_group:17").upload == UploadScope("azure_user_group", 17)
    for name in ("e:azure_user:5", "azure_user_group:4096", "azure_user:x", "nothing"):
        with pytest.raises(ValueError, match="not an upload scope"):
            UploadScope.parse(name)
