"""Supervision as data and as pure decisions: specs, restart rules, plans, intensity."""

from __future__ import annotations

import math
from typing import Any

import pykka
import pytest

from omega.actors import ChildSpec, SpecError, SupervisorSpec
from omega.actors.strategy import RestartIntensity, restart_plan, wants_restart
from omega.errors import OmegaError


def _never() -> pykka.ActorRef[Any]:
    raise AssertionError("specs are data; nothing here starts")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- specs -----------------------------------------------------------------------


def test_child_spec_defaults() -> None:
    spec = ChildSpec("store", _never)
    assert (spec.restart, spec.shutdown_s, spec.start_timeout_s) == ("permanent", 5.0, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"name": ""}, "invalid_name", "name"),
        ({"name": "a.b"}, "invalid_name", "name"),
        ({"name": 3}, "invalid_name", "name"),
        ({"start": "Store.start"}, "invalid_start", "start"),
        ({"restart": "sometimes"}, "invalid_restart_type", "restart"),
        ({"restart": None}, "invalid_restart_type", "restart"),
        ({"shutdown_s": -1.0}, "invalid_shutdown", "shutdown_s"),
        ({"shutdown_s": math.inf}, "invalid_shutdown", "shutdown_s"),
        ({"shutdown_s": True}, "invalid_shutdown", "shutdown_s"),
        ({"start_timeout_s": 0}, "invalid_start_timeout", "start_timeout_s"),
    ],
)
def test_child_spec_rejects_bad_fields(kwargs: dict[str, Any], code: str, field: str) -> None:
    args: dict[str, Any] = {"name": "store", "start": _never, **kwargs}
    with pytest.raises(SpecError) as info:
        ChildSpec(**args)
    assert (info.value.code, info.value.field) == (code, field)
    assert isinstance(info.value, OmegaError)
    assert code in str(info.value)


def test_zero_shutdown_is_allowed() -> None:
    assert ChildSpec("x", _never, shutdown_s=0).shutdown_s == 0


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"strategy": "one_for_some"}, "invalid_strategy", "strategy"),
        ({"max_restarts": -1}, "invalid_intensity", "max_restarts"),
        ({"max_restarts": 1.5}, "invalid_intensity", "max_restarts"),
        ({"max_restarts": False}, "invalid_intensity", "max_restarts"),
        ({"within_s": 0}, "invalid_period", "within_s"),
        ({"within_s": math.nan}, "invalid_period", "within_s"),
        ({"restart": "forever"}, "invalid_restart_type", "restart"),
        ({"children": "abc"}, "invalid_children", "children"),
        ({"children": (object(),)}, "invalid_children", "children"),
        (
            {"children": (ChildSpec("a", _never), ChildSpec("a", _never))},
            "duplicate_child_name",
            "children",
        ),
    ],
)
def test_supervisor_spec_rejects_bad_fields(kwargs: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        SupervisorSpec("root", **kwargs)
    assert (info.value.code, info.value.field) == (code, field)


def test_supervisor_spec_is_plain_frozen_data() -> None:
    leaf = ChildSpec("a", _never)
    sub = SupervisorSpec("sub", children=[leaf])  # type: ignore[arg-type]  # stored as a tuple
    root = SupervisorSpec("root", "rest_for_one", 2, 1.0, (sub, ChildSpec("b", _never)))
    assert sub.children == (leaf,)
    assert root == SupervisorSpec("root", "rest_for_one", 2, 1.0, (sub, ChildSpec("b", _never)))
    assert hash(root) == hash(
        SupervisorSpec("root", "rest_for_one", 2, 1.0, (sub, ChildSpec("b", _never)))
    )
    with pytest.raises(AttributeError):
        root.max_restarts = 5  # type: ignore[misc]


def test_same_name_in_different_supervisors_is_fine() -> None:
    a = SupervisorSpec("a", children=(ChildSpec("x", _never),))
    b = SupervisorSpec("b", children=(ChildSpec("x", _never),))
    assert len(SupervisorSpec("root", children=(a, b)).children) == 2


# --- decisions -------------------------------------------------------------------


def test_wants_restart_table() -> None:
    assert wants_restart("permanent", abnormal=False)
    assert wants_restart("permanent", abnormal=True)
    assert not wants_restart("transient", abnormal=False)
    assert wants_restart("transient", abnormal=True)
    assert not wants_restart("temporary", abnormal=False)
    assert not wants_restart("temporary", abnormal=True)


def test_restart_plans() -> None:
    one = restart_plan("one_for_one", 4, 1)
    assert (one.stop, one.start) == ((), (1,))
    all_ = restart_plan("one_for_all", 4, 1)
    assert (all_.stop, all_.start) == ((3, 2, 0), (0, 1, 2, 3))
    rest = restart_plan("rest_for_one", 4, 1)
    assert (rest.stop, rest.start) == ((3, 2), (1, 2, 3))
    last = restart_plan("rest_for_one", 4, 3)
    assert (last.stop, last.start) == ((), (3,))
    with pytest.raises(ValueError):
        restart_plan("one_for_one", 2, 2)


def test_intensity_allows_max_restarts_within_the_window() -> None:
    clock = FakeClock()
    window = RestartIntensity(max_restarts=2, within_s=5.0, clock=clock)
    assert window.add()
    assert window.add()
    assert not window.add()  # a third inside 5 s


def test_intensity_window_slides() -> None:
    clock = FakeClock()
    window = RestartIntensity(max_restarts=2, within_s=5.0, clock=clock)
    assert window.add()  # t=100
    clock.now += 3.0
    assert window.add()  # t=103
    clock.now += 2.0
    assert window.add()  # t=105: the one at 100 is exactly 5 s old and out
    assert len(window) == 2
    clock.now += 1.0
    assert not window.add()  # t=106: 103, 105, 106


def test_zero_max_restarts_gives_up_at_once() -> None:
    assert not RestartIntensity(0, 1.0, FakeClock()).add()
