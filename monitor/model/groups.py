"""Groups and memberships: `azure_user_group`, `microsoft_365_account_has_azure_group`,
`azure_group_has_member` and the `azure_group_member` placeholder (pure).

Mapping of docs/jupiterone.md 1.3, 1.4, 2.1 and 2.2, made to satisfy the current data model
(section 13). Memberships come from `members@delta` entries of `GET /groups/delta` (docs/graph.md 7.4, 7.5):
each entry is one membership added (`{"@odata.type", "id"}`) or removed (with `@removed`).

Placements: a group and its relationships (account HAS group, group HAS member) are anchored on the group
(family `azure_user_group`), so deleting a group only has to look in the group's relationship scope. A
placeholder member entity lives in family `azure_group_member` under its own key.
"""

from __future__ import annotations

from functools import lru_cache

from monitor.model.account import ACCOUNT_TYPE
from monitor.model.common import direct_relationship, drop_none, epoch_ms, relationship_key, required_properties
from monitor.model.types import (
    Delete,
    JsonMapping,
    JsonObject,
    Op,
    Placement,
    Upsert,
    entity_placement,
    relationship_placement,
)
from monitor.model.users import USER_TYPE

GROUP_FAMILY = "azure_user_group"
GROUP_TYPE = "azure_user_group"
GROUP_CLASS = "UserGroup"
ACCOUNT_HAS_GROUP_TYPE = "microsoft_365_account_has_azure_group"  # overridden in the public integration

MEMBERSHIP_TYPE = "azure_group_has_member"
PLACEHOLDER_FAMILY = "azure_group_member"
PLACEHOLDER_TYPE = "azure_group_member"
PLACEHOLDER_CLASS = "User"

# `$select` of `GET /groups/delta`. `members` makes Graph return `members@delta`; `isAssignableToRole` is
# watched by alert rules; `groupTypes` and `visibility` are extra properties beyond the public integration.
GROUP_SELECT: tuple[str, ...] = (
    "id",
    "displayName",
    "description",
    "classification",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "createdDateTime",
    "deletedDateTime",
    "renewedDateTime",
    "groupTypes",
    "visibility",
    "isAssignableToRole",
    "members",
)
# The group properties proper: an object with none of them is only a slice of `members@delta`.
_GROUP_PROPERTIES = frozenset(GROUP_SELECT) - {"id", "members"}

_USER_ODATA_TYPE = "#microsoft.graph.user"
_GROUP_ODATA_TYPE = "#microsoft.graph.group"
# Member `@odata.type` (lower case) -> the `_type` of the entity the membership points at.
_MEMBER_TARGET_TYPES = {_USER_ODATA_TYPE: USER_TYPE, _GROUP_ODATA_TYPE: GROUP_TYPE}

_GROUP_REQUIRED = required_properties(GROUP_CLASS)


def _group_entity(group: JsonMapping) -> JsonObject:
    get = group.get
    group_id: str = group["id"]
    name: str = get("displayName") or get("mailNickname") or group_id
    mail = get("mail") if get("mailEnabled") is True else None
    return drop_none(
        {
            "_key": group_id,
            "_type": GROUP_TYPE,
            "_class": [GROUP_CLASS],
            "id": group_id,
            "name": name,
            "displayName": name,
            "description": get("description"),
            "classification": get("classification"),
            "mailEnabled": get("mailEnabled"),
            "mailNickname": get("mailNickname"),
            "securityEnabled": get("securityEnabled"),
            "email": mail,
            "mail": mail,
            "createdOn": epoch_ms(get("createdDateTime")),
            "deletedOn": epoch_ms(get("deletedDateTime")),
            "renewedOn": epoch_ms(get("renewedDateTime")),
            "groupTypes": get("groupTypes"),
            "visibility": get("visibility"),
            "isAssignableToRole": get("isAssignableToRole"),
        },
        _GROUP_REQUIRED,
    )


def map_group(group: JsonMapping, *, account_key: str) -> list[Upsert]:
    """The `azure_user_group` entity and the account's HAS relationship for one Graph group.

    Returns `[]` when the object carries no group property at all (only `id`, annotations and
    `members@delta`): Graph repeats a large group on later delta pages with another slice of members, and
    such a repeat is not a property update. Its `members@delta` still has to go through
    `map_member_change`. Otherwise the object must be whole (a delta update is merged onto the group's last
    known state first, `monitor.model.graph_state`). `email`/`mail` are set only when `mailEnabled` is true;
    `name`/`displayName` fall back to `mailNickname`, then the id. A removed group (`@removed`) raises
    ValueError: use `group_removed`.
    """
    if "@removed" in group:
        raise ValueError(f"group {group.get('id')!r} is removed; use group_removed")
    if _GROUP_PROPERTIES.isdisjoint(group):
        return []
    entity = _group_entity(group)
    group_id: str = entity["_key"]
    relationship = direct_relationship(
        ACCOUNT_TYPE, account_key, "HAS", GROUP_TYPE, group_id, type_override=ACCOUNT_HAS_GROUP_TYPE
    )
    return [
        Upsert(entity_placement(GROUP_FAMILY, group_id), entity),
        Upsert(relationship_placement(GROUP_FAMILY, group_id), relationship),
    ]


def group_removed(group_id: str, *, account_key: str) -> list[Delete]:
    """The deletions for a removed group: its entity and the account's HAS relationship.

    Not its memberships: the caller moves those (`monitor.sources.parking`: the group's own members are all
    in its relationship scope `relationship_placement(GROUP_FAMILY, group_id)`, the groups it is a member of
    are found by a scan), and then drops placeholders that no group contains any more (`placeholder_removed`).
    """
    return [
        Delete(entity_placement(GROUP_FAMILY, group_id), group_id),
        Delete(relationship_placement(GROUP_FAMILY, group_id), relationship_key(account_key, "HAS", group_id)),
    ]


def membership_key(group_id: str, member_id: str) -> str:
    """`<groupId>|has|<memberId>`, the public integration's membership key."""
    return f"{group_id}|has|{member_id}"


def _target_type(member: JsonMapping) -> str | None:
    """`azure_user` or `azure_user_group` for a user or group member (any casing of `@odata.type`), else None."""
    odata_type = member.get("@odata.type")
    if not odata_type:
        return None
    target = _MEMBER_TARGET_TYPES.get(odata_type)
    return target if target is not None else _MEMBER_TARGET_TYPES.get(odata_type.lower())


def is_placeholder_member(member: JsonMapping) -> bool:
    """Whether a member is neither a user nor a group (a device, service principal, org contact, ...), and so
    is represented by an `azure_group_member` placeholder entity."""
    return _target_type(member) is None


def placeholder_removed(member_id: str) -> Delete:
    """The deletion of a placeholder entity, once no group contains that member any more (the caller counts)."""
    return Delete(entity_placement(PLACEHOLDER_FAMILY, member_id), member_id)


# What a placeholder shows of its directory object beyond the id, when known
# (`POST /directoryObjects/getByIds`, monitor.graph.directory_objects).
PLACEHOLDER_DETAILS = ("displayName", "mail", "jobTitle")


def member_details(directory_object: JsonMapping) -> JsonObject:
    """The `PLACEHOLDER_DETAILS` a directory object has (None and absent ones left out)."""
    return {p: directory_object[p] for p in PLACEHOLDER_DETAILS if directory_object.get(p) is not None}


def placeholder_entity(member: JsonMapping) -> JsonObject:
    """The `azure_group_member` entity of a member (`{"@odata.type", "id"}`, plus any
    `PLACEHOLDER_DETAILS`). `members@delta` carries only the id and type, so without details the
    placeholder is named by its id."""
    member_id: str = member["id"]
    name: str = member.get("displayName") or member_id
    mail: str | None = member.get("mail")
    entity: JsonObject = {
        "_key": member_id,
        "_type": PLACEHOLDER_TYPE,
        "_class": [PLACEHOLDER_CLASS],
        "name": name,
        "displayName": name,
        # Required by the data model's User class; a placeholder knows none of them but (maybe) the mail.
        "firstName": None,
        "lastName": None,
        "username": None,
        "shortLoginId": None,
        "email": [mail] if mail else None,
    }
    job_title = member.get("jobTitle")
    if job_title is not None:
        entity["jobTitle"] = job_title
    odata_type = member.get("@odata.type")
    if odata_type is not None:
        entity["memberType"] = odata_type
    return entity


@lru_cache(maxsize=4096)
def _membership_placement(group_id: str) -> Placement:
    # Memoised: a group's member entries arrive together, and a Placement costs more to build than the
    # relationship itself. Placements are immutable, so sharing one is safe.
    return relationship_placement(GROUP_FAMILY, group_id)


def membership_relationship(group_id: str, member_id: str, member_type: str | None) -> JsonObject:
    """`azure_group_has_member` from group to member: what `direct_relationship(GROUP_TYPE, group_id, "HAS",
    <member type>, member_id, type_override=MEMBERSHIP_TYPE, extra={groupId, memberId, memberType})` gives,
    written out because it runs once per membership."""
    relationship: JsonObject = {
        "_key": membership_key(group_id, member_id),
        "_type": MEMBERSHIP_TYPE,
        "_class": "HAS",
        "_fromEntityKey": group_id,
        "_toEntityKey": member_id,
        "displayName": "HAS",
        "groupId": group_id,
        "memberId": member_id,
    }
    if member_type is not None:
        relationship["memberType"] = member_type
    return relationship


def map_member_change(group_id: str, member: JsonMapping) -> list[Op]:
    """The operations for one `members@delta` entry of group `group_id`.

    - removed (`@removed`): `[Delete]` of the membership relationship;
    - added or present: `[Upsert]` of the membership relationship (`azure_group_has_member` for every
      member kind, from the group to the member, with `groupId`, `memberId` and `memberType` = the raw
      `@odata.type`), followed, for a member that is neither a user nor a group, by the `Upsert` of its
      `azure_group_member` placeholder entity (placement family `PLACEHOLDER_FAMILY`, key = member id), so
      the caller can reference-count placeholders.
    """
    member_id: str = member["id"]
    placement = _membership_placement(group_id)
    if "@removed" in member:
        return [Delete(placement, membership_key(group_id, member_id))]
    relationship = Upsert(placement, membership_relationship(group_id, member_id, member.get("@odata.type")))
    if _target_type(member) is not None:
        return [relationship]
    return [relationship, Upsert(entity_placement(PLACEHOLDER_FAMILY, member_id), placeholder_entity(member))]
