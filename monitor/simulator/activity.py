"""Plausible day-to-day changes in a simulated tenant: joins, leaves, renames, disables, deletions.

Used by `monitor demo` (a tenant that changes every few seconds) and by end-to-end benchmarks.
Each step makes one change and says what it did in words a newcomer understands.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from monitor.simulator.tenant import SimTenant

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Frances", "Dennis", "Radia", "Tim")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Allen", "Ritchie")
TITLES = ("Analyst", "Engineer", "Director of Finance", "Security Officer", "Recruiter", "Sales Lead", "Architect")


@dataclass(frozen=True)
class Step:
    kind: str
    description: str


class TenantActivity:
    """Makes one realistic change per `step()`, weighted towards membership changes."""

    def __init__(self, tenant: SimTenant, *, seed: int = 7) -> None:
        self.tenant = tenant
        self.rng = random.Random(seed)
        self._actions: list[tuple[int, Callable[[], Step | None]]] = [
            (5, self.join),
            (3, self.leave),
            (2, self.join_privileged),
            (2, self.rename),
            (2, self.new_title),
            (1, self.disable),
            (1, self.hire),
            (1, self.soft_delete),
        ]

    def step(self) -> Step:
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
        self.tenant.add_member(group, user)
        return Step("join", f"{self._name(user)} joined the group '{self._group_name(group)}'")

    def join_privileged(self) -> Step | None:
        group = self._group(privileged=True)
        user = self._user(outside=group)
        if group is None or user is None:
            return None
        self.tenant.add_member(group, user)
        return Step("join", f"{self._name(user)} was added to the privileged group '{self._group_name(group)}'")

    def leave(self) -> Step | None:
        candidates = [g for g, members in self.tenant.members.items() if members and g in self.tenant.groups]
        if not candidates:
            return None
        group = self.rng.choice(candidates)
        member = self.rng.choice(sorted(self.tenant.members[group]))
        self.tenant.remove_member(group, member)
        return Step("leave", f"{self._name(member)} left the group '{self._group_name(group)}'")

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
    def _user(self, outside: str | None = None) -> str | None:
        users = sorted(self.tenant.users)
        if outside is not None:
            members = self.tenant.members.get(outside, {})
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
