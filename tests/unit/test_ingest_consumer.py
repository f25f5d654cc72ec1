"""The events-queue consumer wired with fakes: a queue with SQS semantics and a recording sink."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from contracts.messages import AuthEvent, MessageType, encode_envelope, envelope_for, message_id_for
from ingest.consumer import Consumer, batch_id_for
from ingest.fakes import FakeSqsQueue, RecordingSink

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SOURCE = "jwo-events"


def auth_body(n: int) -> str:
    event = AuthEvent(
        event_id=f"event-{n}",
        request_id=f"request-{n}",
        endpoint="identity_keys",
        store_id="store-001",
        occurred_at=NOW,
        received_at=NOW,
        location="ENTRY",
        channel="OPTICAL",
        outcome="ACCEPT",
        http_status=200,
        visitor_type="SHOPPER",
        shopper_id=f"shopper-{n}",
    )
    envelope = envelope_for(MessageType.AUTH_EVENT, f"identity_keys:event-{n}", event, occurred_at=NOW, producer="t")
    return encode_envelope(envelope).decode()


POISON = orjson.dumps(
    {
        "message_id": "poison-1",
        "type": "auth_event",
        "schema_version": 1,
        "occurred_at": "2026-11-20T12:00:00Z",
        "producer": "t",
        "payload": {"event_id": "only this"},
    }
).decode()


def consumer(queue: FakeSqsQueue, sink: RecordingSink, **options: float) -> Consumer:
    settings: dict[str, float] = {
        "receivers": 2,
        "batch_max": 10,
        "linger_seconds": 0.02,
        "wait_seconds": 1,
        "visibility_timeout": 30.0,
        "visibility_extension": 60,
        "writes_in_flight": 2,
    }
    settings.update(options)
    return Consumer(
        SOURCE,
        queue,
        sink,
        lambda: NOW,
        receivers=int(settings["receivers"]),
        batch_max=int(settings["batch_max"]),
        linger_seconds=settings["linger_seconds"],
        wait_seconds=int(settings["wait_seconds"]),
        visibility_timeout=settings["visibility_timeout"],
        visibility_extension=int(settings["visibility_extension"]),
        writes_in_flight=int(settings["writes_in_flight"]),
    )


async def run_until(worker: Consumer, done: Callable[[], bool], within: float = 5.0) -> None:
    """Run the consumer until `done()`, then stop it; fails if it raised or never got there."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(within):
            while not done():
                if task.done():
                    await task
                    pytest.fail("the consumer returned before it was stopped")
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5.0)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def event_ids(sink: RecordingSink) -> list[object]:
    return [row["event_id"] for row in sink.rows("auth_events")]


def test_a_batch_is_written_before_any_of_its_messages_is_deleted() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    ids = [queue.send(auth_body(n)) for n in range(3)]
    deleted_at_write: list[list[str]] = []
    sink.on_write = lambda: deleted_at_write.append(list(queue.deleted))
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 3

    assert deleted_at_write == [[]]
    assert sorted(queue.deleted) == sorted(ids)
    assert queue.depth == 0
    assert sorted(event_ids(sink)) == ["event-0", "event-1", "event-2"]
    [(_, batch_id)] = sink.writes
    dedup_ids = [message_id_for(MessageType.AUTH_EVENT, f"identity_keys:event-{n}") for n in range(3)]
    assert batch_id == batch_id_for(dedup_ids)  # the same messages always land under the same file name


def test_running_lands_every_message_exactly_once_and_empties_the_queue() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    for n in range(45):
        queue.send(auth_body(n))
    worker = consumer(queue, sink)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert sorted(event_ids(sink)) == sorted(f"event-{n}" for n in range(45))
    assert len(queue.deleted) == 45
    assert queue.stale_deletes == []
    assert worker.stats.consumed == worker.stats.received == 45
    # batch_max is when a batch is flushed; each receiver may add one more receive (10) before that
    assert all(len(written["auth_events"]) <= 10 + 2 * 10 for written, _ in sink.writes)
    assert len(sink.writes) > 1


def test_a_redelivered_message_in_the_same_batch_is_written_once_and_both_copies_are_deleted() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    queue.send(auth_body(1))
    queue.send(auth_body(1))  # the relay re-sent it: same envelope, new SQS message
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 2

    assert event_ids(sink) == ["event-1"]
    assert queue.depth == 0
    assert worker.stats.duplicates == 1


def test_a_failed_write_deletes_nothing_and_the_messages_land_when_they_come_back() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    ids = [queue.send(auth_body(n)) for n in range(4)]
    sink.fail_writes = 1
    worker = consumer(queue, sink)

    async def scenario() -> tuple[int, int]:
        failed = await worker.process(await queue.receive(10, 0))
        assert queue.deleted == []
        assert queue.depth == 4
        assert await queue.receive(10, 0) == []  # still invisible: nobody else takes them
        queue.expire_visibility()
        again = await queue.receive(10, 0)
        assert [m.receive_count for m in again] == [2, 2, 2, 2]
        return failed, await worker.process(again)

    assert asyncio.run(scenario()) == (0, 4)

    assert sorted(queue.deleted) == sorted(ids)
    assert sorted(event_ids(sink)) == [f"event-{n}" for n in range(4)]
    assert worker.stats.write_failures == 1
    assert sink.attempts == 2


def test_while_running_a_failed_write_is_retried_after_the_visibility_timeout() -> None:
    queue, sink = FakeSqsQueue(visibility_timeout=0.1), RecordingSink()
    for n in range(12):
        queue.send(auth_body(n))
    sink.fail_writes = 2
    worker = consumer(queue, sink)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert sorted(set(event_ids(sink))) == sorted(f"event-{n}" for n in range(12))
    assert len(event_ids(sink)) == 12  # nothing written twice
    assert worker.stats.write_failures == 2
    assert worker.stats.consumed == 12


def test_a_poison_message_stays_on_the_queue_while_its_batch_mates_land() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    good = [queue.send(auth_body(n)) for n in range(3)]
    poison = queue.send(POISON)
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 3

    assert sorted(queue.deleted) == sorted(good)
    assert poison not in queue.deleted
    assert queue.depth == 1
    assert sorted(event_ids(sink)) == ["event-0", "event-1", "event-2"]
    assert worker.stats.poison == 1


def test_a_poison_message_is_dead_lettered_by_the_redrive_policy_and_nothing_else_is() -> None:
    queue = FakeSqsQueue(visibility_timeout=0.05, max_receive_count=3)
    sink = RecordingSink()
    queue.send(POISON)
    for n in range(5):
        queue.send(auth_body(n))
    worker = consumer(queue, sink)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert queue.dead_letters == [POISON]
    assert sorted(event_ids(sink)) == [f"event-{n}" for n in range(5)]
    assert worker.stats.poison == 3  # one per receive


def test_a_message_whose_rows_the_sink_rejects_is_isolated_and_its_batch_mates_still_land() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    good = [queue.send(auth_body(n)) for n in range(4)]
    unwritable = queue.send(auth_body(99))
    sink.reject = {"event-99"}  # e.g. a time without a zone, or an amount beyond DECIMAL(18,4)
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 4

    assert sorted(queue.deleted) == sorted(good)
    assert unwritable not in queue.deleted  # retried, then dead-lettered by the redrive policy
    assert sorted(event_ids(sink)) == [f"event-{n}" for n in range(4)]
    assert worker.stats.poison == 1
    assert worker.stats.write_failures == 0


def test_a_batch_of_only_poison_writes_nothing() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    queue.send(POISON)
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 0
    assert sink.attempts == 0
    assert queue.depth == 1


def test_an_undecodable_message_is_landed_as_an_unknown_event_and_deleted() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    message_id = queue.send("garbage, not an envelope")
    worker = consumer(queue, sink)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 1
    [row] = sink.rows("unknown_events")
    assert (row["message_id"], row["type"], row["body"]) == (message_id, "undecodable", "garbage, not an envelope")
    assert queue.deleted == [message_id]


def test_a_failed_delete_does_not_stop_the_consumer_and_the_messages_are_taken_again() -> None:
    queue, sink = FakeSqsQueue(visibility_timeout=0.1), RecordingSink()
    ids = [queue.send(auth_body(n)) for n in range(3)]
    queue.fail_deletes = 1
    worker = consumer(queue, sink)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert sorted(queue.deleted) == sorted(ids)
    assert sorted(set(event_ids(sink))) == ["event-0", "event-1", "event-2"]


def test_setting_the_stop_event_ends_run_promptly_and_leaves_no_task_behind() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    worker = consumer(queue, sink, receivers=4, wait_seconds=5)

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.1)  # the receivers are all long-polling an empty queue
        queue.send(auth_body(1))
        await eventually(lambda: queue.depth == 0)
        started = time.perf_counter()
        stop.set()
        await asyncio.wait_for(task, 2.0)
        elapsed = time.perf_counter() - started
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return elapsed

    elapsed = asyncio.run(scenario())

    assert elapsed < 0.5  # not the 5 s long-poll
    assert event_ids(sink) == ["event-1"]


def test_messages_already_received_when_stop_is_set_are_landed_not_abandoned() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    for n in range(5):
        queue.send(auth_body(n))
    worker = consumer(queue, sink, receivers=1, linger_seconds=0.5)  # a batch waits for more

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await eventually(lambda: worker.stats.received == 5)
        assert sink.writes == []  # buffered, lingering
        stop.set()
        await asyncio.wait_for(task, 2.0)

    asyncio.run(scenario())

    assert sorted(event_ids(sink)) == [f"event-{n}" for n in range(5)]
    assert queue.depth == 0


def slow_writes(sink: RecordingSink, seconds: float) -> list[int]:
    """Make each write take `seconds`; returns a list whose last item is the most writes seen at once."""
    active, most = [0], [0]
    lock = threading.Lock()

    def write() -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(seconds)
        with lock:
            active[0] -= 1

    sink.on_write = write
    return most


def test_a_write_slower_than_the_visibility_timeout_keeps_its_messages_invisible_whatever_the_extension() -> None:
    # An extension of 60 s on a queue that hides a message for 0.6 s: the first extension must come within
    # the 0.6 s (a third of it after the receive), not after half the extension.
    queue, sink = FakeSqsQueue(visibility_timeout=0.6), RecordingSink()
    ids = [queue.send(auth_body(n)) for n in range(5)]
    slow_writes(sink, 1.5)
    worker = consumer(queue, sink, visibility_timeout=0.6, visibility_extension=60)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert sink.attempts == 1  # never received again while being written
    assert worker.stats.received == 5
    assert sorted(queue.deleted) == sorted(ids)
    assert queue.stale_deletes == []
    assert worker.heartbeat.extensions >= 1
    assert worker.heartbeat.extend_to == 60


def test_buffered_messages_are_kept_invisible_from_their_receive_not_from_when_their_batch_starts() -> None:
    # The batch lingers 1.5 s before it is written: 2.5 visibility timeouts after the receive.
    queue, sink = FakeSqsQueue(visibility_timeout=0.6), RecordingSink()
    for n in range(3):
        queue.send(auth_body(n))
    worker = consumer(queue, sink, receivers=1, linger_seconds=1.5, batch_max=100, visibility_timeout=0.6)

    asyncio.run(run_until(worker, lambda: queue.depth == 0))

    assert worker.stats.received == 3
    assert sink.attempts == 1
    assert queue.stale_deletes == []


def test_an_extension_never_shortens_the_queue_visibility_timeout() -> None:
    worker = consumer(FakeSqsQueue(), RecordingSink(), visibility_timeout=90, visibility_extension=10)
    assert worker.heartbeat.extend_to == 90


def test_the_next_batch_is_decoded_while_the_last_one_is_written_and_each_lands_once() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    for n in range(60):
        queue.send(auth_body(n))
    most = slow_writes(sink, 0.2)
    worker = consumer(queue, sink, receivers=2, batch_max=10, writes_in_flight=2)

    asyncio.run(run_until(worker, lambda: queue.depth == 0, within=10))

    assert most[0] == 2
    assert sorted(event_ids(sink)) == sorted(f"event-{n}" for n in range(60))
    assert worker.stats.consumed == 60
    assert queue.stale_deletes == []


def test_with_one_write_in_flight_batches_are_written_one_after_the_other() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    for n in range(30):
        queue.send(auth_body(n))
    most = slow_writes(sink, 0.05)
    worker = consumer(queue, sink, writes_in_flight=1)

    asyncio.run(run_until(worker, lambda: queue.depth == 0, within=10))

    assert most[0] == 1
    assert sorted(event_ids(sink)) == sorted(f"event-{n}" for n in range(30))
