"""Plausible day-to-day changes in a simulated tenant: joins, leaves, renames, disables, deletions.

Used by `monitor demo` (a tenant that changes every few seconds) and by end-to-end benchmarks.
Each step makes one change and says what it did in words a newcomer understands. Membership changes
are made by someone, as in a real tenant: an administrator (a user of the tenant) or an automation
app, which the tenant's directory audit log records (monitor.simulator.audit). A group nested in a
privileged one gets joins of its own, so that effective membership changes too. The first steps
are a fixed opening that shows each kind of change once; then they are random.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor.simulator.audit import app_initiator, user_initiator
from monitor.simulator.tenant import SimTenant

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Frances", "Dennis", "Radia", "Tim")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Allen", "Ritchie")
TITLES = ("Analyst", "Engineer", "Director of Finance", "Security Officer", "Recruiter", "Sales Lead", "Architect")
# The automation that changes memberships besides the administrators (ids fixed so runs compare).
AUTOMATION = app_initiator("7a0c2f5e-1d3b-4c6a-9e8f-0b1a2c3d4e5f", "HR Sync", "3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f")


@dataclass(frozen=True)
class Step:
    kind: str
    description: str


class TenantActivity:
    """Makes one realistic change per `step()`, weighted towards membership changes."""

    def __init__(self, tenant: SimTenant, *, seed: int = 7, admins: int = 2) -> None:
        self.tenant = tenant
        self.rng = random.Random(seed)
        self.admins = sorted(tenant.users)[:admins]  # the users who administer the tenant
        self._actions: list[tuple[int, Callable[[], Step | None]]] = [
            (5, self.join),
            (3, self.leave),
            (2, self.join_privileged),
            (2, self.join_nested),
            (2, self.rename),
            (2, self.new_title),
            (1, self.disable),
            (1, self.hire),
            (1, self.soft_delete),
        ]
        self._opening: list[Callable[[], Step | None]] = [self.join_nested, self.join_privileged]

    def step(self) -> Step:
        while self._opening:
            step = self._opening.pop(0)()
            if step is not None:
                return step
        for _ in range(20):
            weights = [weight for weight, _ in self._actions]
            _, action = self.rng.choices(self._actions, weights=weights)[0]
            step = action()
            if step is not None:
                return step
        return self.hire()

    # -- the actions ------------------------------------------------------------------------
    def join(self) -> Step | None:
        group = self._group(privileged=False)
        user = self._user(outside=group)
        if group is None or user is None:
            return None
        by = self._add(group, user)
        return Step("join", f"{by} added {self._name(user)} to the group '{self._group_name(group)}'")

    def join_privileged(self) -> Step | None:
        group = self._group(privileged=True)
        user = self._user(outside=group)
        if group is None or user is None:
            return None
        by = self._add(group, user)
        return Step("join", f"{by} added {self._name(user)} to the privileged group '{self._group_name(group)}'")

    def join_nested(self) -> Step | None:
        """Someone joins a group that is itself a member of a privileged group."""
        nested = sorted(
            (child, parent)
            for parent, props in self.tenant.groups.items()
            if props.get("isAssignableToRole")
            for child, kind in self.tenant.members.get(parent, {}).items()
            if child in self.tenant.groups and kind.endswith("group")
        )
        if not nested:
            return None
        child, parent = self.rng.choice(nested)
        user = self._user(outside=child, nor=parent)  # someone who does not hold the privilege yet
        if user is None:
            return None
        by = self._add(child, user)
        return Step(
            "join",
            f"{by} added {self._name(user)} to the group '{self._group_name(child)}', "
            f"which is a member of the privileged group '{self._group_name(parent)}'",
        )

    def leave(self) -> Step | None:
        candidates = [g for g, members in self.tenant.members.items() if members and g in self.tenant.groups]
        if not candidates:
            return None
        group = self.rng.choice(candidates)
        member = self.rng.choice(sorted(self.tenant.members[group]))
        initiator = self._initiator()
        self.tenant.remove_member(group, member, initiator=initiator)
        by = self._initiator_name(initiator)
        return Step("leave", f"{by} removed {self._name(member)} from the group '{self._group_name(group)}'")

    def _add(self, group: str, member: str) -> str:
        initiator = self._initiator()
        self.tenant.add_member(group, member, initiator=initiator)
        return self._initiator_name(initiator)

    def _initiator(self) -> dict[str, Any]:
        """An administrator, or now and then the automation app."""
        admins = [user for user in self.admins if user in self.tenant.users]
        if not admins or self.rng.random() < 0.3:
            return AUTOMATION
        return user_initiator(self.tenant.users[self.rng.choice(admins)])

    @staticmethod
    def _initiator_name(initiator: dict[str, Any]) -> str:
        identity = initiator.get("user") or initiator.get("app") or {}
        return str(identity.get("displayName") or "someone")

    def rename(self) -> Step | None:
        user = self._user()
        if user is None:
            return None
        old = self._name(user)
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        self.tenant.update_user(user, displayName=f"{first} {last}", givenName=first, surname=last)
        return Step("rename", f"{old} was renamed to {first} {last}")

    def new_title(self) -> Step | None:
        user = self._user()
        if user is None:
            return None
        title = self.rng.choice(TITLES)
        self.tenant.update_user(user, jobTitle=title)
        return Step("update", f"{self._name(user)} is now '{title}'")

    def disable(self) -> Step | None:
        enabled = [u for u, props in self.tenant.users.items() if props.get("accountEnabled", True)]
        if not enabled:
            return None
        user = self.rng.choice(sorted(enabled))
        self.tenant.update_user(user, accountEnabled=False)
        return Step("disable", f"{self._name(user)}'s account was disabled")

    def hire(self) -> Step:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        number = self.rng.randrange(100, 999)
        domain = self.tenant.organization["verifiedDomains"][0]["name"]
        self.tenant.add_user(
            displayName=f"{first} {last}",
            givenName=first,
            surname=last,
            userPrincipalName=f"{first.lower()}.{last.lower()}{number}@{domain}",
            mail=f"{first.lower()}.{last.lower()}{number}@{domain}",
            jobTitle=self.rng.choice(TITLES),
            accountEnabled=True,
            userType="Member",
        )
        return Step("hire", f"{first} {last} joined the company (new user)")

    def soft_delete(self) -> Step | None:
        if len(self.tenant.users) < 5:
            return None
        user = self._user()
        if user is None:
            return None
        name = self._name(user)
        self.tenant.soft_delete_user(user)
        return Step("delete", f"{name} was deleted (to the recycle bin)")

    # -- helpers -----------------------------------------------------------------------------
    def _user(self, outside: str | None = None, nor: str | None = None) -> str | None:
        users = sorted(set(self.tenant.users) - set(self.admins))
        for group in (outside, nor):
            if group is not None:
                members = self.tenant.members.get(group, {})
                users = [u for u in users if u not in members]
        return self.rng.choice(users) if users else None

    def _group(self, *, privileged: bool) -> str | None:
        groups = sorted(
            g for g, props in self.tenant.groups.items() if bool(props.get("isAssignableToRole")) == privileged
        )
        return self.rng.choice(groups) if groups else None

    def _name(self, object_id: str) -> str:
        obj = (
            self.tenant.users.get(object_id) or self.tenant.groups.get(object_id) or self.tenant.objects.get(object_id)
        )
        return str((obj or {}).get("displayName") or object_id)

    def _group_name(self, group_id: str) -> str:
        return str(self.tenant.groups[group_id].get("displayName", group_id))
