"""The diff rules, one table row each: before, after, expected change."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.diff import Change, NotComparable, diff

USER = {"_key": "u-0000000001", "_type": "azure_user", "_class": ["User"], "name": "Ada", "active": True}


def user(**changes: Any) -> dict[str, Any]:
    return {**USER, **changes}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(None, None, None, id="nothing"),
        pytest.param(USER, user(), None, id="equal"),
        pytest.param(None, USER, ("upsert", ("_class", "_key", "_type", "active", "name")), id="created"),
        pytest.param(USER, None, ("delete", ("_class", "_key", "_type", "active", "name")), id="deleted"),
        pytest.param(USER, user(name="Ada L."), ("upsert", ("name",)), id="property changed"),
        pytest.param(USER, user(jobTitle="CTO"), ("upsert", ("jobTitle",)), id="property added"),
        pytest.param(user(jobTitle="CTO"), USER, ("upsert", ("jobTitle",)), id="property removed"),
        pytest.param(user(jobTitle=None), USER, None, id="null and absent are the same"),
        pytest.param(USER, user(jobTitle=None), None, id="absent and null are the same"),
        pytest.param(user(active=True), user(active=False), ("upsert", ("active",)), id="boolean flip"),
        pytest.param(user(n=1), user(n=1.0), None, id="1 and 1.0 are equal JSON numbers"),
        pytest.param(user(email=["a@x", "b@x"]), user(email=["b@x", "a@x"]), None, id="reordered array"),
        pytest.param(user(email=["a@x"]), user(email=["a@x", "b@x"]), ("upsert", ("email",)), id="array grew"),
        pytest.param(user(email=["a@x", "a@x"]), user(email=["a@x"]), ("upsert", ("email",)), id="array multiset"),
        pytest.param(user(tags=[1, "a"]), user(tags=["a", 1]), ("upsert", ("tags",)), id="mixed array keeps order"),
        pytest.param(
            user(name="B", active=False), user(name="C", active=True), ("upsert", ("active", "name")), id="two changes"
        ),
    ],
)
def test_diff_rules(
    before: dict[str, Any] | None, after: dict[str, Any] | None, expected: tuple[str, tuple[str, ...]] | None
) -> None:
    change = diff("entity", before, after)
    if expected is None:
        assert change is None
        return
    assert change is not None
    assert (change.op, change.changed) == expected
    assert change == Change(expected[0], "entity", "azure_user", USER["_key"], expected[1], before, after)  # type: ignore[arg-type]


def test_diff_refuses_different_objects() -> None:
    with pytest.raises(NotComparable):
        diff("entity", USER, user(_key="u-0000000002"))


def test_created_and_deleted_objects_list_all_their_properties() -> None:
    created = diff("entity", None, user(jobTitle=None))
    deleted = diff("entity", user(jobTitle=None), None)
    assert created is not None and deleted is not None
    assert created.changed == deleted.changed == ("_class", "_key", "_type", "active", "jobTitle", "name")
