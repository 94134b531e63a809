"""The in-memory model of one Microsoft 365 tenant's directory: no HTTP here.

Every mutation bumps the tenant-wide `version` and appends to `journal`; delta rounds
(`monitor.simulator.delta`) read the journal from a token's version onwards, so an incremental
round costs what changed, not what exists.

Memory is kept compact for 100,000 users and 1,000,000 memberships: a group's members are one
dict of member id -> `@odata.type` (the member id strings are the very objects used as user ids),
seeded memberships are not journalled one by one (a group created after a token's version is sent
whole anyway), and object dicts are never changed in place but replaced, so a running delta
round can keep references to them as its snapshot. Member dicts are copied on the first write
after a snapshot took them (`_writable_members`).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from monitor.simulator.audit import DirectoryAudit
from monitor.simulator.clock import SimClock, graph_datetime
from monitor.simulator.properties import (
    GROUP_PROPERTIES,
    GROUP_TYPE,
    OBJECT_KINDS,
    OTHER_OBJECT_PROPERTIES,
    SIGN_IN_FIELDS,
    USER_PROPERTIES,
    USER_TYPE,
    check_writable,
)

Resource = Literal["users", "groups"]
ExpiryMode = Literal["410", "syncStateNotFound", "resyncRequired"]

# Journal entry kinds. "created" also covers restores: docs/graph.md 7.4, a restored object
# "reappears as if newly created".
CREATED, UPDATED, SOFT_DELETED, HARD_DELETED = "created", "updated", "softDeleted", "hardDeleted"
MEMBER_ADDED, MEMBER_REMOVED, OTHER = "memberAdded", "memberRemoved", "other"


class Change(NamedTuple):
    """One journal entry. `detail`: changed property names, or (member id, @odata.type)."""

    version: int
    resource: str  # "users", "groups" or "other"
    kind: str
    object_id: str
    detail: Any = None


# Told of every journal entry as it is written; subscriptions.py turns them into notifications.
ChangeObserver = Callable[["SimTenant", Change], None]


@dataclass
class DeltaOptions:
    """How delta rounds are cut into pages (all docs/graph.md 7.2-7.5 behaviours a client must survive).

    - `page_size`: objects per page; docs/graph.md 0.8 "pages of about 200 objects".
    - `page_member_budget`: members@delta entries per page, so a page of large groups stays small.
    - `member_slice`: members@delta entries per appearance of a group; docs/graph.md 7.5, a large
      group's members span pages and the group "can appear again on later pages".
    - `repeat_style`: later appearances carry only `id` + members@delta ("minimal") or the
      selected properties too ("full").
    - `scatter_slices`: place a group's later slices further down the round, not right after.
    - `duplicate_rate`: share of appearances sent twice (docs/graph.md 7.4, "the same entity can
      appear more than once"), chosen deterministically from `seed`.
    - `empty_page_rate`: share of pages that are empty but carry a nextLink (docs/graph.md 7.2).
    - `updated_properties`: what an *updated* object carries. The delta overview
      (https://learn.microsoft.com/en-us/graph/delta-query-overview, "Resource representation in
      the delta query response") promises only "at least the properties that have been updated,
      but additional properties may be included"; the user and group delta pages
      (https://learn.microsoft.com/en-us/graph/api/user-delta,
      https://learn.microsoft.com/en-us/graph/api/group-delta) describe the two ends: every
      selected property by default, only the changed ones under `Prefer: return=minimal`.
      "preference" does what the request asks (the pages' default); "changed" sends only the
      changed properties whatever the request says, "all" every selected one whatever it says
      (and then answers no `Preference-Applied`). New and restored objects always come whole.
    """

    page_size: int = 200
    page_member_budget: int = 2000
    member_slice: int = 100
    repeat_style: Literal["minimal", "full"] = "minimal"
    scatter_slices: bool = False
    duplicate_rate: float = 0.0
    empty_page_rate: float = 0.0
    updated_properties: Literal["preference", "changed", "all"] = "preference"
    seed: int = 1


@dataclass
class TokenExpiry:
    """Delta tokens issued at or before `serial` are refused with `mode` (docs/graph.md 8)."""

    serial: int
    mode: ExpiryMode


@dataclass
class DeltaTokenBook:
    """Serial numbers for issued delta tokens, and the expiries set by `expire()`."""

    serial: int = 0
    expiries: dict[str, TokenExpiry] = field(default_factory=dict)

    def issue(self) -> int:
        self.serial += 1
        return self.serial

    def expire(self, resource: Resource, mode: ExpiryMode) -> None:
        self.expiries[resource] = TokenExpiry(self.serial, mode)

    def refusal(self, resource: str, serial: int) -> ExpiryMode | None:
        expiry = self.expiries.get(resource)
        return expiry.mode if expiry is not None and serial <= expiry.serial else None


def _default_domain(display_name: str) -> str:
    slug = "".join(ch for ch in display_name.lower() if ch.isalnum()) or "tenant"
    return f"{slug}.onmicrosoft.com"


class SimTenant:
    """One tenant: users, groups, memberships, other directory objects, deleted items, journal."""

    def __init__(
        self,
        tenant_id: str,
        display_name: str = "Contoso",
        *,
        domain: str | None = None,
        custom_domain: str | None = None,
        clock: SimClock | None = None,
        premium: bool = True,
        token_lifetime: int = 3599,
        delta: DeltaOptions | None = None,
        rng_seed: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.display_name = display_name
        self.clock = clock or SimClock()
        self.premium = premium  # Entra ID P1/P2: needed to read signInActivity (docs/jupiterone.md 1.2)
        self.token_lifetime = token_lifetime  # expires_in of access tokens; docs/graph.md 11.1 shows 3599
        self.delta = delta or DeltaOptions()
        self.delta_tokens = DeltaTokenBook()
        self.rng = random.Random(rng_seed)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, str]] = {}  # group id -> member id -> @odata.type
        self.objects: dict[str, dict[str, Any]] = {}  # devices, service principals, contacts
        self.sign_ins: dict[str, dict[str, Any]] = {}  # user id -> signInActivity
        self.deleted_users: dict[str, dict[str, Any]] = {}  # directory/deletedItems
        self.deleted_groups: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.journal: list[Change] = []
        self.observers: list[ChangeObserver] = []
        self._snapshots = 0
        self._members_born: dict[str, int] = {}
        self.domain = domain or _default_domain(display_name)
        self.organization = self._organization(custom_domain)
        self.audit = DirectoryAudit(self)  # the directory audit log of membership changes

    def _organization(self, custom_domain: str | None) -> dict[str, Any]:
        domains = [{"name": self.domain, "isDefault": custom_domain is None, "isInitial": True, "type": "Managed"}]
        if custom_domain:
            domains.append({"name": custom_domain, "isDefault": True, "isInitial": False, "type": "Managed"})
        for entry in domains:
            entry["capabilities"] = "Email, OfficeCommunicationsOnline"
        return {
            "id": self.tenant_id,
            "displayName": self.display_name,
            "tenantType": "AAD",
            "countryLetterCode": "US",
            "preferredLanguage": "en",
            "city": "Redmond",
            "state": "WA",
            "country": "United States",
            "postalCode": "98052",
            "street": "One Microsoft Way",
            "createdDateTime": graph_datetime(self.clock.now()),
            "onPremisesSyncEnabled": None,
            "technicalNotificationMails": [f"admin@{self.domain}"],
            "businessPhones": ["+1 425 555 0100"],
            "verifiedDomains": domains,
        }

    # -- journal -------------------------------------------------------------------------

    def _bump(self) -> int:
        self.version += 1
        return self.version

    def _record(self, resource: str, kind: str, object_id: str, detail: Any = None) -> None:
        self._append(Change(self._bump(), resource, kind, object_id, detail))

    def _append(self, change: Change) -> None:
        self.journal.append(change)
        for observer in self.observers:
            observer(self, change)

    def new_id(self) -> str:
        """A deterministic GUID from the tenant's random source."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def now(self) -> str:
        return graph_datetime(self.clock.now())

    # -- snapshots -----------------------------------------------------------------------

    def begin_snapshot(self) -> None:
        """Called by a delta round before it keeps references to member dicts."""
        self._snapshots += 1

    def _writable_members(self, group_id: str) -> dict[str, str]:
        """The group's member dict, copied first if a snapshot may hold it (copy on write)."""
        members = self.members[group_id]
        if self._members_born.get(group_id) != self._snapshots:
            members = dict(members)
            self.members[group_id] = members
            self._members_born[group_id] = self._snapshots
        return members

    # -- users ---------------------------------------------------------------------------

    def add_user(self, **props: Any) -> str:
        """Create a user; only the given properties are set (docs/graph.md 7.3). Returns its id."""
        check_writable(props, USER_PROPERTIES, "user")
        user_id = self.new_id()
        self.users[user_id] = {"id": user_id, "createdDateTime": self.now(), **props}
        self._record("users", CREATED, user_id)
        return user_id

    def update_user(self, user_id: str, **props: Any) -> frozenset[str]:
        """Change properties (None clears one); returns the names whose value really changed."""
        check_writable(props, USER_PROPERTIES, "user")
        changed = _changes(self.users[user_id], props)
        if changed:
            self.users[user_id] = {**self.users[user_id], **{name: props[name] for name in changed}}
            self._record("users", UPDATED, user_id, changed)
        return changed

    def soft_delete_user(self, user_id: str) -> None:
        """Move to deletedItems; memberships are kept (docs/graph.md 7.5)."""
        self.deleted_users[user_id] = self.users.pop(user_id)
        self._record("users", SOFT_DELETED, user_id)

    def restore_user(self, user_id: str) -> None:
        self.users[user_id] = self.deleted_users.pop(user_id)
        self._record("users", CREATED, user_id)

    def hard_delete_user(self, user_id: str) -> None:
        """Delete for good (also purges from deletedItems) and drop every membership (docs/graph.md 7.5)."""
        if self.users.pop(user_id, None) is None and self.deleted_users.pop(user_id, None) is None:
            raise KeyError(user_id)
        self.sign_ins.pop(user_id, None)
        self._drop_from_groups(user_id, USER_TYPE)
        self._record("users", HARD_DELETED, user_id)

    def set_sign_in(
        self, user_id: str, *, interactive: bool = True, success: bool = True, when: str | None = None
    ) -> dict[str, Any]:
        """Record a sign-in in the user's signInActivity (kept apart from the user object)."""
        if user_id not in self.users:
            raise KeyError(user_id)
        moment, request_id = when or self.now(), self.new_id()
        activity = dict(self.sign_ins.get(user_id) or dict.fromkeys(SIGN_IN_FIELDS))
        prefix = "lastSignIn" if interactive else "lastNonInteractiveSignIn"
        activity[f"{prefix}DateTime"], activity[f"{prefix}RequestId"] = moment, request_id
        if success:
            activity["lastSuccessfulSignInDateTime"], activity["lastSuccessfulSignInRequestId"] = moment, request_id
        self.sign_ins[user_id] = activity
        self._record("other", OTHER, user_id)
        return activity

    # -- groups --------------------------------------------------------------------------

    def add_group(self, **props: Any) -> str:
        check_writable(props, GROUP_PROPERTIES, "group")
        group_id = self.new_id()
        self.groups[group_id] = {"id": group_id, "createdDateTime": self.now(), **props}
        self.members[group_id] = {}
        self._members_born[group_id] = self._snapshots
        self._record("groups", CREATED, group_id)
        return group_id

    def update_group(self, group_id: str, **props: Any) -> frozenset[str]:
        check_writable(props, GROUP_PROPERTIES, "group")
        changed = _changes(self.groups[group_id], props)
        if changed:
            self.groups[group_id] = {**self.groups[group_id], **{name: props[name] for name in changed}}
            self._record("groups", UPDATED, group_id, changed)
        return changed

    def soft_delete_group(self, group_id: str) -> None:
        group = self.groups.pop(group_id)
        self.deleted_groups[group_id] = {**group, "deletedDateTime": self.now()}
        self._record("groups", SOFT_DELETED, group_id)

    def restore_group(self, group_id: str) -> None:
        group = self.deleted_groups.pop(group_id)
        self.groups[group_id] = {**group, "deletedDateTime": None}
        self._record("groups", CREATED, group_id)

    def hard_delete_group(self, group_id: str) -> None:
        if self.groups.pop(group_id, None) is None and self.deleted_groups.pop(group_id, None) is None:
            raise KeyError(group_id)
        del self.members[group_id]
        self._members_born.pop(group_id, None)
        self._drop_from_groups(group_id, GROUP_TYPE)
        self._record("groups", HARD_DELETED, group_id)

    # -- memberships ---------------------------------------------------------------------

    def member_type(self, object_id: str) -> str:
        """The @odata.type of an existing (not deleted) directory object."""
        if object_id in self.users:
            return USER_TYPE
        if object_id in self.groups:
            return GROUP_TYPE
        if object_id in self.objects:
            kind: str = self.objects[object_id]["@odata.type"]
            return kind
        raise KeyError(object_id)

    def add_member(self, group_id: str, member_id: str, *, initiator: dict[str, Any] | None = None) -> None:
        """Add a member; the audit log records who did it (`initiator`, an `initiatedBy` object of
        monitor.simulator.audit; the tenant's administrator when None)."""
        if group_id not in self.groups:
            raise KeyError(group_id)
        if member_id == group_id or member_id in self.members[group_id]:
            raise ValueError(f"{member_id} is already a member of {group_id} or is the group itself")
        odata_type = self.member_type(member_id)
        self._writable_members(group_id)[member_id] = odata_type
        self._record("groups", MEMBER_ADDED, group_id, (member_id, odata_type))
        self.audit.membership(group_id, member_id, odata_type, added=True, initiator=initiator)

    def remove_member(self, group_id: str, member_id: str, *, initiator: dict[str, Any] | None = None) -> None:
        if group_id not in self.groups:
            raise KeyError(group_id)
        odata_type = self._writable_members(group_id).pop(member_id)
        self._record("groups", MEMBER_REMOVED, group_id, (member_id, odata_type))
        self.audit.membership(group_id, member_id, odata_type, added=False, initiator=initiator)

    def _drop_from_groups(self, member_id: str, odata_type: str) -> None:
        # A scan of every group's dict (10,000 lookups) is cheaper than a reverse index of
        # 1,000,000 memberships, and hard deletes are rare.
        for group_id in [gid for gid, members in self.members.items() if member_id in members]:
            del self._writable_members(group_id)[member_id]
            self._record("groups", MEMBER_REMOVED, group_id, (member_id, odata_type))

    # -- other directory objects -----------------------------------------------------------

    def add_directory_object(self, kind: str, **props: Any) -> str:
        """A device, servicePrincipal or orgContact that can be a group member."""
        odata_type = OBJECT_KINDS.get(kind, kind)
        if odata_type not in OTHER_OBJECT_PROPERTIES:
            raise ValueError(f"unknown directory object kind {kind!r}")
        check_writable(props, OTHER_OBJECT_PROPERTIES[odata_type], kind)
        object_id = self.new_id()
        self.objects[object_id] = {"@odata.type": odata_type, "id": object_id, **props}
        self._record("other", CREATED, object_id)
        return object_id

    # -- bulk load (seeding) ---------------------------------------------------------------

    def bulk_load(
        self,
        users: Iterable[dict[str, Any]],
        groups: Iterable[dict[str, Any]],
        members: Mapping[str, dict[str, str]],
        objects: Iterable[dict[str, Any]] = (),
    ) -> int:
        """Add many objects as one mutation (one version). Returns that version.

        Memberships may only go to groups created in the same load: they are not journalled,
        and a delta round sends a group created after its token whole, members included.
        """
        version = self._bump()
        loaded: set[str] = set()
        for obj in objects:
            self.objects[obj["id"]] = obj
        for user in users:
            self.users[user["id"]] = user
            self._append(Change(version, "users", CREATED, user["id"]))
        for group in groups:
            self.groups[group["id"]] = group
            self.members[group["id"]] = {}
            self._members_born[group["id"]] = self._snapshots
            self._append(Change(version, "groups", CREATED, group["id"]))
            loaded.add(group["id"])
        for group_id, group_members in members.items():
            if group_id not in loaded:
                raise ValueError(f"bulk_load: members for a group not created in this load: {group_id}")
            self.members[group_id] = group_members
        return version

    # -- reads used by the Graph handlers --------------------------------------------------

    def directory_object(self, object_id: str) -> dict[str, Any] | None:
        """A live user, group or other object with its @odata.type, or None."""
        if object_id in self.users:
            return {"@odata.type": USER_TYPE, **self.users[object_id]}
        if object_id in self.groups:
            return {"@odata.type": GROUP_TYPE, **self.groups[object_id]}
        return self.objects.get(object_id)

    def find_domain(self, name: str) -> bool:
        return any(d["name"].lower() == name.lower() for d in self.organization["verifiedDomains"])

    def stats(self) -> dict[str, int]:
        return {
            "version": self.version,
            "users": len(self.users),
            "groups": len(self.groups),
            "memberships": sum(len(m) for m in self.members.values()),
            "objects": len(self.objects),
            "deletedUsers": len(self.deleted_users),
            "deletedGroups": len(self.deleted_groups),
            "journal": len(self.journal),
        }


def _changes(current: Mapping[str, Any], props: Mapping[str, Any]) -> frozenset[str]:
    """Names whose value differs; clearing a never-set property is no change (it stays absent)."""
    return frozenset(
        name
        for name, value in props.items()
        if (name in current and current[name] != value) or (name not in current and value is not None)
    )
