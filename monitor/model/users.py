"""Users: `azure_user` entities and `microsoft_365_account_has_azure_user` (pure).

Mapping of docs/jupiterone.md 1.2 (the public integration's property names), made to satisfy the
current data model's `User` class (section 13): `username`, `email` and `shortLoginId` are arrays of
strings or null, `firstName`/`lastName`/`email`/`shortLoginId`/`username` are always present, and `name` /
`displayName` are always strings.

Sign-in activity cannot be selected on `/users/delta` (Graph answers 400); it comes from a separate
`GET /users?$select=id,signInActivity` sweep and is merged with `with_sign_in`. Its sub-fields keep the
public integration's names and types (it spreads `signInActivity` onto the user, so the timestamps are
Graph's ISO strings and existing J1QL comparing them keeps working), and each timestamp also comes as
epoch milliseconds under an `...On` name (`lastSignInOn`, ...), the form J1QL date comparisons need
(docs/jupiterone-types.md).
"""

from __future__ import annotations

from monitor.model.account import ACCOUNT_TYPE
from monitor.model.common import direct_relationship, epoch_ms, relationship_key
from monitor.model.types import Delete, JsonMapping, JsonObject, Upsert, entity_placement, relationship_placement

USER_FAMILY = "azure_user"
USER_TYPE = "azure_user"
USER_CLASS = "User"

# `$select` of `GET /users/delta`. Only what the mapping reads: delta tracks only selected properties, so
# selecting more (the public integration also asked for `businessPhones`, and never mapped it) would only
# bring users back for changes that map to nothing.
USER_SELECT: tuple[str, ...] = (
    "id",
    "displayName",
    "givenName",
    "surname",
    "userPrincipalName",
    "mail",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "usageLocation",
    "userType",
    "accountEnabled",
)

# signInActivity sub-field -> the epoch-ms twin of a timestamp (None: not a timestamp).
_SIGN_IN_FIELDS: tuple[tuple[str, str | None], ...] = (
    ("lastSignInDateTime", "lastSignInOn"),
    ("lastSignInRequestId", None),
    ("lastNonInteractiveSignInDateTime", "lastNonInteractiveSignInOn"),
    ("lastNonInteractiveSignInRequestId", None),
    ("lastSuccessfulSignInDateTime", "lastSuccessfulSignInOn"),
    ("lastSuccessfulSignInRequestId", None),
)
SIGN_IN_PROPERTIES: tuple[str, ...] = tuple(
    name for field, twin in _SIGN_IN_FIELDS for name in (field, twin) if name is not None
)
_SIGN_IN_SET = frozenset(SIGN_IN_PROPERTIES)


# Copied as they are when set (the public integration's names).
_PLAIN_PROPERTIES = (
    "userPrincipalName",
    "givenName",
    "surname",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "usageLocation",
    "userType",
)


def _user_entity(user: JsonMapping) -> JsonObject:
    # Hot path (one call per user per round): the optional properties are added only when set, rather than
    # built as None and filtered, which costs a second pass over the dict.
    get = user.get
    user_id: str = user["id"]
    display_name: str | None = get("displayName")
    upn: str | None = get("userPrincipalName")
    mail: str | None = get("mail")
    given_name: str | None = get("givenName")
    surname: str | None = get("surname")
    name = display_name or upn or user_id
    tokens = display_name.split() if display_name and not (given_name and surname) else None
    entity: JsonObject = {
        "_key": user_id,
        "_type": USER_TYPE,
        "_class": [USER_CLASS],
        "id": user_id,
        "name": name,
        "displayName": name,
        # Required by the data model's User class: present, null when unknown.
        "username": [upn] if upn else None,
        "shortLoginId": [upn.partition("@")[0] or upn] if upn else None,
        "email": [mail] if mail else None,
        "firstName": given_name or (tokens[0] if tokens else None),
        "lastName": surname or (tokens[-1] if tokens else None),
    }
    for prop in _PLAIN_PROPERTIES:
        value = get(prop)
        if value is not None:
            entity[prop] = value
    if mail:
        entity["mail"] = mail
    enabled: bool | None = get("accountEnabled")
    if enabled is not None:
        entity["active"] = enabled
        entity["accountEnabled"] = enabled
    return entity


def map_user(user: JsonMapping, *, account_key: str) -> list[Upsert]:
    """The `azure_user` entity and the account's HAS relationship for one Graph user (from `/users/delta`).

    The object must be whole: an absent property is one that is not set. A delta update that carries only
    some properties is merged onto the user's last known state first (`monitor.model.graph_state`).
    Fallbacks: `name`/`displayName` = displayName, else the UPN, else the id;
    `firstName`/`lastName` = givenName/surname, else the first/last whitespace token of displayName;
    `shortLoginId` = the UPN before `@` (the whole UPN when it has no `@`). A removed user (`@removed`)
    raises ValueError: use `user_removed`.
    """
    if "@removed" in user:
        raise ValueError(f"user {user.get('id')!r} is removed; use user_removed")
    entity = _user_entity(user)
    user_id: str = entity["_key"]
    relationship = direct_relationship(ACCOUNT_TYPE, account_key, "HAS", USER_TYPE, user_id)
    return [
        Upsert(entity_placement(USER_FAMILY, user_id), entity),
        Upsert(relationship_placement(USER_FAMILY, user_id), relationship),
    ]


def user_removed(user_id: str, *, account_key: str) -> list[Delete]:
    """The deletions for a removed user: its entity and the account's HAS relationship."""
    return [
        Delete(entity_placement(USER_FAMILY, user_id), user_id),
        Delete(relationship_placement(USER_FAMILY, user_id), relationship_key(account_key, "HAS", user_id)),
    ]


def sign_in_properties(sign_in_activity: JsonMapping | None) -> JsonObject:
    """The known `signInActivity` sub-fields under the public integration's names and as Graph sends
    them, and each timestamp's epoch-ms twin (`lastSignInDateTime` -> `lastSignInOn`).

    Unknown keys (`@odata.type`, fields Microsoft adds later) are ignored; absent or None fields are left
    out. A malformed timestamp raises ValueError.
    """
    if not sign_in_activity:
        return {}
    result: JsonObject = {}
    for name, twin in _SIGN_IN_FIELDS:
        value = sign_in_activity.get(name)
        if value is None:
            continue
        result[name] = value
        if twin is not None:
            result[twin] = epoch_ms(value)
    return result


def sign_in_of(user_entity: JsonMapping) -> JsonObject:
    """The sign-in properties an `azure_user` entity carries (to carry them over to a re-mapped user)."""
    return {k: v for k, v in user_entity.items() if k in _SIGN_IN_SET}


def with_sign_in(user_entity: JsonMapping, sign_in: JsonMapping) -> JsonObject:
    """A new entity: `user_entity` with its sign-in properties replaced by `sign_in` (from
    `sign_in_properties` or `sign_in_of`; None values are left out). Keys of `sign_in` outside
    `SIGN_IN_PROPERTIES` raise ValueError.
    """
    unknown = sign_in.keys() - _SIGN_IN_SET
    if unknown:
        raise ValueError(f"not sign-in properties: {sorted(unknown)}")
    merged = dict(user_entity)
    for name in SIGN_IN_PROPERTIES:
        merged.pop(name, None)
    for name, value in sign_in.items():
        if value is not None:
            merged[name] = value
    return merged
