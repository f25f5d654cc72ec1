"""SPEC §2.6 against a real SQLite outbox in tmp_path: durable before visible, group commit, a slow disk
answered with a fast 500, and the relay draining to the queue with retries and nothing lost."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors import relay as relay_module
from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.errors import OutboxUnavailableError
from connectors.fakes import MemoryPublisher, MemorySource
from connectors.ports import OutboxRecord, PendingMessage, Sent, StoredResponse
from connectors.relay import SQS_BATCH, Relay
from connectors.service import ConnectorService, purchase_id_for
from connectors.settings import ConnectorSettings
from contracts.messages import decode_envelope
from tests.conftest import NOW, purchase_body

ANSWER = StoredResponse("fp-1", 201, b'{"purchaseId":"p-1"}')


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox" / "outbox.db"


@pytest.fixture
def outbox(db: Path) -> Iterator[SqliteOutbox]:
    box = SqliteOutbox(db, commit_timeout=2.0)
    yield box
    box.close()


def records(prefix: str, count: int) -> list[OutboxRecord]:
    return [OutboxRecord(f"{prefix}-{n}", f'{{"n":{n},"of":"{prefix}"}}'.encode()) for n in range(count)]


async def commit(
    box: SqliteOutbox, key: str, recs: Sequence[OutboxRecord], answer: StoredResponse = ANSWER
) -> StoredResponse:
    return await box.commit("purchases", key, answer, recs)


class WriteLock:
    """Another connection holding SQLite's write lock: the outbox writer waits behind it (a slow disk)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


# --- durability ----------------------------------------------------------------------------------


def test_a_commit_is_on_disk_before_it_is_confirmed_and_then_pending(outbox: SqliteOutbox, db: Path) -> None:
    stored = asyncio.run(commit(outbox, "trip-1", records("m", 2)))

    with sqlite3.connect(db) as other:  # another process's view of the file
        rows = other.execute("SELECT message_id, body, sent_at FROM outbox ORDER BY seq").fetchall()
        ledger = other.execute("SELECT route, key, status, body FROM idempotency").fetchall()

    assert stored == ANSWER
    assert rows == [("m-0", b'{"n":0,"of":"m"}', None), ("m-1", b'{"n":1,"of":"m"}', None)]
    assert ledger == [("purchases", "trip-1", 201, b'{"purchaseId":"p-1"}')]
    assert [(p.message_id, p.body) for p in outbox.pending(10)] == [(r.message_id, r.body) for r in records("m", 2)]
    assert outbox.lookup("purchases", "trip-1") == ANSWER
    assert outbox.lookup("purchases", "trip-2") is None
    assert outbox.lookup("scan", "trip-1") is None


def test_mark_sent_removes_messages_from_pending_and_from_the_depth(outbox: SqliteOutbox) -> None:
    asyncio.run(commit(outbox, "trip-1", records("m", 5)))
    first = outbox.pending(3)

    outbox.mark_sent([p.seq for p in first])
    outbox.mark_sent([])

    assert [p.message_id for p in first] == ["m-0", "m-1", "m-2"]
    assert [p.message_id for p in outbox.pending(10)] == ["m-3", "m-4"]
    depth, age = outbox.stats(datetime.now(UTC) + timedelta(seconds=30))
    assert depth == 2
    assert 29 < age < 60


def test_an_empty_outbox_has_no_depth_and_no_age(outbox: SqliteOutbox) -> None:
    assert outbox.pending(10) == []
    assert outbox.stats(datetime.now(UTC)) == (0, 0.0)


def test_the_second_commit_of_a_key_returns_the_first_answer_and_adds_nothing(outbox: SqliteOutbox) -> None:
    other = StoredResponse("fp-2", 400, b'{"message":"x"}')

    first = asyncio.run(commit(outbox, "trip-1", records("a", 1)))
    second = asyncio.run(commit(outbox, "trip-1", records("b", 3), other))

    assert first == second == ANSWER
    assert [p.message_id for p in outbox.pending(10)] == ["a-0"]


def test_the_answers_kept_in_memory_are_the_latest_ones(db: Path) -> None:
    box = SqliteOutbox(db, recent_capacity=1000)

    async def many(start: int, count: int) -> None:
        await asyncio.gather(*(commit(box, f"trip-{n}", records(f"m{n}", 1)) for n in range(start, start + count)))

    try:
        for start in range(0, 6000, 500):  # from the 1,001st on, every commit evicts the oldest answer
            asyncio.run(many(start, 500))
        kept = [n for n in range(6000) if box.recall("purchases", f"trip-{n}") is not None]
        on_disk = box.lookup("purchases", "trip-0")
    finally:
        box.close()

    assert kept == list(range(5000, 6000))
    assert on_disk == ANSWER  # forgotten by the memory only


def test_a_database_error_becomes_outbox_unavailable(outbox: SqliteOutbox, db: Path) -> None:
    with sqlite3.connect(db) as other:
        other.execute("DROP TABLE outbox")

    with pytest.raises(OutboxUnavailableError, match="could not write"):
        asyncio.run(commit(outbox, "trip-1", records("m", 1)))
    assert outbox.lookup("purchases", "trip-1") is None  # the ledger row was rolled back with it


# --- group commit --------------------------------------------------------------------------------


def test_many_concurrent_commits_share_a_few_transactions(outbox: SqliteOutbox, db: Path) -> None:
    count = 300

    async def scenario() -> list[StoredResponse]:
        lock = WriteLock(db)
        tasks = [
            asyncio.ensure_future(
                commit(outbox, f"trip-{n}", records(f"t{n}", 2), StoredResponse(f"fp{n}", 201, b"{}"))
            )
            for n in range(count)
        ]
        await asyncio.sleep(0.05)  # every request is queued behind the busy disk
        lock.release()
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())

    assert [a.fingerprint for a in answers] == [f"fp{n}" for n in range(count)]
    assert outbox.requests_committed == count
    assert outbox.groups_committed <= 2
    assert len(outbox.pending(10 * count)) == 2 * count


def test_concurrent_commits_of_one_key_in_one_group_keep_the_first(outbox: SqliteOutbox, db: Path) -> None:
    async def scenario() -> list[StoredResponse]:
        lock = WriteLock(db)
        tasks = [
            asyncio.ensure_future(commit(outbox, "trip-1", records(f"r{n}", 1), StoredResponse(f"fp{n}", 201, b"{}")))
            for n in range(5)
        ]
        await asyncio.sleep(0.05)
        lock.release()
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())

    assert {a.fingerprint for a in answers} == {"fp0"}
    assert [p.message_id for p in outbox.pending(10)] == ["r0-0"]


def test_a_group_mixing_recorded_and_new_keys_answers_each_and_queues_only_the_new_in_order(db: Path) -> None:
    earlier = SqliteOutbox(db, commit_timeout=2.0)  # another process's life: this one does not remember it
    try:
        recorded = [n for n in range(0, 600, 3)]
        for n in recorded:
            asyncio.run(commit(earlier, f"trip-{n}", records(f"old{n}", 1), StoredResponse(f"old{n}", 201, b"{}")))
    finally:
        earlier.close()
    box = SqliteOutbox(db, commit_timeout=2.0)

    async def scenario() -> list[StoredResponse]:
        lock = WriteLock(db)
        tasks = [
            asyncio.ensure_future(
                commit(box, f"trip-{n}", records(f"new{n}", 2), StoredResponse(f"new{n}", 201, b"{}"))
            )
            for n in range(600)
        ]
        await asyncio.sleep(0.05)  # all 600 wait behind the lock: one or two groups, several statements each
        lock.release()
        return list(await asyncio.gather(*tasks))

    try:
        answers = asyncio.run(scenario())
        pending = [p.message_id for p in box.pending(5000)]
    finally:
        box.close()

    assert [a.fingerprint for a in answers] == [f"old{n}" if n % 3 == 0 else f"new{n}" for n in range(600)]
    fresh = [n for n in range(600) if n % 3]
    assert pending == [f"old{n}-0" for n in recorded] + [f"new{n}-{i}" for n in fresh for i in range(2)]


# --- a slow disk is a fast 500 -------------------------------------------------------------------


def test_a_commit_not_confirmed_in_time_raises_fast_and_the_writer_lives_on(db: Path) -> None:
    box = SqliteOutbox(db, commit_timeout=0.05)
    try:
        lock = WriteLock(db)

        async def scenario() -> float:
            started = time.perf_counter()
            with pytest.raises(OutboxUnavailableError, match=r"within 0\.05s"):
                await commit(box, "trip-1", records("m", 1))
            return time.perf_counter() - started

        elapsed = asyncio.run(scenario())  # the caller's event loop is gone when the write lands
        lock.release()
        later = None
        for _ in range(40):
            try:
                later = asyncio.run(commit(box, "trip-2", records("n", 1)))
                break
            except OutboxUnavailableError:
                continue
        pending = [p.message_id for p in box.pending(10)]
    finally:
        box.close()

    assert elapsed < 0.1
    assert later == ANSWER
    assert pending == ["m-0", "n-0"]  # the late write stands; a retry of trip-1 would find it


def test_a_slow_outbox_answers_500_within_100_ms_and_the_retry_gets_the_recorded_answer(
    db: Path, source: MemorySource
) -> None:
    box = SqliteOutbox(db, commit_timeout=0.05)
    service = ConnectorService(CachedDirectory(source), box, lambda: NOW)
    body = purchase_body(trip_id="trip-slow")
    try:
        with TestClient(create_app(service, ConnectorSettings(commit_timeout_seconds=0.05))) as client:
            client.post("/v1/order/purchases", json=purchase_body())  # warm up the app
            lock = WriteLock(db)
            started = time.perf_counter()
            slow = client.post("/v1/order/purchases", json=body)
            elapsed = time.perf_counter() - started
            lock.release()
            deadline = time.monotonic() + 2
            while box.lookup("purchases", "trip-slow") is None and time.monotonic() < deadline:
                time.sleep(0.01)
            retry = client.post(
                "/v1/order/purchases", json=body | {"requestId": "00000000-0000-0000-0000-000000000001"}
            )
        trips = [decode_envelope(p.body).payload["shopping_trip_id"] for p in box.pending(10)]
    finally:
        box.close()

    assert slow.status_code == 500
    assert slow.json() == {"message": "internal error: the request could not be recorded"}
    assert elapsed < 0.1
    assert (retry.status_code, retry.json()) == (201, {"purchaseId": purchase_id_for("trip-slow")})
    assert trips.count("trip-slow") == 1  # recorded once, late, and never twice


# --- relay ---------------------------------------------------------------------------------------


class FlakyPublisher(MemoryPublisher):
    """Fails the first `failures` sends; `accept_every` > 1 accepts only some messages of the first good
    batch; `delivered` is set once `expect` messages are on the queue."""

    def __init__(self, failures: int = 0, accept_every: int = 1, expect: int = 1) -> None:
        super().__init__()
        self.failures = failures
        self.accept_every = accept_every
        self.expect = expect
        self.delivered = asyncio.Event()
        self.calls = 0

    async def send_batch(self, messages: Sequence[PendingMessage]) -> Sent:
        self.calls += 1
        assert 0 < len(messages) <= SQS_BATCH
        if self.calls <= self.failures:
            raise ConnectionError("queue unreachable")
        chosen = list(messages)
        if self.accept_every > 1:
            chosen = [m for m in messages if m.seq % self.accept_every == 0]
            self.accept_every = 1  # only the first answer is partial
        accepted = await super().send_batch(chosen)
        if len(self.bodies) >= self.expect:
            self.delivered.set()
        return accepted


def fill(box: SqliteOutbox, count: int) -> list[bytes]:
    recs = records("msg", count)
    asyncio.run(commit(box, "trip-fill", recs))
    return [r.body for r in recs]


async def run_until_delivered(relay: Relay, publisher: FlakyPublisher) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(publisher.delivered.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 2)


def test_drain_sends_everything_in_batches_of_ten(outbox: SqliteOutbox) -> None:
    bodies = fill(outbox, 25)
    publisher = MemoryPublisher()
    relay = Relay(outbox, publisher, in_flight=2)

    emptied = asyncio.run(relay.drain(within=2))

    assert emptied is True
    assert sorted(publisher.bodies) == sorted(bodies)
    assert len(publisher.bodies) == 25
    assert outbox.pending(100) == []
    assert (relay.stats.sent, relay.stats.batches, relay.stats.errors) == (25, 3, 0)


def test_drain_gives_up_after_its_time_when_the_queue_stays_down(outbox: SqliteOutbox) -> None:
    fill(outbox, 3)
    publisher = MemoryPublisher()
    publisher.down = ConnectionError("queue unreachable")
    relay = Relay(outbox, publisher)

    emptied = asyncio.run(relay.drain(within=0.1))

    assert emptied is False
    assert len(outbox.pending(10)) == 3
    assert relay.stats.errors >= 1
    assert relay.stats.last_error == "ConnectionError: queue unreachable"


def test_the_relay_retries_a_failing_queue_and_loses_nothing(outbox: SqliteOutbox) -> None:
    bodies = fill(outbox, 57)
    publisher = FlakyPublisher(failures=7, expect=57)
    relay = Relay(outbox, publisher, in_flight=4, base_backoff=0.001, max_backoff=0.005, idle_seconds=0.01)

    asyncio.run(run_until_delivered(relay, publisher))

    assert sorted(publisher.bodies) == sorted(bodies)  # every message, each exactly once
    assert relay.stats.errors == 7
    assert relay.stats.sent == 57
    assert outbox.pending(100) == []


def test_a_partially_accepted_batch_is_retried_without_duplicates(outbox: SqliteOutbox) -> None:
    bodies = fill(outbox, 10)
    publisher = FlakyPublisher(accept_every=3, expect=10)
    relay = Relay(outbox, publisher, base_backoff=0.001, max_backoff=0.005, idle_seconds=0.01)

    asyncio.run(run_until_delivered(relay, publisher))

    assert sorted(publisher.bodies) == sorted(bodies)
    assert publisher.calls >= 2


def test_the_relay_backs_off_exponentially_up_to_the_cap(outbox: SqliteOutbox, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(outbox, 1)
    delays: list[float] = []

    async def record_sleep(stop: asyncio.Event, delay: float) -> None:
        delays.append(delay)

    class Ceiling(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b  # the top of the full-jitter range

    monkeypatch.setattr(relay_module, "_sleep_or_stop", record_sleep)
    publisher = FlakyPublisher(failures=6)
    relay = Relay(outbox, publisher, base_backoff=0.1, max_backoff=1.0, idle_seconds=0.01, rng=Ceiling())

    asyncio.run(run_until_delivered(relay, publisher))

    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert len(publisher.bodies) == 1


def test_the_relay_jitters_its_backoff_within_the_range(outbox: SqliteOutbox, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(outbox, 1)
    delays: list[float] = []

    async def record_sleep(stop: asyncio.Event, delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(relay_module, "_sleep_or_stop", record_sleep)
    publisher = FlakyPublisher(failures=4)
    relay = Relay(outbox, publisher, base_backoff=0.1, max_backoff=10, rng=random.Random(7))

    asyncio.run(run_until_delivered(relay, publisher))

    assert len(delays) == 4
    assert all(0 <= d <= 0.1 * 2 ** (n + 1) for n, d in enumerate(delays))
    assert len(set(delays)) == 4


def test_a_woken_relay_delivers_new_commits_promptly(outbox: SqliteOutbox) -> None:
    publisher = FlakyPublisher(expect=2)
    relay = Relay(outbox, publisher, idle_seconds=30)

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        await asyncio.sleep(0.02)  # idle, waiting on its wake-up
        started = time.perf_counter()
        await commit(outbox, "trip-late", records("late", 2))
        relay.wake()
        await asyncio.wait_for(publisher.delivered.wait(), 5)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.wait_for(task, 2)
        return elapsed

    elapsed = asyncio.run(scenario())

    assert elapsed < 1.0
    assert publisher.bodies == [r.body for r in records("late", 2)]


def test_http_answers_reach_the_queue_through_the_relay(db: Path, source: MemorySource) -> None:
    box = SqliteOutbox(db)
    publisher = MemoryPublisher()
    service = ConnectorService(CachedDirectory(source), box, lambda: NOW)
    try:
        client = TestClient(create_app(service, ConnectorSettings()))
        trips = [f"trip-{n}" for n in range(12)]
        for trip in trips:
            assert client.post("/v1/order/purchases", json=purchase_body(trip_id=trip)).status_code == 201
        client.post("/v1/order/purchases", json=purchase_body([], trip_id="trip-empty"))

        assert asyncio.run(Relay(box, publisher).drain(within=2)) is True
    finally:
        box.close()

    sent = [decode_envelope(b) for b in publisher.bodies]
    assert sorted(e.payload["shopping_trip_id"] for e in sent if e.type == "purchase") == sorted([*trips, "trip-empty"])
    assert [e.payload["shopping_trip_id"] for e in sent if e.type == "cancel_charge"] == ["trip-empty"]
    assert len({e.message_id for e in sent}) == len(sent) == 14


def test_messages_the_queue_refuses_for_good_are_parked_and_do_not_block_the_rest(outbox: SqliteOutbox) -> None:
    poison = [OutboxRecord(f"poison-{n}", b'{"poison":%d}' % n) for n in range(45)]  # more than in flight
    good = records("good", 5)
    asyncio.run(commit(outbox, "trip-poison", poison))
    asyncio.run(commit(outbox, "trip-good", good))
    publisher = MemoryPublisher(refuse=b"poison")
    relay = Relay(outbox, publisher, in_flight=4)

    emptied = asyncio.run(relay.drain(within=5))

    assert emptied is True
    assert publisher.bodies == [r.body for r in good]
    assert outbox.pending(100) == []
    assert outbox.stats(datetime.now(UTC))[0] == 0
    assert outbox.parked() == 45
    parked = outbox.parked_messages(100)
    assert [p.message_id for p in parked] == [r.message_id for r in poison]
    assert {p.reason for p in parked} == {"InvalidMessageContents: refused"}
    assert (relay.stats.sent, relay.stats.parked) == (5, 45)


def test_a_parked_message_keeps_its_body_in_the_outbox(outbox: SqliteOutbox, db: Path) -> None:
    asyncio.run(commit(outbox, "trip-1", records("a", 2)))
    first, second = outbox.pending(10)

    outbox.park([(first.seq, "InvalidMessageContents: bad character")])
    outbox.park([(first.seq, "again")])  # parking twice, or a message already parked, changes nothing more

    assert outbox.pending(10) == [second]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, message_id, body, reason FROM outbox_parked").fetchall()
    assert rows == [(first.seq, first.message_id, first.body, "InvalidMessageContents: bad character")]


def test_each_committed_group_reports_its_size_and_its_commit_time(db: Path) -> None:
    groups: list[tuple[int, float]] = []
    box = SqliteOutbox(db, on_group=lambda requests, seconds: groups.append((requests, seconds)))

    async def many() -> None:
        await asyncio.gather(*(commit(box, f"trip-{n}", records(f"g{n}", 1)) for n in range(50)))

    try:
        asyncio.run(many())
    finally:
        box.close()

    assert sum(requests for requests, _ in groups) == 50
    assert len(groups) == box.groups_committed
    assert all(requests >= 1 and 0 < seconds < 10 for requests, seconds in groups)
