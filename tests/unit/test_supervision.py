"""The supervision engine with real pykka actors and threads.

No sleeps: every wait is on a condition with a deadline, and restart intensity
runs on a fake clock that only the test moves.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from omega.actors import (
    ActorKilled,
    ChildNotRunningError,
    ChildSpec,
    ChildStartError,
    OmegaActor,
    RestartLimitReached,
    SupervisionError,
    SupervisorHandle,
    SupervisorSpec,
    UnknownChildError,
    start_tree,
)
from omega.errors import BrainError
from omega.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Journal:
    """What the actors did, in order, from all their threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, str]] = []

    def add(self, kind: str, name: str) -> None:
        with self._lock:
            self._events.append((kind, name))

    def of(self, kind: str) -> list[str]:
        with self._lock:
            return [name for k, name in self._events if k == kind]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


class Behaviour:
    """Test-controlled behaviour shared by every incarnation of one child."""

    def __init__(self) -> None:
        self.fail_starts = 0
        self.start_gate: threading.Event | None = None
        self.stop_gate: threading.Event | None = None


class Probe(OmegaActor):
    def __init__(self, name: str, journal: Journal, behaviour: Behaviour) -> None:
        super().__init__()
        self.name = name
        self.journal = journal
        self.behaviour = behaviour

    def on_start(self) -> None:
        self.journal.add("start", self.name)
        if self.behaviour.start_gate is not None:
            self.behaviour.start_gate.wait(DEADLINE_S)
        if self.behaviour.fail_starts > 0:
            self.behaviour.fail_starts -= 1
            raise RuntimeError(f"{self.name}: on_start failed")

    def on_stop(self) -> None:
        self.journal.add("stop", self.name)
        if self.behaviour.stop_gate is not None:
            self.behaviour.stop_gate.wait(DEADLINE_S)

    def on_failure(self, *exc_info: Any) -> None:
        self.journal.add("failure", self.name)

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return "pong"
        if message == "boom":
            raise RuntimeError(f"{self.name}: boom")
        if message == "quit":
            self.stop()
            return None
        if isinstance(message, Exception):
            raise message
        return None


class Plain(pykka.ThreadingActor):
    use_daemon_thread = True


def worker(
    name: str, journal: Journal, behaviour: Behaviour | None = None, **kwargs: Any
) -> ChildSpec:
    b = behaviour if behaviour is not None else Behaviour()
    return ChildSpec(name, lambda: Probe.start(name, journal, b), **kwargs)


def sup(name: str, *children: ChildSpec | SupervisorSpec, **kwargs: Any) -> SupervisorSpec:
    return SupervisorSpec(name, children=children, **kwargs)


def node(handle: SupervisorHandle, path: str) -> dict[str, Any]:
    def find(n: dict[str, Any]) -> dict[str, Any] | None:
        if n["path"] == path:
            return n
        for child in n["children"]:
            hit = find(child)
            if hit is not None:
                return hit
        return None

    hit = find(handle.tree())
    assert hit is not None, f"no {path} in tree"
    return hit


def running_with(handle: SupervisorHandle, path: str, restarts: int) -> Callable[[], bool]:
    def cond() -> bool:
        n = node(handle, path)
        return bool(n["state"] == "running" and n["restarts"] == restarts)

    return cond


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def trees(clock: FakeClock) -> Iterator[Callable[..., SupervisorHandle]]:
    started: list[SupervisorHandle] = []

    def start(spec: SupervisorSpec, **kwargs: Any) -> SupervisorHandle:
        kwargs.setdefault("clock", clock)
        handle = start_tree(spec, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        assert handle.stop(timeout=DEADLINE_S)


# --- start, stop, shape ----------------------------------------------------------


def test_children_start_in_order_and_stop_in_reverse(trees: Any, journal: Journal) -> None:
    spec = sup("root", worker("a", journal), worker("b", journal), worker("c", journal))
    handle = trees(spec)
    assert journal.of("start") == ["a", "b", "c"]
    assert handle.state == "running"
    assert [c["state"] for c in handle.tree()["children"]] == ["running"] * 3
    assert handle.ref("b").ask("ping") == "pong"

    assert handle.stop(timeout=DEADLINE_S)
    assert journal.of("stop") == ["c", "b", "a"]
    assert handle.state == "stopped"
    assert handle.error is None
    assert [c["state"] for c in handle.tree()["children"]] == ["stopped"] * 3
    assert handle.wait(0)


def test_tree_is_nested_plain_data(trees: Any, journal: Journal) -> None:
    spec = sup(
        "root",
        worker("a", journal, restart="transient"),
        sup("sub", worker("x", journal), strategy="rest_for_one"),
    )
    tree = trees(spec).tree()
    assert tree == {
        "name": "root",
        "path": "root",
        "kind": "supervisor",
        "strategy": "one_for_one",
        "state": "running",
        "restart": "permanent",
        "restarts": 0,
        "ask_failures": 0,
        "last_exit": None,
        "children": [
            {
                "name": "a",
                "path": "root.a",
                "kind": "worker",
                "state": "running",
                "restart": "transient",
                "restarts": 0,
                "ask_failures": 0,
                "last_exit": None,
                "children": [],
            },
            {
                "name": "sub",
                "path": "root.sub",
                "kind": "supervisor",
                "strategy": "rest_for_one",
                "state": "running",
                "restart": "permanent",
                "restarts": 0,
                "ask_failures": 0,
                "last_exit": None,
                "children": [
                    {
                        "name": "x",
                        "path": "root.sub.x",
                        "kind": "worker",
                        "state": "running",
                        "restart": "permanent",
                        "restarts": 0,
                        "ask_failures": 0,
                        "last_exit": None,
                        "children": [],
                    }
                ],
            },
        ],
    }


# --- strategies ------------------------------------------------------------------


def test_one_for_one_restarts_only_the_failed_child(trees: Any, journal: Journal) -> None:
    handle = trees(sup("root", worker("a", journal), worker("b", journal), worker("c", journal)))
    a, b, c = handle.ref("a"), handle.ref("b"), handle.ref("c")
    journal.clear()

    b.tell("boom")
    wait_for(running_with(handle, "root.b", 1), DEADLINE_S, "b restarted")
    assert journal.of("failure") == ["b"]
    assert journal.of("start") == ["b"]
    assert journal.of("stop") == []
    assert handle.ref("a") is a and handle.ref("c") is c
    assert handle.ref("b") is not b and not b.is_alive()
    assert handle.ref("b").ask("ping") == "pong"
    assert node(handle, "root.b")["last_exit"].startswith("crash: RuntimeError: b: boom")


def test_one_for_all_restarts_every_child(trees: Any, journal: Journal) -> None:
    spec = sup(
        "root", worker("a", journal), worker("b", journal), worker("c", journal),
        strategy="one_for_all",
    )  # fmt: skip
    handle = trees(spec)
    journal.clear()

    handle.ref("b").tell("boom")
    wait_for(
        lambda: all(running_with(handle, f"root.{n}", 1)() for n in "abc"),
        DEADLINE_S,
        "all restarted",
    )
    assert journal.of("stop") == ["c", "a"]  # the others, in reverse order
    assert journal.of("start") == ["a", "b", "c"]  # then all, in order


def test_rest_for_one_restarts_the_failed_child_and_those_after_it(
    trees: Any, journal: Journal
) -> None:
    names = "abcd"
    spec = sup("root", *(worker(n, journal) for n in names), strategy="rest_for_one")
    handle = trees(spec)
    a = handle.ref("a")
    journal.clear()

    handle.ref("b").tell("boom")
    wait_for(
        lambda: all(running_with(handle, f"root.{n}", 1)() for n in "bcd"),
        DEADLINE_S,
        "b, c, d restarted",
    )
    assert journal.of("stop") == ["d", "c"]
    assert journal.of("start") == ["b", "c", "d"]
    assert handle.ref("a") is a
    assert node(handle, "root.a")["restarts"] == 0


# --- restart types ---------------------------------------------------------------


def test_permanent_child_restarts_after_normal_exit_and_crash(trees: Any, journal: Journal) -> None:
    handle = trees(sup("root", worker("p", journal)))
    handle.ref("p").tell("quit")  # the actor stops itself: a normal exit
    wait_for(running_with(handle, "root.p", 1), DEADLINE_S, "p restarted after a normal exit")
    assert node(handle, "root.p")["last_exit"] == "normal"
    handle.ref("p").tell("boom")
    wait_for(running_with(handle, "root.p", 2), DEADLINE_S, "p restarted after a crash")


def test_transient_child_restarts_only_after_abnormal_exit(trees: Any, journal: Journal) -> None:
    handle = trees(
        sup(
            "root",
            worker("crashes", journal, restart="transient"),
            worker("quits", journal, restart="transient"),
        )
    )
    handle.ref("crashes").tell("boom")
    wait_for(
        running_with(handle, "root.crashes", 1), DEADLINE_S, "transient restarted after a crash"
    )

    handle.ref("quits").tell("quit")
    wait_for(
        lambda: node(handle, "root.quits")["state"] == "stopped", DEADLINE_S, "transient stopped"
    )
    assert node(handle, "root.quits")["restarts"] == 0
    with pytest.raises(ChildNotRunningError):
        handle.ref("quits")


def test_temporary_child_is_never_restarted(trees: Any, journal: Journal) -> None:
    handle = trees(
        sup(
            "root",
            worker("crashes", journal, restart="temporary"),
            worker("quits", journal, restart="temporary"),
        )
    )
    handle.ref("crashes").tell("boom")
    handle.ref("quits").tell("quit")
    wait_for(
        lambda: node(handle, "root.crashes")["state"] == "failed", DEADLINE_S, "temporary failed"
    )
    wait_for(
        lambda: node(handle, "root.quits")["state"] == "stopped", DEADLINE_S, "temporary stopped"
    )
    assert journal.of("start") == ["crashes", "quits"]
    assert handle.state == "running"


def test_temporary_sibling_is_not_restarted_by_one_for_all(trees: Any, journal: Journal) -> None:
    spec = sup(
        "root",
        worker("a", journal),
        worker("tmp", journal, restart="temporary"),
        worker("b", journal),
        strategy="one_for_all",
    )
    handle = trees(spec)
    journal.clear()
    handle.ref("a").tell("boom")
    wait_for(running_with(handle, "root.b", 1), DEADLINE_S, "b restarted")
    assert journal.of("stop") == ["b", "tmp"]
    assert journal.of("start") == ["a", "b"]
    assert node(handle, "root.tmp")["state"] == "stopped"


def test_transient_that_ended_normally_restarts_with_its_siblings_as_in_otp(
    trees: Any, journal: Journal
) -> None:
    spec = sup(
        "root", worker("a", journal), worker("t", journal, restart="transient"),
        strategy="one_for_all",
    )  # fmt: skip
    handle = trees(spec)
    handle.ref("t").tell("quit")
    wait_for(lambda: node(handle, "root.t")["state"] == "stopped", DEADLINE_S, "t stopped")
    handle.ref("a").tell("boom")
    wait_for(running_with(handle, "root.t", 1), DEADLINE_S, "t started again by one_for_all")


# --- failure kinds ---------------------------------------------------------------


def test_expected_ask_error_goes_to_caller_and_actor_keeps_running(
    trees: Any, journal: Journal
) -> None:
    handle = trees(sup("root", worker("a", journal)))
    ref = handle.ref("a")
    with pytest.raises(BrainError, match="refused"):
        ref.ask(BrainError("refused"), timeout=DEADLINE_S)
    wait_for(lambda: node(handle, "root.a")["ask_failures"] == 1, DEADLINE_S, "ask failure counted")
    assert ref.ask("ping", timeout=DEADLINE_S) == "pong"
    assert handle.ref("a") is ref
    assert node(handle, "root.a")["restarts"] == 0


def test_unexpected_ask_error_goes_to_caller_and_restarts_the_actor(
    trees: Any, journal: Journal
) -> None:
    handle = trees(sup("root", worker("a", journal)))
    ref = handle.ref("a")
    with pytest.raises(KeyError, match="missing"):
        ref.ask(KeyError("missing"), timeout=DEADLINE_S)
    wait_for(
        running_with(handle, "root.a", 1), DEADLINE_S, "a restarted after an unexpected ask error"
    )
    a = node(handle, "root.a")
    assert a["ask_failures"] == 1
    assert a["last_exit"].startswith("crash: AskHandlerError: ask handler raised KeyError")
    assert journal.of("failure") == ["a"]  # the old incarnation cleaned up via on_failure
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("ping", timeout=DEADLINE_S)
    assert handle.ref("a").ask("ping", timeout=DEADLINE_S) == "pong"


def test_failing_on_start_during_restart_is_retried_and_counted(
    trees: Any, journal: Journal
) -> None:
    flaky = Behaviour()
    handle = trees(sup("root", worker("a", journal, flaky), max_restarts=5))
    flaky.fail_starts = 1
    handle.ref("a").tell("boom")
    # crash -> restart whose on_start fails -> retried -> up: two restarts.
    wait_for(running_with(handle, "root.a", 2), DEADLINE_S, "a up after a failed restart")
    assert journal.of("start") == ["a", "a", "a"]


def test_failed_start_inside_a_one_for_all_restart_retries_the_whole_group(
    trees: Any, journal: Journal
) -> None:
    flaky = Behaviour()
    spec = sup(
        "root",
        worker("a", journal),
        worker("b", journal, flaky),
        worker("c", journal),
        strategy="one_for_all",
        max_restarts=5,
    )
    handle = trees(spec)
    journal.clear()
    flaky.fail_starts = 1
    handle.ref("a").tell("boom")
    # stop c, b; start a, b (fails: c is never tried); retry: stop a; start a, b, c.
    wait_for(running_with(handle, "root.c", 1), DEADLINE_S, "c up after the retried restart")
    assert journal.of("stop") == ["c", "b", "a"]
    assert journal.of("start") == ["a", "b", "a", "b", "c"]
    assert [c["restarts"] for c in handle.tree()["children"]] == [2, 2, 1]


def test_failing_on_start_at_boot_fails_the_tree_and_stops_earlier_children(
    journal: Journal, clock: FakeClock
) -> None:
    bad = Behaviour()
    bad.fail_starts = 1
    spec = sup("root", worker("a", journal), worker("b", journal, bad), worker("c", journal))
    with pytest.raises(ChildStartError) as info:
        start_tree(spec, clock=clock)
    assert info.value.path == "root.b"
    assert "on_start failed" in info.value.reason
    assert journal.of("start") == ["a", "b"]
    assert journal.of("stop") == ["a"]


def test_start_callable_that_raises_fails_the_tree(journal: Journal, clock: FakeClock) -> None:
    def broken() -> pykka.ActorRef[Any]:
        raise OSError("no such device")

    spec = sup("root", worker("a", journal), ChildSpec("b", broken))
    with pytest.raises(ChildStartError, match="no such device") as info:
        start_tree(spec, clock=clock)
    assert isinstance(info.value.__cause__, OSError)  # the original error, for the log
    assert journal.of("stop") == ["a"]


def test_start_must_return_an_omega_actor(clock: FakeClock) -> None:
    refs: list[pykka.ActorRef[Any]] = []

    def plain() -> pykka.ActorRef[Any]:
        ref = Plain.start()
        refs.append(ref)
        return ref

    with pytest.raises(ChildStartError, match="OmegaActor"):
        start_tree(sup("root", ChildSpec("p", plain)), clock=clock)
    wait_for(lambda: not refs[0].is_alive(), DEADLINE_S, "the foreign actor stopped")


def test_killed_actor_is_an_abnormal_exit_so_transient_restarts(
    trees: Any, journal: Journal
) -> None:
    handle = trees(sup("root", worker("t", journal, restart="transient")))
    old = handle.ref("t")
    handle.kill("root.t")
    wait_for(running_with(handle, "root.t", 1), DEADLINE_S, "t restarted after kill")
    assert node(handle, "root.t")["last_exit"] == "killed: ActorKilled: root.t killed"
    assert journal.of("failure") == ["t"]
    assert not old.is_alive()
    handle.kill("t")  # a unique leaf name works too
    wait_for(running_with(handle, "root.t", 2), DEADLINE_S, "t restarted after the second kill")


def test_actor_stopped_from_outside_is_seen(trees: Any, journal: Journal) -> None:
    handle = trees(sup("root", worker("p", journal), worker("t", journal, restart="transient")))
    assert handle.ref("p").stop(timeout=DEADLINE_S)
    wait_for(
        running_with(handle, "root.p", 1), DEADLINE_S, "permanent restarted after an outside stop"
    )
    assert handle.ref("t").stop(timeout=DEADLINE_S)
    wait_for(
        lambda: node(handle, "root.t")["state"] == "stopped", DEADLINE_S, "transient left stopped"
    )


# --- restart intensity -------------------------------------------------------------


def test_too_many_restarts_make_the_root_give_up(
    trees: Any, journal: Journal, clock: FakeClock
) -> None:
    gave_up: list[SupervisionError] = []
    spec = sup(
        "root", worker("a", journal), worker("b", journal), worker("c", journal),
        max_restarts=2, within_s=5.0,
    )  # fmt: skip
    handle = trees(spec, on_give_up=gave_up.append)
    for n in (1, 2):
        handle.ref("b").tell("boom")
        wait_for(running_with(handle, "root.b", n), DEADLINE_S, f"restart {n}")
    journal.clear()
    handle.ref("b").tell("boom")  # the third within 5 s (the clock did not move)

    assert handle.wait(DEADLINE_S)
    assert handle.state == "failed"
    assert len(gave_up) == 1  # on_give_up has run by the time wait() returns
    error = gave_up[0]
    assert handle.error is error
    assert isinstance(error, RestartLimitReached)
    assert (error.path, error.child, error.max_restarts) == ("root", "root.b", 2)
    assert journal.of("stop") == ["c", "a"]  # the rest, in reverse order
    assert [c["state"] for c in handle.tree()["children"]] == ["stopped", "failed", "stopped"]


def test_restarts_outside_the_window_do_not_add_up(
    trees: Any, journal: Journal, clock: FakeClock
) -> None:
    handle = trees(sup("root", worker("a", journal), max_restarts=2, within_s=5.0))
    for n in (1, 2):
        handle.ref("a").tell("boom")
        wait_for(running_with(handle, "root.a", n), DEADLINE_S, f"restart {n}")
    clock.now += 5.0
    for n in (3, 4):
        handle.ref("a").tell("boom")
        wait_for(running_with(handle, "root.a", n), DEADLINE_S, f"restart {n}")
    assert handle.state == "running"


# --- nested supervisors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", ""), ("rest_for_one", "b"), ("one_for_all", "ab")],
)
def test_child_supervisor_giving_up_is_restarted_by_its_parent(
    trees: Any, journal: Journal, strategy: str, restarted: str
) -> None:
    spec = sup(
        "root",
        worker("a", journal),
        sup("sub", worker("x", journal), worker("y", journal), max_restarts=1),
        worker("b", journal),
        strategy=strategy,
    )
    handle = trees(spec)
    refs = {n: handle.ref(n) for n in "ab"}
    handle.ref("x").tell("boom")
    wait_for(running_with(handle, "root.sub.x", 1), DEADLINE_S, "x restarted by sub")
    journal.clear()

    handle.ref("x").tell("boom")  # sub's second restart within its window: it gives up
    wait_for(running_with(handle, "root.sub", 1), DEADLINE_S, "sub restarted by root")
    for n in "ab":
        if n in restarted:
            wait_for(running_with(handle, f"root.{n}", 1), DEADLINE_S, f"{n} restarted by root")
        else:
            assert handle.ref(n) is refs[n]
    sub = node(handle, "root.sub")
    assert sub["last_exit"].startswith("crash: RestartLimitReached: root.sub:")
    # A fresh incarnation of sub: fresh children.
    assert [(c["state"], c["restarts"]) for c in sub["children"]] == [("running", 0)] * 2
    assert handle.ref("sub.x").ask("ping", timeout=DEADLINE_S) == "pong"
    stops = journal.of("stop")
    assert stops[0] == "y"  # sub stopped its surviving child first
    assert stops[1:] == {"": [], "b": ["b"], "ab": ["b", "a"]}[restarted]


def test_giving_up_escalates_through_nested_supervisors_to_the_root(
    trees: Any, journal: Journal
) -> None:
    gave_up: list[SupervisionError] = []
    spec = sup(
        "root",
        worker("a", journal),
        sup("sub", worker("x", journal), max_restarts=0),
        max_restarts=0,
    )
    handle = trees(spec, on_give_up=gave_up.append)
    handle.ref("x").tell("boom")
    assert handle.wait(DEADLINE_S)
    assert len(gave_up) == 1
    assert isinstance(gave_up[0], RestartLimitReached)
    assert (gave_up[0].path, gave_up[0].child) == ("root", "root.sub")
    assert isinstance(gave_up[0].__cause__, RestartLimitReached)
    assert journal.of("stop") == ["a"]
    assert node(handle, "root.sub")["state"] == "failed"


def test_killing_a_child_supervisor_restarts_it(trees: Any, journal: Journal) -> None:
    handle = trees(sup("root", sup("sub", worker("x", journal), worker("y", journal))))
    journal.clear()
    handle.kill("sub")
    wait_for(running_with(handle, "root.sub", 1), DEADLINE_S, "sub restarted")
    assert journal.of("stop") == ["y", "x"]
    assert journal.of("start") == ["x", "y"]
    assert node(handle, "root.sub")["last_exit"] == "killed: ActorKilled: root.sub killed"


def test_on_give_up_may_call_back_into_the_handle(trees: Any, journal: Journal) -> None:
    seen: list[tuple[bool, bool, str]] = []

    def on_give_up(error: SupervisionError) -> None:
        seen.append((handle.stop(timeout=DEADLINE_S), handle.wait(0), handle.state))

    handle = trees(sup("root", worker("a", journal), max_restarts=0), on_give_up=on_give_up)
    handle.ref("a").tell("boom")
    assert handle.wait(DEADLINE_S)
    assert seen == [(True, True, "failed")]


def test_killing_the_root_gives_up(trees: Any, journal: Journal) -> None:
    gave_up: list[SupervisionError] = []
    handle = trees(sup("root", worker("a", journal)), on_give_up=gave_up.append)
    handle.kill("root")
    assert handle.wait(DEADLINE_S)
    assert [type(e) for e in gave_up] == [ActorKilled]
    assert journal.of("stop") == ["a"]


# --- timeouts ------------------------------------------------------------------------


def test_child_that_does_not_stop_in_time_is_abandoned(
    trees: Any, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = Behaviour()
    stuck.stop_gate = threading.Event()
    spec = sup(
        "root", worker("a", journal), worker("stuck", journal, stuck, shutdown_s=0.2),
        worker("c", journal),
    )  # fmt: skip
    handle = trees(spec)
    try:
        with caplog.at_level(logging.WARNING, logger="omega.actors"):
            assert handle.stop(timeout=DEADLINE_S)
        assert journal.of("stop") == ["c", "stuck", "a"]  # a was not held up for long
        assert node(handle, "root.stuck")["last_exit"] == "abandoned: did not stop within 0.2 s"
        assert any(r.getMessage() == "child abandoned" for r in caplog.records)
    finally:
        stuck.stop_gate.set()


def test_child_whose_on_start_hangs_fails_the_start(journal: Journal, clock: FakeClock) -> None:
    slow = Behaviour()
    slow.start_gate = threading.Event()
    spec = sup("root", worker("a", journal), worker("slow", journal, slow, start_timeout_s=0.2))
    try:
        with pytest.raises(ChildStartError, match=r"on_start did not finish within 0\.2 s"):
            start_tree(spec, clock=clock)
        assert journal.of("stop") == ["a"]
    finally:
        slow.start_gate.set()


# --- names and thread safety ---------------------------------------------------------


def test_names_resolve_by_path_or_unique_suffix(trees: Any, journal: Journal) -> None:
    spec = sup(
        "root",
        worker("a", journal),
        sup("s1", worker("x", journal)),
        sup("s2", worker("x", journal)),
    )
    handle = trees(spec)
    assert handle.ref("a") is handle.ref("root.a")
    assert handle.ref("s1.x") is handle.ref("root.s1.x")
    assert handle.ref("s1.x") is not handle.ref("s2.x")
    with pytest.raises(UnknownChildError, match="ambiguous"):
        handle.ref("x")
    with pytest.raises(UnknownChildError, match="no such child"):
        handle.kill("nope")
    with pytest.raises(UnknownChildError, match="supervisor"):
        handle.ref("s1")


def test_introspection_is_safe_from_another_thread_during_restarts(
    trees: Any, journal: Journal
) -> None:
    handle = trees(sup("root", worker("a", journal), worker("b", journal), max_restarts=10))
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        for _ in range(5000):  # bounded
            if done.is_set():
                return
            try:
                handle.tree()
                handle.ref("a")
            except ChildNotRunningError:
                pass
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 6):
            handle.kill("a")
            wait_for(running_with(handle, "root.a", n), DEADLINE_S, f"restart {n}")
    finally:
        done.set()
        thread.join(DEADLINE_S)
    assert errors == []
    assert node(handle, "root.b")["restarts"] == 0


def test_unsupervised_omega_actor_still_works(journal: Journal) -> None:
    ref = Probe.start("solo", journal, Behaviour())
    try:
        with pytest.raises(BrainError):
            ref.ask(BrainError("no"), timeout=DEADLINE_S)
        assert ref.ask("ping", timeout=DEADLINE_S) == "pong"
        with pytest.raises(ValueError):
            ref.ask(ValueError("bug"), timeout=DEADLINE_S)
        wait_for(
            lambda: not ref.is_alive(), DEADLINE_S, "the actor crashed after an unexpected error"
        )
    finally:
        ref.stop(block=False)


# --- process exit --------------------------------------------------------------------

_GIVE_UP_SCRIPT = """
import os, sys, threading
from omega.actors import ChildSpec, OmegaActor, SupervisorSpec, start_tree

class Crasher(OmegaActor):
    def on_start(self):
        self.actor_ref.tell("boom")

    def on_receive(self, message):
        raise RuntimeError(message)

mode = sys.argv[1]
gave_up = threading.Event()

def on_give_up(error):
    print(f"gave up: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    if mode == "os_exit":
        os._exit(1)
    gave_up.set()

spec = SupervisorSpec(
    "root", max_restarts=2, within_s=60.0, children=(ChildSpec("crasher", Crasher.start),)
)
handle = start_tree(spec, on_give_up=on_give_up)
if not handle.wait(timeout=20):
    sys.exit(3)
# wait() returns only after on_give_up has returned; handle.error says why.
assert gave_up.is_set() and handle.error is not None
sys.exit(1)
"""


@pytest.mark.parametrize("mode", ["main_thread", "os_exit"])
def test_process_exits_non_zero_when_the_root_gives_up(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", _GIVE_UP_SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "gave up: RestartLimitReached: root: more than 2 restarts" in result.stderr
