"""Alert rules (pure): the `[[alert]]` tables of the configuration, which group membership changes raise
an alert and where it goes (README, "Alerts").

The rules are part of the pure core (docs/architecture.md, "Layers"): `monitor.alerts` evaluates
them and imports nothing that does I/O. `monitor.settings` reads them from the environment and the
tenants file, and re-exports them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AlertEvent = Literal["added", "removed"]


class AlertRule(BaseModel):
    """Which group membership changes raise an alert, and where the alert goes.

    A rule watches groups by id, by a display-name pattern (shell-style, case-insensitive, e.g.
    `*admin*`), and/or every role-assignable group; at least one of the three must be given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    groups: tuple[str, ...] = ()
    group_name_pattern: str | None = None
    role_assignable: bool = False
    events: tuple[AlertEvent, ...] = ("added", "removed")
    # Members that are groups (nested groups) count as members too.
    include_nested: bool = True
    # "log", "jsonl:PATH" or "webhook:URL" (JSON POST signed with MONITOR_WEBHOOK_SECRET).
    send_to: tuple[str, ...] = ("log",)
    # More removals than this from one group in one batch of changes raise one mass-removal
    # alert instead of one alert each.
    mass_removal_threshold: int = Field(default=20, ge=1)
    # Also alert when someone gains or loses membership of a watched group through nested groups
    # (monitor.effective): "U is now an effective member of A through B".
    effective: bool = False
    # More members than this gaining (or losing) effective membership of one group at once (a large
    # group nested into a watched one) raise one alert with a count and a sample.
    effective_fold_threshold: int = Field(default=20, ge=1)

    @field_validator("send_to")
    @classmethod
    def _destinations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for destination in value:
            kind, _, target = destination.partition(":")
            if not (
                destination == "log"
                or (kind == "jsonl" and target)
                or (kind == "webhook" and target.startswith(("https://", "http://")))
            ):
                raise ValueError(f"unknown alert destination {destination!r}: use log, jsonl:PATH or webhook:URL")
        return value

    @model_validator(mode="after")
    def _watches_something(self) -> AlertRule:
        if not (self.groups or self.group_name_pattern or self.role_assignable):
            raise ValueError(
                f"alert rule {self.name!r} watches nothing: set groups, group_name_pattern or role_assignable"
            )
        return self

    @property
    def webhooks(self) -> tuple[str, ...]:
        return tuple(d.partition(":")[2] for d in self.send_to if d.startswith("webhook:"))
