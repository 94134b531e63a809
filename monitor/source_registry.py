"""The one list of sources: what each is, how it runs, when it runs and whether Graph notifies it.

Every other module reads this table instead of naming sources (docs/architecture.md, "Package
layout"): the hint jobs (`monitor.hints`), the runner (`monitor.sync.run_source`), the scheduler's
jobs, the webhook's and the subscription manager's resources, the first sync of an onboarded
tenant, `monitor sync`'s options, status and the metrics. It is data only, in the infrastructure
layer: it imports no source code. A source's code is named by `runs` (`"module:attribute"`) and
resolved by the runtime (`monitor.sync.source_runner`), so importing this table never imports a
source.

Adding a source: write its module under `monitor/sources/` and add one `Source` here, in the
order `monitor sync` and status should list it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitor.keys import DIRECTORY_LEASE

# How a source reads Graph: `delta` rounds (a saved delta link, docs/graph.md 7-8) or a `sweep`
# that reads its whole resource again each time.
Reading = Literal["delta", "sweep"]
# Which scheduler job asks for it (monitor.scheduler): `delta` every `MONITOR_DELTA_INTERVAL`
# (the safety net for notifications, docs/graph.md 5.4), `sweep` every tenant `polling_interval`,
# `incremental` every `MONITOR_INTUNE_INCREMENTAL_INTERVAL` for tenants that are swept.
Schedule = Literal["delta", "sweep", "incremental"]


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # the hint job, the status entry, the change records' `source`
    reading: Reading
    # `"module:attribute"`: for a delta source a `DeltaSource` class taking the `SourceContext`; for
    # a sweep `async (context, *, progress, on_records) -> RoundResult` (monitor.sync.source_runner).
    runs: str
    schedule: Schedule
    # The Graph resource subscribed to for change notifications (docs/graph.md 2), or None when
    # Graph has no notifications for it (the timer alone brings it).
    notified_by: str | None = None
    # The permission a delta round proves granted, or whose 403 it records as missing (docs/graph.md 7.1).
    permission: str | None = None
    # The lease its runs hold (`TenantKeys.lease`); sources that write the same objects share one.
    lease: str = ""
    # A first sync after onboarding runs it only when one of these is granted; () runs it always.
    needs_any_of: tuple[str, ...] = ()
    # `monitor sync --<name>` and its help, for a source not run by plain `monitor sync`; None: always run.
    sync_option: str | None = None
    # Part of an onboarded tenant's first sync (with `needs_any_of`); a pass that only follows up a
    # sweep is not.
    in_first_sync: bool = True
    # Skipped, not waited for, while its lease is held: a pass that another run's reading covers.
    skip_while_busy: bool = False

    @property
    def lease_name(self) -> str:
        return self.lease or self.name


SOURCES: tuple[Source, ...] = (
    Source("account", "sweep", "monitor.sources.account:refresh_account", "delta"),
    Source(
        "users",
        "delta",
        "monitor.sources.users:UsersSource",
        "delta",
        notified_by="/users",
        permission="User.Read.All",
        # A user's deletion moves memberships, which the groups round writes too
        # (monitor.sources.parking): the two rounds of a tenant never overlap.
        lease=DIRECTORY_LEASE,
    ),
    Source(
        "groups",
        "delta",
        "monitor.sources.groups:GroupsSource",
        "delta",
        notified_by="/groups",
        permission="GroupMember.Read.All",
        lease=DIRECTORY_LEASE,
    ),
    Source(
        "signins",
        "sweep",
        "monitor.sources.signins:sweep_sign_ins",
        "sweep",
        needs_any_of=("AuditLog.Read.All",),
        sync_option="also sweep users' sign-in activity",
    ),
    Source(
        "intune",
        "sweep",
        "monitor.sources.intune:sweep_intune",
        "sweep",
        needs_any_of=(
            "DeviceManagementManagedDevices.Read.All",
            "DeviceManagementConfiguration.Read.All",
            "DeviceManagementApps.Read.All",
        ),
        sync_option="also run one Intune and account sweep",
    ),
    Source(
        "intune_live",
        "sweep",
        "monitor.sources.intune_live:run_incremental",
        "incremental",
        # Under the sweep's lease, skipped while a sweep runs (the sweep reads everything): the two
        # never write the same objects at once (monitor.sources.intune_live).
        lease="intune",
        skip_while_busy=True,
        in_first_sync=False,
        sync_option="also run one incremental Intune pass (devices that synced, new Intune audit events)",
    ),
)
BY_NAME: dict[str, Source] = {source.name: source for source in SOURCES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
# The sources `monitor sync` runs without options (in order).
SYNC_DEFAULT: tuple[str, ...] = tuple(s.name for s in SOURCES if s.sync_option is None)
# Sources read with delta queries: they keep a delta link and a delta permission.
DELTA: tuple[str, ...] = tuple(s.name for s in SOURCES if s.reading == "delta")
# source name -> the Graph resource its change notifications come for, and back.
NOTIFIED: dict[str, str] = {s.name: s.notified_by for s in SOURCES if s.notified_by is not None}
BY_RESOURCE: dict[str, str] = {resource: name for name, resource in NOTIFIED.items()}
# The source whose first complete round is the tenant's membership baseline: alert and
# effective-membership rules start after it (monitor.sinks.alerts, monitor.sinks.effective).
MEMBERSHIP_SOURCE = "groups"


def source(name: str) -> Source:
    """The source called `name`; ValueError names the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r} (known: {', '.join(NAMES)})") from None


def scheduled(schedule: Schedule) -> tuple[str, ...]:
    """The sources the scheduler's `schedule` job asks for, in order."""
    return tuple(s.name for s in SOURCES if s.schedule == schedule)


def sync_selection(options: set[str] | frozenset[str] = frozenset()) -> tuple[str, ...]:
    """What `monitor sync` runs: the default sources and those whose option is in `options`, in order."""
    return tuple(s.name for s in SOURCES if s.sync_option is None or s.name in options)
