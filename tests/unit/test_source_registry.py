"""The one list of sources (monitor.source_registry) and the modules that read it."""

from __future__ import annotations

import importlib

import pytest

from monitor.cli import build_parser
from monitor.graph.subscriptions import RESOURCES
from monitor.hints import SOURCE_JOBS, Hint
from monitor.permissions import NEEDED_FOR
from monitor.simulator.graph_metadata import check_request
from monitor.source_registry import (
    BY_RESOURCE,
    DELTA,
    MEMBERSHIP_SOURCE,
    NAMES,
    SOURCES,
    SYNC_DEFAULT,
    scheduled,
    source,
    sync_selection,
)
from monitor.sync import source_runner


def test_every_source_runs_and_its_module_agrees_on_its_name() -> None:
    for entry in SOURCES:
        assert callable(source_runner(entry))
        module, _, attribute = entry.runs.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        if entry.reading == "delta":
            assert target.name == entry.name  # the DeltaSource's own name: its delta link and status
            assert entry.permission in NEEDED_FOR
        else:
            assert entry.permission is None  # only a delta round proves a permission by succeeding


def test_the_registry_is_what_the_hints_the_scheduler_and_the_webhook_know() -> None:
    assert frozenset(NAMES) == SOURCE_JOBS
    assert all(Hint.from_fields({"tenant": "t", "job": name}) is not None for name in NAMES)
    assert scheduled("delta") == ("account", "users", "groups")
    assert scheduled("sweep") == ("signins", "intune")
    assert scheduled("incremental") == ("intune_live",)
    assert set(scheduled("delta")) | set(scheduled("sweep")) | set(scheduled("incremental")) == set(NAMES)
    assert {BY_RESOURCE[path]: path for path in BY_RESOURCE} == RESOURCES
    assert set(RESOURCES) <= set(DELTA)  # a notification is answered by a delta round
    assert MEMBERSHIP_SOURCE in DELTA


def test_notified_resources_are_graph_collections() -> None:
    for path in RESOURCES.values():
        assert check_request("GET", f"/v1.0{path}", {}) == []


def test_monitor_sync_offers_an_option_per_optional_source() -> None:
    optional = [s.name for s in SOURCES if s.sync_option is not None]
    args = build_parser().parse_args(["sync", *(f"--{name.replace('_', '-')}" for name in optional)])
    assert args.handler.__name__ == "_sync"
    assert all(getattr(args, name) for name in optional)
    assert sync_selection(set(optional)) == NAMES
    assert sync_selection() == SYNC_DEFAULT
    assert all(s.sync_option is None for s in SOURCES if s.name in SYNC_DEFAULT)


def test_an_unknown_source_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown source 'nope'.*users"):
        source("nope")
