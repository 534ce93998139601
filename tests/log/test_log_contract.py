"""The durable log's contract; every backend must pass the same tests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support import NATS_URL, nats_is_up, require

from shardrag.errors import InvalidParameter
from shardrag.log import Log, SqliteLog, subject_matches
from shardrag.log.nats import NatsLog

OpenLog = Callable[[], Log]


@pytest.fixture(params=["sqlite", "nats"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLog]:
    """Opens the backend under test on the same storage each time it is called.

    NATS: the real JetStream server of the machine, on streams of this test's own prefix.
    """
    opened: list[Log] = []
    if request.param == "nats":
        require(nats_is_up(), f"NATS JetStream at {NATS_URL}")
        prefix = f"test-{secrets.token_hex(4)}"

        def opener() -> Log:
            log = NatsLog(NATS_URL, prefix=prefix)
            opened.append(log)
            return log
    else:

        def opener() -> Log:
            log = SqliteLog(tmp_path / "log.sqlite3")
            opened.append(log)
            return log

    yield opener
    if request.param == "nats":
        cleanup = NatsLog(NATS_URL, prefix=prefix)
        cleanup.drop()
        cleanup.close()
    for log in opened:
        log.close()


def test_appends_are_ordered_and_a_repeated_message_id_appends_nothing(open_log: OpenLog) -> None:
    log = open_log()
    first = log.append("doc.ingest", b"a", message_id="m-1")
    second = log.append("doc.ingest", b"b")
    assert second > first
    assert log.append("doc.ingest", b"a again", message_id="m-1") == first
    assert log.last_sequence("doc.ingest") == second and log.last_sequence("nothing") == 0
    consumer = log.consumer("ingest", "doc.ingest")
    assert [m.data for m in consumer.fetch(10, timeout=0.1)] == [b"a", b"b"]


def test_a_consumer_sees_only_its_subjects_in_order(open_log: OpenLog) -> None:
    log = open_log()
    for i in range(3):
        log.append(f"shard.{i % 2}", f"op {i}".encode(), headers={"n": str(i)})
    log.append("doc.ingest", b"other")
    shard0 = log.consumer("applier-0", "shard.0").fetch(10, timeout=0.1)
    assert [(m.data, m.headers["n"], m.attempts) for m in shard0] == [
        (b"op 0", "0", 1),
        (b"op 2", "2", 1),
    ]
    every_shard = log.consumer("all-shards", "shard.*").fetch(10, timeout=0.1)
    assert [m.data for m in every_shard] == [b"op 0", b"op 1", b"op 2"]


def test_consumers_are_independent_and_acked_messages_never_return(open_log: OpenLog) -> None:
    log = open_log()
    log.append("doc.ingest", b"x")
    one, two = log.consumer("one", "doc.>"), log.consumer("two", "doc.>")
    (message,) = one.fetch(timeout=0.1)
    one.ack(message)
    assert one.fetch(timeout=0.1) == []
    assert [m.data for m in two.fetch(timeout=0.1)] == [b"x"]


def test_an_unacknowledged_message_is_delivered_again_after_ack_wait(open_log: OpenLog) -> None:
    log = open_log()
    log.append("doc.ingest", b"x")
    consumer = log.consumer("slow", "doc.ingest", ack_wait=0.5)
    assert [m.attempts for m in consumer.fetch(timeout=0.1)] == [1]
    assert consumer.fetch(timeout=0.05) == []  # still leased
    again = consumer.fetch(timeout=2)
    assert [(m.data, m.attempts) for m in again] == [(b"x", 2)]


def test_a_nak_with_delay_comes_back_no_sooner(open_log: OpenLog) -> None:
    log = open_log()
    log.append("doc.ingest", b"x")
    consumer = log.consumer("retry", "doc.ingest")
    (message,) = consumer.fetch(timeout=0.1)
    started = time.monotonic()
    assert consumer.nak(message, "parser busy", delay=0.3) is False
    (again,) = consumer.fetch(timeout=5)
    assert time.monotonic() - started >= 0.3 and again.attempts == 2


def test_a_poison_message_is_dead_lettered_after_its_attempts_and_can_be_redriven(
    open_log: OpenLog,
) -> None:
    log = open_log()
    log.append("doc.ingest", b"poison", headers={"doc": "bad.pdf"})
    log.append("doc.ingest", b"fine")
    consumer = log.consumer("ingest", "doc.ingest", max_attempts=3)
    outcomes = []
    # Until it is dead-lettered (a deadline, not a count of fetches: a busy machine is slow),
    # then a while longer to see it come no more.
    deadline = time.monotonic() + 30
    settled = None
    while settled is None or time.monotonic() < settled:
        assert time.monotonic() < deadline, outcomes
        for message in consumer.fetch(timeout=0.2):
            if message.data == b"fine":
                consumer.ack(message)
            else:
                outcomes.append(consumer.nak(message, f"broken pdf (try {message.attempts})"))
        if settled is None and True in outcomes:
            settled = time.monotonic() + 0.6
    assert outcomes == [False, False, True]  # three attempts, then no more
    (dead,) = log.dead_letters("ingest")
    assert (dead.data, dead.attempts, dead.error) == (b"poison", 3, "broken pdf (try 3)")
    assert dead.headers == {"doc": "bad.pdf"}
    assert consumer.fetch(timeout=0.1) == []
    log.redrive(dead.dead_letter_id)
    assert log.dead_letters() == []
    assert [(m.data, m.attempts) for m in consumer.fetch(timeout=0.5)] == [(b"poison", 1)]


def test_a_consumer_left_unacked_until_its_last_attempt_is_dead_lettered(
    open_log: OpenLog,
) -> None:
    log = open_log()
    log.append("doc.ingest", b"hangs")
    consumer = log.consumer("hung", "doc.ingest", max_attempts=2, ack_wait=0.1)
    deliveries: list[int] = []
    deadline = time.monotonic() + 30
    while not log.dead_letters("hung"):
        assert time.monotonic() < deadline, deliveries
        # Long fetches: a message that reaches a fetch just as it times out counts as
        # delivered (JetStream's pull requests) but is never seen here.
        deliveries += [m.attempts for m in consumer.fetch(timeout=1.0)]
    settled = time.monotonic() + 0.5  # and it comes no more
    while time.monotonic() < settled:
        deliveries += [m.attempts for m in consumer.fetch(timeout=0.1)]
    assert deliveries == [1, 2]
    assert "not acknowledged" in log.dead_letters("hung")[0].error


def test_positions_and_pending_deliveries_survive_a_restart(open_log: OpenLog) -> None:
    log = open_log()
    for i in range(3):
        log.append("shard.0", f"op {i}".encode())
    consumer = log.consumer("applier", "shard.0", ack_wait=0.2)
    first, second = consumer.fetch(2, timeout=0.1)
    consumer.ack(first)
    log.close()
    reopened = open_log().consumer("applier", "shard.0", ack_wait=0.2)
    # op 1 was delivered but not acked: it comes back; op 2 was never delivered: it comes.
    seen = []
    for _ in range(20):
        for message in reopened.fetch(timeout=0.1):
            seen.append(message.data)
            reopened.ack(message)
    assert sorted(seen) == [b"op 1", b"op 2"] and second.data == b"op 1"


def test_a_consumer_keeps_its_filter(open_log: OpenLog) -> None:
    log = open_log()
    log.consumer("fixed", "doc.ingest")
    with pytest.raises(InvalidParameter):
        log.consumer("fixed", "shard.*")
    with pytest.raises(InvalidParameter):
        log.append("doc.*", b"wildcards are for filters")


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("shard.*", "shard.3", True),
        ("shard.*", "shard.3.x", False),
        ("shard.>", "shard.3.x", True),
        ("shard.>", "shard", False),
        ("doc.ingest", "doc.ingest", True),
        ("doc.ingest", "doc.embed", False),
        ("*.ingest", "doc.ingest", True),
    ],
)
def test_subject_wildcards_follow_nats(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def test_an_ordered_read_starts_after_a_position_and_reads_on(open_log: OpenLog) -> None:
    log = open_log()
    seqs = [log.append(f"shard.{i % 2}", f"op {i}".encode()) for i in range(6)]
    log.append("doc.ingest", b"not a shard op")
    first = log.read("shard.>", after=seqs[1], limit=2, timeout=0.5)
    assert [m.data for m in first] == [b"op 2", b"op 3"]
    rest = log.read("shard.>", after=first[-1].sequence, limit=10, timeout=0.5)
    assert [m.data for m in rest] == [b"op 4", b"op 5"]
    assert log.read("shard.>", after=rest[-1].sequence, limit=10, timeout=0.1) == []
    # A reader that restarts from an older position reads the same messages again.
    again = log.read("shard.1", after=0, limit=10, timeout=0.5)
    assert [m.data for m in again] == [b"op 1", b"op 3", b"op 5"]
    later = log.append("shard.0", b"op 6")
    assert [m.sequence for m in log.read("shard.>", after=rest[-1].sequence, timeout=2)] == [later]


def test_a_reader_can_bury_a_message_it_gave_up_on(open_log: OpenLog) -> None:
    log = open_log()
    log.append("shard.0", b"bad op", headers={"tenant": "acme"})
    message = log.read("shard.0", after=0, timeout=0.5)[0]
    log.bury("index", message, "engine refused it")
    (dead,) = log.dead_letters("index")
    assert (dead.data, dead.subject, dead.error, dead.sequence) == (
        b"bad op",
        "shard.0",
        "engine refused it",
        message.sequence,
    )
    assert dead.headers == {"tenant": "acme"}
    again = log.redrive(dead.dead_letter_id)
    assert log.read("shard.0", after=message.sequence, timeout=0.5)[0].sequence == again
    assert log.dead_letters("index") == []
