"""Fill a tenant with a realistic, deterministic directory, fast.

100,000 users, 10,000 groups and 1,000,000 memberships take a few seconds: objects are built as
plain dicts in tight loops, a group's user members are a window of a shuffled user list turned
into a dict with `dict.fromkeys` (C speed), and the whole load is one tenant mutation
(`SimTenant.bulk_load`), so no per-membership journal entry is kept.

The shape follows real tenants: mostly members with a few guests and disabled accounts, a handful
of role-assignable security groups, Microsoft 365 groups next to security groups and
distribution lists, and a power-law-ish group size distribution (a few groups of thousands,
most small), plus some nested groups and device / service principal / contact members.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from monitor.simulator.clock import graph_datetime
from monitor.simulator.properties import (
    CONTACT_TYPE,
    DEVICE_TYPE,
    GROUP_TYPE,
    SERVICE_PRINCIPAL_TYPE,
    USER_TYPE,
)
from monitor.simulator.tenant import SimTenant


def _words(text: str) -> tuple[str, ...]:
    """A word list written as one string (as a literal list it would be a hundred lines)."""
    return tuple(text.split())


FIRST_NAMES = _words(
    "Adele Alex Allan Amara Ana Anders Aria Ben Bianca Carlos Chen Christie Dana Daniel Debra Diego "
    "Elena Emily Enrico Fatima Felix Grace Hana Henrietta Isaiah Ivan Jana Javier Johanna Joni Kenji "
    "Laura Lee Lidia Lynne Maria Megan Miriam Nestor Nia Noah Olga Omar Patti Pradeep Priya Quentin Raul "
    "Rita Sakura Sam Sofia Tariq Uma Victor Wei Xavier Yara Yusuf Zoe"
)
LAST_NAMES = _words(
    "Adams Alvarez Anderson Bauer Brown Chen Cohen Costa Diaz Dubois Evans Fernandez Fischer Garcia "
    "Gupta Hansen Hernandez Ito Jensen Johnson Kim Kowalski Kumar Larsen Lee Lopez Martin Meyer Miller "
    "Moreau Muller Nakamura Nguyen Novak Okafor Olsen Patel Perez Petrov Rossi Sanchez Schmidt Silva "
    "Singh Smith Suzuki Tanaka Taylor Wagner Walker Wang Williams Wilson Wong Yamamoto Young Zhang"
)
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Engineering Manager", "SRE", "Architect"),
    "Sales": ("Account Executive", "Sales Manager", "Sales Engineer", "Inside Sales Rep"),
    "Marketing": ("Marketing Manager", "Content Strategist", "Product Marketing Manager"),
    "Finance": ("Accountant", "Financial Analyst", "Controller", "CFO"),
    "Human Resources": ("HR Generalist", "Recruiter", "HR Business Partner"),
    "IT": ("IT Administrator", "Helpdesk Technician", "Security Analyst", "CISO"),
    "Legal": ("Counsel", "Paralegal", "General Counsel"),
    "Operations": ("Operations Manager", "Logistics Coordinator", "Facilities Manager"),
    "Support": ("Support Engineer", "Customer Success Manager", "Support Lead"),
}
OFFICES = ("Seattle 1/1001", "Redmond 2/2203", "London 4/410", "Berlin 3/301", "Tokyo 7/702", "Sydney 1/120")
LOCALES = (("en-US", "US"), ("en-GB", "GB"), ("de-DE", "DE"), ("ja-JP", "JP"), ("en-AU", "AU"), ("fr-FR", "FR"))
GUEST_DOMAINS = ("fabrikam.com", "northwindtraders.com", "adatum.com", "tailspintoys.com", "gmail.com")
ADMIN_GROUPS = (
    "Global Administrators",
    "Privileged Role Administrators",
    "Security Administrators",
    "Exchange Administrators",
    "Helpdesk Administrators",
)
TEAM_WORDS = (
    "Team",
    "All Staff",
    "Leads",
    "Project Phoenix",
    "Project Atlas",
    "Contractors",
    "EMEA",
    "APAC",
    "Americas",
)


@dataclass(frozen=True)
class SeedResult:
    version: int
    users: int
    groups: int
    memberships: int
    objects: int


class _Builder:
    """Builds the seed's dicts from one deterministic random source."""

    def __init__(self, tenant: SimTenant, rng: random.Random) -> None:
        self.tenant = tenant
        self.rng = rng
        now = tenant.clock.now()
        # A shared pool of creation times: varied, but one string object per value.
        self.times = [graph_datetime(now - timedelta(minutes=rng.randrange(5 * 365 * 1440))) for _ in range(2000)]
        self.upn_counts: dict[str, int] = {}

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _unique(self, base: str) -> str:
        count = self.upn_counts.get(base, 0)
        self.upn_counts[base] = count + 1
        return base if count == 0 else f"{base}{count}"

    def user(self, guest: bool, enabled: bool) -> dict[str, Any]:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        language, country = rng.choice(LOCALES)
        handle = self._unique(f"{first}.{last}".lower())
        user: dict[str, Any] = {
            "id": self.new_id(),
            "displayName": f"{first} {last}",
            "givenName": first,
            "surname": last,
            "preferredLanguage": language,
            "usageLocation": country,
            "accountEnabled": enabled,
            "createdDateTime": rng.choice(self.times),
        }
        if guest:
            external = rng.choice(GUEST_DOMAINS)
            user["mail"] = f"{handle}@{external}"
            user["userPrincipalName"] = f"{handle}_{external}#EXT#@{self.tenant.domain}"
            user["userType"] = "Guest"
            user["businessPhones"] = []
            return user
        department = rng.choice(tuple(DEPARTMENTS))
        upn = f"{handle}@{self.tenant.domain}"
        user.update(
            userPrincipalName=upn,
            mail=upn,
            userType="Member",
            department=department,
            jobTitle=rng.choice(DEPARTMENTS[department]),
            officeLocation=rng.choice(OFFICES),
            businessPhones=[f"+1 425 555 {rng.randrange(10000):04d}"],
        )
        if rng.random() < 0.6:
            user["mobilePhone"] = f"+1 206 555 {rng.randrange(10000):04d}"
        return user

    def group(self, index: int, admin_name: str | None) -> dict[str, Any]:
        rng = self.rng
        if admin_name is not None:
            return self._security(admin_name, role_assignable=True)
        name = f"{rng.choice(tuple(DEPARTMENTS))} {rng.choice(TEAM_WORDS)} {index}"
        roll = rng.random()
        if roll < 0.35:
            return self._unified(name)
        if roll < 0.9:
            return self._security(name, role_assignable=False)
        return self._distribution(name)

    def _base(self, name: str) -> dict[str, Any]:
        nickname = "".join(ch for ch in name.lower() if ch.isalnum())
        return {
            "id": self.new_id(),
            "displayName": name,
            "mailNickname": nickname,
            "createdDateTime": self.rng.choice(self.times),
        }

    def _unified(self, name: str) -> dict[str, Any]:
        group = self._base(name)
        group.update(
            description=f"Microsoft 365 group for {name}",
            mailEnabled=True,
            securityEnabled=False,
            mail=f"{group['mailNickname']}@{self.tenant.domain}",
            groupTypes=["Unified"],
            visibility=self.rng.choice(("Private", "Public")),
            renewedDateTime=group["createdDateTime"],
            isAssignableToRole=False,
        )
        return group

    def _security(self, name: str, *, role_assignable: bool) -> dict[str, Any]:
        group = self._base(name)
        group.update(mailEnabled=False, securityEnabled=True, groupTypes=[], isAssignableToRole=role_assignable)
        if role_assignable:
            group.update(description=f"Members hold the {name[:-1]} role", visibility="Private")
        return group

    def _distribution(self, name: str) -> dict[str, Any]:
        group = self._base(name)
        group.update(
            mailEnabled=True,
            securityEnabled=False,
            groupTypes=[],
            mail=f"{group['mailNickname']}@{self.tenant.domain}",
            classification="Internal",
        )
        return group

    def other_object(self, index: int) -> dict[str, Any]:
        kind = (DEVICE_TYPE, DEVICE_TYPE, SERVICE_PRINCIPAL_TYPE, CONTACT_TYPE)[index % 4]
        obj: dict[str, Any] = {"@odata.type": kind, "id": self.new_id()}
        if kind == DEVICE_TYPE:
            obj.update(displayName=f"DESKTOP-{index:05d}", deviceId=self.new_id(), operatingSystem="Windows")
            obj.update(operatingSystemVersion="10.0.22631", accountEnabled=True)
        elif kind == SERVICE_PRINCIPAL_TYPE:
            obj.update(displayName=f"Automation App {index}", appId=self.new_id(), servicePrincipalType="Application")
            obj["accountEnabled"] = True
        else:
            first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
            obj.update(displayName=f"{first} {last} (vendor)", givenName=first, surname=last)
            obj.update(mail=f"{first}.{last}@{self.rng.choice(GUEST_DOMAINS)}".lower(), jobTitle="Vendor contact")
        return obj


def group_sizes(total: int, groups: int, cap: int, rng: random.Random) -> list[int]:
    """`groups` sizes summing to about `total`: weight 1/sqrt(rank), so a few groups hold thousands."""
    if groups == 0 or total <= 0 or cap <= 0:
        return [0] * groups
    weights = [1 / (rank + 1) ** 0.5 for rank in range(groups)]
    scale = total / sum(weights)
    sizes = [min(cap, int(w * scale)) for w in weights]
    short, rank = total - sum(sizes), 0
    while short > 0 and rank < groups * 4:
        index = rank % groups
        if sizes[index] < cap:
            sizes[index] += 1
            short -= 1
        rank += 1
    rng.shuffle(sizes)
    return sizes


def seed(
    tenant: SimTenant,
    users: int = 100,
    groups: int = 10,
    memberships: int = 500,
    *,
    nested_groups: int | None = None,
    other_members: int | None = None,
    guest_share: float = 0.05,
    disabled_share: float = 0.03,
    rng_seed: int = 1,
) -> SeedResult:
    """Add `users` users, `groups` groups and about `memberships` memberships to `tenant`.

    `nested_groups` (default 1% of groups) group-in-group memberships and `other_members`
    (default 0.5% of memberships) device / service principal / contact memberships are part of
    the `memberships` total. Deterministic for a given tenant state and `rng_seed`.
    """
    rng = random.Random(f"{rng_seed}:{tenant.tenant_id}:{tenant.version}")
    builder = _Builder(tenant, rng)
    nested = groups // 100 if nested_groups is None else nested_groups
    others = memberships // 200 if other_members is None else other_members
    user_list = [builder.user(rng.random() < guest_share, rng.random() >= disabled_share) for _ in range(users)]
    admins = ADMIN_GROUPS[: min(len(ADMIN_GROUPS), groups // 10 + 1)] if groups else ()
    group_list = [builder.group(i, admins[i] if i < len(admins) else None) for i in range(groups)]
    objects = [builder.other_object(i) for i in range(min(others, max(4, others // 2)))]
    members = _memberships(rng, user_list, group_list, memberships - nested - others, len(admins))
    placed = _nest(rng, group_list, members, nested, len(admins))
    placed += _attach_others(rng, group_list, members, objects, others)
    version = tenant.bulk_load(user_list, group_list, members, objects)
    total = sum(len(m) for m in members.values())
    return SeedResult(version, len(user_list), len(group_list), total, len(objects))


def _memberships(
    rng: random.Random, users: list[dict[str, Any]], groups: list[dict[str, Any]], total: int, admins: int
) -> dict[str, dict[str, str]]:
    """User memberships: a window of a shuffled user list per group; admin groups stay small."""
    ids = [user["id"] for user in users]
    rng.shuffle(ids)
    count = len(ids)
    admin_sizes = [min(count, rng.randint(2, 8)) for _ in range(admins)]
    sizes = admin_sizes + group_sizes(max(0, total - sum(admin_sizes)), len(groups) - admins, count, rng)
    members: dict[str, dict[str, str]] = {}
    for group, size in zip(groups, sizes, strict=True):
        start = rng.randrange(count) if count else 0
        window = ids[start : start + size]
        if len(window) < size:
            window += ids[: size - len(window)]
        members[group["id"]] = dict.fromkeys(window, USER_TYPE)
    return members


def _nest(
    rng: random.Random, groups: list[dict[str, Any]], members: dict[str, dict[str, str]], count: int, admins: int
) -> int:
    """Group-in-group memberships, parent before child in list order so there are no cycles."""
    placed, attempts = 0, 0
    while placed < count and attempts < count * 10 and len(groups) - admins >= 2:
        attempts += 1
        parent = rng.randrange(admins, len(groups) - 1)
        child = groups[rng.randrange(parent + 1, len(groups))]["id"]
        parent_members = members[groups[parent]["id"]]
        if child not in parent_members:
            parent_members[child] = GROUP_TYPE
            placed += 1
    return placed


def _attach_others(
    rng: random.Random,
    groups: list[dict[str, Any]],
    members: dict[str, dict[str, str]],
    objects: list[dict[str, Any]],
    count: int,
) -> int:
    placed, attempts = 0, 0
    while placed < count and attempts < count * 10 and objects and groups:
        attempts += 1
        obj = rng.choice(objects)
        group_members = members[rng.choice(groups)["id"]]
        if obj["id"] not in group_members:
            group_members[obj["id"]] = obj["@odata.type"]
            placed += 1
    return placed
