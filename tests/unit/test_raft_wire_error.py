"""A store's ``submit`` failure, as the wire error a client acts on: its code says
whether asking again is safe, and it reaches ``ctl`` through the control port."""

from __future__ import annotations

import pytest

from omega.errors import ConfigError, OmegaError, StoreError
from omega.ops.control import as_protocol_error
from omega.protocol import ErrorReply, NotLeaderError, Unavailable
from omega.raft import (
    ApplyError,
    CommitTimeout,
    Discarded,
    LeaderChanged,
    NotLeader,
    QueueFull,
    wire_error,
)


@pytest.mark.parametrize(("exc", "cls", "says"), [
    (NotLeader("127.0.0.1:9"), NotLeaderError, "the leader is 127.0.0.1:9"),
    (Discarded("index taken"), NotLeaderError, "not applied"),
    (LeaderChanged("this replica stopped being the leader"), Unavailable,
     "may still be applied"),
    (CommitTimeout("no outcome within 5 s"), Unavailable, "may still be applied"),
    (QueueFull("full"), Unavailable, "QueueFull"),
    (ApplyError(3, "ValueError", "bad"), Unavailable, "ApplyError"),
])
def test_each_fate_has_its_code(exc: StoreError, cls: type, says: str) -> None:
    err = wire_error(exc, "rotating to key 2")
    assert type(err) is cls
    assert says in err.message and err.message.startswith("rotating to key 2: ")
    back = ErrorReply.from_error(err).to_error()  # what the client sees
    assert type(back) is cls and back.code == err.code


def test_not_leader_keeps_the_leader_it_knows() -> None:
    err = wire_error(NotLeader("127.0.0.1:9"))
    assert isinstance(err, NotLeaderError) and err.leader == "127.0.0.1:9"


@pytest.mark.parametrize("exc", [ConfigError("a.toml", "k", "bad"), OmegaError("no")])
def test_other_failures_stay_bad_requests(exc: OmegaError) -> None:
    assert as_protocol_error(exc).code == "bad_request"


def test_the_control_port_answers_a_store_failure_with_its_fate() -> None:
    err = as_protocol_error(LeaderChanged("this replica stopped being the leader"))
    assert err.code == "unavailable" and "may still be applied" in err.message
