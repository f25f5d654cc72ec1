"""kill -9 the consumer process again and again while it ingests: nothing lost, nothing doubled, nothing torn.

200,000 envelopes (about 210,000 queue messages, 500,000 rows) go through a queue with SQS semantics kept in
SQLite (`SqliteSqsQueue` below: visibility timeout, a fresh receipt handle per receive, delete and
change-visibility only with the current handle, receive counts), so its state survives the kills. The
consumer is a child process running what `jwo consume` runs (the real `Consumer`, `LakeSink` over the
Parquet lake and the writer's DuckDB file, the janitor at start) on that queue; it is killed with SIGKILL
at 20 seeded random moments (each a random 0-0.8 s after its first batch of that life landed) and started
again each time, while the test process draws the traffic and sends it. The issue's 200,000 envelopes (about
210,000 messages, 500,000 rows): the consumer decodes a batch straight into Arrow columns, so the SQLite
queue (~7,000 receives+deletes a second) and the 21 starts (~1 s of imports each) set the pace: about a minute on
a quiet 2-core box. The embedded SQS (moto) manages only ~1,000-2,000 receives+deletes a second, which is why
the queue is this SQLite one.

Run as a script, this module is that child process: `python -m tests.e2e.test_ingest_kill9 QUEUE_DB HOME`.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.tables import TABLES
from ingest.ports import Received
from tests.children import kill, start_child
from tests.ingest_traffic import queue_bodies
from tests.integration.test_ingest_exactly_once import SOURCE, duplicates
from warehouse.lake import TEMP_GLOB
from warehouse.query import fetch, open_reader
from warehouse.views import quote_identifier

ENVELOPES = 200_000
CHUNK = 5_000
KILLS = 20
VISIBILITY_TIMEOUT = 3
"""Seconds; what a killed consumer had in flight comes back this soon. The child's heartbeat keeps what it holds
longer invisible (it extends a message a third of the timeout after the receive that took it)."""


class SqliteSqsQueue:
    """One standard SQS queue in a SQLite file, as the consumer sees it (the `QueueReceiver` port).

    Every call is one transaction, so a process killed at any point leaves the queue as SQS would: a
    message is visible, in flight until its visibility deadline, or deleted.
    """

    def __init__(self, path: Path, *, visibility_timeout: float = 30.0) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # a killed process loses nothing; only a power cut would
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL,"
            " sent_at REAL NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, visible_at REAL NOT NULL DEFAULT 0,"
            " receipt TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS counters (deleted INTEGER NOT NULL, stale INTEGER NOT NULL,"
            " max_receives INTEGER NOT NULL)"
        )
        self._db.execute("INSERT INTO counters SELECT 0, 0, 0 WHERE NOT EXISTS (SELECT 1 FROM counters)")
        self.visibility_timeout = visibility_timeout

    def close(self) -> None:
        self._db.close()

    def send_all(self, bodies: Sequence[str]) -> None:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO messages (id, body, sent_at) VALUES (?, ?, ?)",
                ((str(uuid.uuid4()), body, now) for body in bodies),
            )

    def depth(self) -> int:
        """Messages on the queue, visible or in flight."""
        [(total,)] = self._db.execute("SELECT count(*) FROM messages").fetchall()
        return int(total)

    def deleted(self) -> int:
        [(count,)] = self._db.execute("SELECT deleted FROM counters").fetchall()
        return int(count)

    def stale_deletes(self) -> int:
        """Deletes with a receipt handle that was no longer current (the message was received again)."""
        [(count,)] = self._db.execute("SELECT stale FROM counters").fetchall()
        return int(count)

    def max_receive_count(self) -> int:
        """The most times any message was received, deleted ones included (a redelivery is often deleted again
        before the next look, so the live rows alone would miss it)."""
        [(count,)] = self._db.execute("SELECT max_receives FROM counters").fetchall()
        return int(count)

    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        deadline = time.monotonic() + wait_seconds
        while True:
            got = self._take(min(max_messages, 10))
            if got or time.monotonic() >= deadline:
                await asyncio.sleep(0)
                return got
            await asyncio.sleep(0.05)

    def _take(self, limit: int) -> list[Received]:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT seq, id, body, sent_at, receive_count FROM messages WHERE visible_at <= ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            taken = [
                (seq, message_id, body, sent, count + 1, uuid.uuid4().hex)
                for seq, message_id, body, sent, count in rows
            ]
            self._db.executemany(
                "UPDATE messages SET receive_count = ?, visible_at = ?, receipt = ? WHERE seq = ?",
                ((count, now + self.visibility_timeout, receipt, seq) for seq, _, _, _, count, receipt in taken),
            )
            if taken:
                most = max(count for _, _, _, _, count, _ in taken)
                self._db.execute("UPDATE counters SET max_receives = max(max_receives, ?)", (most,))
        return [
            Received(message_id, receipt, body, count, datetime.fromtimestamp(sent, UTC))
            for _, message_id, body, sent, count, receipt in taken
        ]

    async def delete(self, messages: Sequence[Received]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            done = self._db.executemany(
                "DELETE FROM messages WHERE id = ? AND receipt = ?", ((m.message_id, m.receipt) for m in messages)
            ).rowcount
            self._db.execute(
                "UPDATE counters SET deleted = deleted + ?, stale = stale + ?", (done, len(messages) - done)
            )
        await asyncio.sleep(0)

    async def extend(self, messages: Sequence[Received], seconds: int) -> None:
        deadline = time.time() + seconds
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                ((deadline, m.message_id, m.receipt) for m in messages),
            )
        await asyncio.sleep(0)


def consume_forever(queue_path: Path, home: Path) -> None:
    """The child: what `jwo consume` does at start and then, on the SQLite queue, until killed."""
    from ingest.consumer import Consumer
    from jwo.runtime import LakeSink, utc_now
    from warehouse.duck_writer import WarehouseDb
    from warehouse.lake import LakeWriter, janitor

    lake = home / "lake"
    removed = janitor(lake)
    with WarehouseDb(home, lake) as db:
        db.refresh_views(TABLES.values())
        queue = SqliteSqsQueue(queue_path, visibility_timeout=VISIBILITY_TIMEOUT)
        worker = Consumer(
            SOURCE,
            queue,
            LakeSink(LakeWriter(lake), db),
            utc_now,
            receivers=4,
            batch_max=1_000,
            linger_seconds=0.1,
            wait_seconds=1,
            visibility_timeout=VISIBILITY_TIMEOUT,
            visibility_extension=VISIBILITY_TIMEOUT,
        )
        print(f"ready {removed}", flush=True)
        asyncio.run(worker.run(asyncio.Event()))


def start_consumer(queue_path: Path, home: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the child and wait until it consumes; returns it and how many temp files its janitor removed."""
    return start_child("tests.e2e.test_ingest_kill9", str(queue_path), str(home))


def temp_files(lake: Path) -> list[Path]:
    return list(lake.glob(TEMP_GLOB))


class Producer(threading.Thread):
    """Draws the traffic a chunk at a time and sends it, while the consumer consumes (2 cores: one each)."""

    def __init__(self, queue_path: Path) -> None:
        super().__init__(name="producer")
        self._queue_path = queue_path
        self.keys: dict[str, set[tuple[object, ...]]] = {}
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        queue = SqliteSqsQueue(self._queue_path)
        try:
            for first in range(0, ENVELOPES, CHUNK):
                traffic = queue_bodies(CHUNK, seed=5, first=first, huge_every=20_000)
                queue.send_all(traffic.bodies)
                self.sent += len(traffic.bodies)
                for table, keys in traffic.keys.items():
                    self.keys.setdefault(table, set()).update(keys)
        except BaseException as exc:
            self.error = exc
        finally:
            queue.close()


@pytest.mark.slow
def test_a_consumer_killed_twenty_times_loses_nothing_doubles_nothing_and_leaves_no_partial_batch(
    tmp_path: Path,
) -> None:
    rng = random.Random(9)
    queue_path, home = tmp_path / "queue.db", tmp_path / "home"
    lake = home / "lake"
    queue = SqliteSqsQueue(queue_path)
    producer = Producer(queue_path)
    producer.start()
    while producer.sent == 0 and producer.is_alive():
        time.sleep(0.05)
    removed_by_janitor = left_by_kills = 0
    deleted: list[int] = []
    child: subprocess.Popen[str] | None = None
    try:
        for _ in range(KILLS):
            before = queue.deleted()
            child, removed = start_consumer(queue_path, home)
            removed_by_janitor += removed
            # Kill it while it consumes: a random moment after its first batch landed (or after 10 s without one,
            # if the queue ran dry), so a loaded machine's slow start does not turn the kills into no-ops.
            started = time.monotonic()
            while queue.deleted() == before and time.monotonic() - started < 10:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.8))
            kill(child)
            left_by_kills += len(temp_files(lake))
            deleted.append(queue.deleted())
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        assert not producer.is_alive()
        child, removed = start_consumer(queue_path, home)  # the last start: it runs until the queue is empty
        removed_by_janitor += removed
        deadline = time.monotonic() + 300
        while queue.depth() and time.monotonic() < deadline:
            assert child.poll() is None, "the consumer died"
            time.sleep(0.1)
    finally:
        if child is not None:
            kill(child)
        producer.join(timeout=120)
        queue_left, deleted_at_end, stale = queue.depth(), queue.deleted(), queue.stale_deletes()
        max_receives = queue.max_receive_count()
        queue.close()

    assert queue_left == 0
    assert deleted_at_end == producer.sent
    lives = [after - before for before, after in zip([0, *deleted[:-1]], deleted, strict=True)]
    assert sum(1 for consumed in lives if consumed > 0) >= KILLS // 2  # killed while consuming, most times
    assert max_receives >= 2  # what was in flight at a kill was delivered again
    # Kills that land mid-write leave temp files (how many depends on timing); the next start removes them all.
    assert removed_by_janitor == left_by_kills
    assert temp_files(lake) == []

    con = open_reader(lake)
    try:
        for name, table in TABLES.items():
            key = ", ".join(quote_identifier(k) for k in table.key if k != "source")
            actual = set(fetch(con, f"SELECT {key} FROM {quote_identifier(name)}").rows)
            expected = producer.keys.get(name, set())
            assert (len(expected - actual), len(actual - expected)) == (0, 0), f"{name}: (lost, unexpected)"
        # No partial batch shows: every purchase has all its lines and all its unknown items, and adds up.
        [(incomplete,)] = fetch(
            con,
            "SELECT count(*) FROM purchases p"
            " LEFT JOIN (SELECT shopping_trip_id, count(*) AS n, sum(line_total) AS total FROM purchase_lines"
            " GROUP BY 1) l USING (shopping_trip_id)"
            " LEFT JOIN (SELECT shopping_trip_id, count(*) AS n FROM bad_carts GROUP BY 1) b USING (shopping_trip_id)"
            " WHERE p.line_count != coalesce(l.n, 0) OR p.total != coalesce(l.total, 0)"
            " OR p.unknown_item_count != coalesce(b.n, 0)",
        ).rows
        [(orphans,)] = fetch(
            con,
            "SELECT count(*) FROM purchase_lines"
            " WHERE shopping_trip_id NOT IN (SELECT shopping_trip_id FROM purchases)",
        ).rows
    finally:
        con.close()
    assert (incomplete, orphans) == (0, 0)
    # An unknown event's received_at is when this consumer took it: a redelivery legitimately differs.
    assert duplicates(lake, ignore={"unknown_events": ("received_at",)}) == {}
    print(
        f"messages {producer.sent}, deleted per life {lives}, stale deletes {stale}, "
        f"temp files left by kills {left_by_kills}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    consume_forever(Path(sys.argv[1]), Path(sys.argv[2]))
