"""Three replicas in three processes on 127.0.0.1, with the cluster password.

(1) a group forms and commits; followers refuse writes naming the leader;
(2) SIGKILL of the leader: a new leader, and nothing acknowledged is lost;
(3) a follower that was down while the log was compacted installs a snapshot and
    ends with the same state hash;
(4) all three SIGKILLed and restarted from disk: state kept, nothing applied twice.

The apply (raft_node_main.apply) counts every application and every duplicate
id, so a double application shows as applies != distinct ids or dups != 0.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from raft_node_harness import Cluster, Node, wait_for

pytestmark = pytest.mark.slow


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[MakeCluster]:
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path, **kwargs)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.close()
        print(cluster.logs())  # pytest shows captured output only when the test failed


def counts(node: Node) -> dict[str, int]:
    reply = node.request("counts")
    assert reply["ok"], reply
    return reply


def assert_exactly_once(nodes: list[Node], expected_ids: int | None = None) -> None:
    for node in nodes:
        c = counts(node)
        assert c["dups"] == 0, (node.name, c)
        assert c["applies"] == c["ids"] == c["log"], (node.name, c)
        assert not c["boom"], (node.name, c)
        if expected_ids is not None:
            assert c["ids"] == expected_ids, (node.name, c)


def test_group_forms_commits_and_followers_name_the_leader(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory()
    leader = cluster.leader()
    cluster.load_on_leader("a", 200)
    for follower in (n for n in cluster.nodes if n is not leader):
        reply = follower.request("submit", id="on-follower")
        assert reply == {"ok": False, "error": "NotLeader", "leader": leader.address,
                         "message": reply["message"]}
    # An apply that raises is rolled back on every replica, identically.
    reply = cluster.leader().request("submit", id="boom")
    assert reply["error"] == "ApplyError", reply
    digest = cluster.converged()
    assert digest["applied"] >= 201
    assert_exactly_once(cluster.nodes)
    for node in cluster.nodes:
        assert node.request("has_ids", prefix="a", n=200)["n_missing"] == 0


def test_killing_the_leader_elects_another_and_loses_nothing(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory()
    cluster.load_on_leader("pre", 300)
    old = cluster.leader()
    survivors = [n for n in cluster.nodes if n is not old]

    killed_at = time.monotonic()
    old.kill()

    def new_leader() -> Node | None:
        statuses = [n.status() for n in survivors]
        for node, status in zip(survivors, statuses, strict=True):
            if status["role"] == "leader" and status["leader"] == node.address:
                return node
        return None

    leader = wait_for(new_leader, 10, "a new leader after SIGKILL", interval=0.005)
    elected_s = time.monotonic() - killed_at
    print(f"\nnew leader {elected_s * 1000:.0f} ms after SIGKILL of the leader")
    # The figure is reported (see docs/raft.md); the bound here is generous because
    # the 2 shared cores of the test machine can stall a process for a while.
    assert elected_s < 5.0

    cluster.load_on_leader("post", 100)
    for node in survivors:
        assert node.request("has_ids", prefix="pre", n=300)["n_missing"] == 0
    old.start()  # back from its own files; catches up from the new leader
    cluster.converged()
    assert_exactly_once(cluster.nodes)
    assert leader.alive


def test_lagging_follower_installs_a_snapshot(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(compact_entries=100)
    cluster.load_on_leader("early", 50)
    cluster.converged()
    lagging = next(n for n in cluster.nodes if n is not cluster.leader())
    down_at = lagging.status()["applied_index"]
    lagging.kill()
    # While it is down the others commit enough to compact their logs several times.
    cluster.load_on_leader("while-down", 600)
    leader = cluster.leader()
    status = leader.status()
    assert status["snapshots_made"] >= 1, status
    assert status["log_size"] < 600, status  # the entries it missed are gone from the log

    lagging.start()
    cluster.converged(timeout=30)
    status = lagging.status()
    assert status["snapshots_installed"] >= 1, status
    installed = status["last_snapshot"]
    assert installed is not None and installed["index"] > down_at + 500, (down_at, status)
    assert_exactly_once(cluster.nodes)
    assert lagging.request("has_ids", prefix="while-down", n=600)["n_missing"] == 0
    # The installed state is the live one: new entries apply on top of it.
    cluster.load_on_leader("after", 20)
    cluster.converged()


def test_restart_all_from_disk_keeps_state_and_applies_nothing_twice(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(compact_entries=150)
    cluster.load_on_leader("x", 400)  # a snapshot, plus journal entries after it
    before = cluster.converged()
    applies_before = counts(cluster.nodes[0])["applies"]

    for node in cluster.nodes:
        node.kill()
    cluster.start()
    cluster.leader()
    after = cluster.converged()
    assert (after["applied"], after["hash"]) == (before["applied"], before["hash"])
    for node in cluster.nodes:
        status = node.status()
        assert status["replays_skipped"] >= 1, status  # replayed journal, skipped by index
        assert counts(node)["applies"] == applies_before
    assert_exactly_once(cluster.nodes)

    cluster.load_on_leader("y", 50)
    cluster.converged()
    assert_exactly_once(cluster.nodes)
    assert counts(cluster.leader())["applies"] >= applies_before + 50


def test_sigstopped_leader_is_replaced_and_steps_down(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory()
    cluster.load_on_leader("s", 50)
    old = cluster.leader()
    old.signal(signal.SIGSTOP)
    survivors = [n for n in cluster.nodes if n is not old]
    leader = cluster.leader(among=survivors)
    cluster.load_on_leader("during", 50)
    old.signal(signal.SIGCONT)
    # The old leader finds a higher term and follows; one history, no divergence.
    wait_for(lambda: old.status()["leader"] == cluster.leader().address, 15,
             "the old leader to follow the new one")
    cluster.converged()
    assert_exactly_once(cluster.nodes)
    assert leader.alive


def test_cut_off_leader_steps_down(cluster_factory: MakeCluster) -> None:
    """A leader that hears from no majority stops accepting writes (leader fallback)."""
    cluster = cluster_factory()
    cluster.load_on_leader("c", 20)
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    for node in followers:
        node.signal(signal.SIGSTOP)
    cut_at = time.monotonic()
    wait_for(lambda: leader.status()["role"] != "leader", 10, "the cut-off leader to step down")
    print(f"\ncut-off leader stepped down after {time.monotonic() - cut_at:.2f} s")
    reply = leader.request("submit", id="refused")
    assert reply["error"] == "NotLeader", reply
    for node in followers:
        node.signal(signal.SIGCONT)
    cluster.load_on_leader("d", 20)
    cluster.converged()
    assert_exactly_once(cluster.nodes)
