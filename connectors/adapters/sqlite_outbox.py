"""Durable outbox and idempotency ledger in SQLite (WAL), with group commit.

One writer thread takes every request waiting at that moment and commits them in one transaction,
so many concurrent requests share one fsync. A request's idempotency record and its messages are
written together: either the answer and its events are durable, or neither is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.errors import OutboxUnavailableError
from connectors.ports import OutboxRecord, ParkedMessage, PendingMessage, StoredResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (route, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox_parked (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    parked_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at);
"""

_MAX_GROUP = 512
_STATEMENTS_KEPT = 1024
_ROWS_PER_STATEMENT = 256
"""Rows per multi-row statement (6 parameters each for a key: well below SQLite's 32,766)."""
_INSERT_KEYS = "INSERT INTO idempotency (route, key, fingerprint, status, body, created_at) VALUES "
_INSERT_NEW_KEYS = "INSERT OR IGNORE INTO idempotency (route, key, fingerprint, status, body, created_at) VALUES "
_INSERT_MESSAGES = "INSERT INTO outbox (message_id, body, created_at) VALUES "


@functools.cache
def _statement(insert: str, width: int, rows: int) -> str:
    """`insert` with `rows` times `(?, ...)` of `width` parameters. The same string object every time, so
    the connection's statement cache finds it without hashing a new string of up to 256 rows."""
    row = "(" + ",".join("?" * width) + ")"
    return insert + ",".join((row,) * rows)


def _insert_rows(conn: sqlite3.Connection, insert: str, params: list[object], width: int) -> None:
    """`insert` with one `(?, ...)` per `width` parameters, `_ROWS_PER_STATEMENT` rows per statement."""
    step = _ROWS_PER_STATEMENT * width
    for start in range(0, len(params), step):
        chunk = params[start : start + step]
        conn.execute(_statement(insert, width, len(chunk) // width), chunk)


def _connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    # Every group size makes its own multi-row statements (two per size, up to 256 rows): a statement cache
    # of the default 128 would prepare some again and again, each time releasing and retaking the GIL.
    conn = sqlite3.connect(
        path, timeout=10.0, isolation_level=None, check_same_thread=False, cached_statements=_STATEMENTS_KEPT
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


@dataclass
class _Work:
    route: str
    key: str
    response: StoredResponse
    records: Sequence[OutboxRecord]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[StoredResponse]


class _Deadlines:
    """The commits waiting on one event loop, and one timer for all of them: a commit not confirmed within
    `timeout` fails (its request answers 500; the write may still land later). A timer per commit cost
    ≈ 2.7 µs of the loop's time per request (uvloop, measured); this checks every tenth of `timeout`, so a
    commit fails between 1 and 1.1 times `timeout` after it was asked for."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._tick = timeout / 10
        self._waiting: collections.deque[tuple[float, asyncio.Future[StoredResponse]]] = collections.deque()
        self._armed = False

    def add(self, future: asyncio.Future[StoredResponse]) -> None:
        """Called on the loop's thread."""
        self._waiting.append((self._loop.time() + self._timeout, future))
        if not self._armed:
            self._armed = True
            self._loop.call_later(self._tick, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        waiting = self._waiting
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, future = waiting.popleft()
            if not future.done():
                message = f"the outbox did not confirm the write within {self._timeout:.2f}s"
                future.set_exception(OutboxUnavailableError(message))
        # Commits are confirmed in the order they were asked for, so the first one waiting is the oldest.
        if waiting:
            self._loop.call_later(self._tick, self._check)
        else:
            self._armed = False


def _settle_all(settled: list[tuple[_Work, StoredResponse | BaseException]]) -> None:
    """Complete a group's futures on their loop: one wake-up per group and loop, not one per request."""
    for work, result in settled:
        future = work.future
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class SqliteOutbox:
    """Implements `Outbox` (request path) and `OutboxQueue` (relay)."""

    def __init__(
        self,
        path: Path,
        *,
        commit_timeout: float = 1.5,
        on_commit: Callable[[], None] | None = None,
        on_group: Callable[[int, float], None] | None = None,
        recent_capacity: int = 100_000,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._commit_timeout = commit_timeout
        self._on_commit = on_commit
        self._on_group = on_group
        """Told of each group committed: (requests in it, seconds its COMMIT took: the WAL's fsync)."""
        self._recent: collections.OrderedDict[tuple[str, str], tuple[float, str, int, bytes]] = (
            collections.OrderedDict()
        )
        """Answers committed by this process: (commit time, fingerprint, status, body), oldest first. Tuples of
        plain values only, which the cyclic GC stops tracking: with objects in them, its full collections
        scanned all 100,000 (≈ 60 ms each, measured; ≈ 12 ms like this). Ordered, because the oldest go
        first: on a plain dict `next(iter(d))` walks over the slots of every key deleted before, so once
        full, each eviction took 8-40 µs with the GIL held (measured), ≈ 0.4 µs like this."""
        self._recent_lock = threading.Lock()
        self._recent_capacity = recent_capacity
        self._writer = _connect(path, synchronous="FULL")
        # A multi-row INSERT inside a transaction keeps a statement journal (the pages it changes, so it can
        # be undone alone); past 64 KiB it spills to a temporary file, which this build keeps on disk: an
        # open, write, unlink and close for about one group in three (strace). In memory instead.
        self._writer.execute("PRAGMA temp_store=MEMORY")
        self._writer.executescript(_SCHEMA)
        self._reader = _connect(path, synchronous="NORMAL")
        self._reader_lock = threading.Lock()
        self._queue = SqliteOutboxQueue(path)
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)
        self._thread.start()
        self.groups_committed = 0
        self.requests_committed = 0

    # -- request path -----------------------------------------------------------------------------

    def lookup(self, route: str, key: str) -> StoredResponse | None:
        with self._reader_lock:
            row = self._reader.execute(
                "SELECT fingerprint, status, body FROM idempotency WHERE route = ? AND key = ?", (route, key)
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(fingerprint=row[0], status=row[1], body=bytes(row[2]))

    def recall(self, route: str, key: str) -> StoredResponse | None:
        """Answers this process committed recently, from memory: no disk read, no lock, no GIL release."""
        found = self._recent.get((route, key))
        return None if found is None else StoredResponse(fingerprint=found[1], status=found[2], body=found[3])

    async def commit(
        self, route: str, key: str, response: StoredResponse, records: Sequence[OutboxRecord]
    ) -> StoredResponse:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredResponse] = loop.create_future()
        deadlines = self._deadlines.get(loop)
        if deadlines is None:  # a new loop (tests run many): forget the closed ones
            self._deadlines = {old: d for old, d in self._deadlines.items() if not old.is_closed()}
            deadlines = self._deadlines[loop] = _Deadlines(loop, self._commit_timeout)
        deadlines.add(future)
        self._work.put(_Work(route, key, response, records, loop, future))
        return await future

    def _write_loop(self) -> None:
        while True:
            first = self._work.get()
            if first is None:
                return
            group = [first]
            while len(group) < _MAX_GROUP:
                try:
                    more = self._work.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._work.put(None)
                    break
                group.append(more)
            self._commit_group(group)

    def _commit_group(self, group: list[_Work]) -> None:
        results: list[StoredResponse | BaseException] = []
        now = time.time()
        try:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                results.extend(self._apply_group(group, now))
                committing = time.perf_counter()
                self._writer.execute("COMMIT")
                committed = time.perf_counter() - committing
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = OutboxUnavailableError(f"the outbox could not write: {exc}")
            results = [error] * len(group)
        else:
            self.groups_committed += 1
            self.requests_committed += len(group)
            self._remember(group, results, now)
            if self._on_commit is not None:
                self._on_commit()
            if self._on_group is not None:
                self._on_group(len(group), committed)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Work, StoredResponse | BaseException]]] = {}
        for work, result in zip(group, results, strict=True):
            by_loop.setdefault(work.loop, []).append((work, result))
        for loop, settled in by_loop.items():
            # A caller that timed out may have had its event loop closed since: the write stands
            # (a retry finds it), and the writer thread must live on for everyone else.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)

    def _remember(self, group: list[_Work], results: list[StoredResponse | BaseException], now: float) -> None:
        recent = self._recent
        with self._recent_lock:
            for work, result in zip(group, results, strict=True):
                if isinstance(result, StoredResponse) and (work.route, work.key) not in recent:
                    recent[(work.route, work.key)] = (now, result.fingerprint, result.status, result.body)
            while len(recent) > self._recent_capacity:
                recent.popitem(last=False)

    def _forget_before(self, cutoff: float) -> None:
        recent = self._recent
        with self._recent_lock:
            while recent:
                oldest = next(iter(recent))
                if recent[oldest][0] >= cutoff:
                    break
                recent.popitem(last=False)

    def _apply_group(self, group: list[_Work], now: float) -> list[StoredResponse]:
        """Write a group with a few multi-row statements, not two per request: each statement releases
        and retakes the GIL, and while the event loop is busy every retake waits for it.

        Nearly always every key of a group is new (a replay this process remembers is answered before it
        gets here): then one INSERT OR IGNORE of the keys, which inserts them all, and one INSERT of their
        messages. When it inserted fewer rows than the group has keys, some key was recorded before (a
        replay whose first answer this process does not remember, or a key used twice in the group): the
        transaction is rolled back and the group written again by `_apply_mixed_group`. (`total_changes` is a
        32-bit count that wraps after 2**31 rows: a group across the wrap takes that slower way, never a
        wrong one, since the difference can only equal the group's size when it is the true count.)"""
        before = self._writer.total_changes
        keys: list[object] = []
        messages: list[object] = []
        for work in group:
            response = work.response
            keys += (work.route, work.key, response.fingerprint, response.status, response.body, now)
            for record in work.records:
                messages += (record.message_id, record.body, now)
        _insert_rows(self._writer, _INSERT_NEW_KEYS, keys, 6)
        if self._writer.total_changes - before == len(group):
            _insert_rows(self._writer, _INSERT_MESSAGES, messages, 3)
            return [work.response for work in group]
        self._writer.execute("ROLLBACK")
        self._writer.execute("BEGIN IMMEDIATE")
        return self._apply_mixed_group(group, now)

    def _apply_mixed_group(self, group: list[_Work], now: float) -> list[StoredResponse]:
        """A group where some key may be recorded already: one look-up of the group's keys recorded, one
        INSERT of the new keys, one of their messages (in group order, so the outbox keeps the requests'
        commit order). A key seen before, in the file or earlier in the group, answers with what was
        recorded for it."""
        answers: dict[tuple[str, str], StoredResponse] = self._recorded({(w.route, w.key) for w in group})
        keys: list[object] = []
        messages: list[object] = []
        results: list[StoredResponse] = []
        for work in group:
            known = answers.get((work.route, work.key))
            if known is not None:
                results.append(known)
                continue
            response = work.response
            answers[(work.route, work.key)] = response
            results.append(response)
            keys += (work.route, work.key, response.fingerprint, response.status, response.body, now)
            for record in work.records:
                messages += (record.message_id, record.body, now)
        _insert_rows(self._writer, _INSERT_KEYS, keys, 6)
        _insert_rows(self._writer, _INSERT_MESSAGES, messages, 3)
        return results

    def _recorded(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], StoredResponse]:
        found: dict[tuple[str, str], StoredResponse] = {}
        pairs = list(keys)
        for start in range(0, len(pairs), _ROWS_PER_STATEMENT):
            chunk = pairs[start : start + _ROWS_PER_STATEMENT]
            values = ",".join(("(?,?)",) * len(chunk))
            rows = self._writer.execute(
                f"SELECT i.route, i.key, i.fingerprint, i.status, i.body FROM (VALUES {values}) AS v "
                "CROSS JOIN idempotency AS i ON i.route = v.column1 AND i.key = v.column2",
                [part for pair in chunk for part in pair],
            ).fetchall()
            for route, key, fp, status, body in rows:
                found[(route, key)] = StoredResponse(fingerprint=fp, status=status, body=bytes(body))
        return found

    # -- relay (also readable from another process: `SqliteOutboxQueue`) ----------------------------

    def pending(self, limit: int) -> list[PendingMessage]:
        return self._queue.pending(limit)

    def mark_sent(self, seqs: Sequence[int]) -> None:
        self._queue.mark_sent(seqs)

    def park(self, refused: Sequence[tuple[int, str]]) -> None:
        self._queue.park(refused)

    def parked(self) -> int:
        return self._queue.parked()

    def parked_messages(self, limit: int) -> list[ParkedMessage]:
        return self._queue.parked_messages(limit)

    def requeue(self, seqs: Sequence[int] | None = None) -> list[int]:
        return self._queue.requeue(seqs)

    def stats(self, now: datetime) -> tuple[int, float]:
        return self._queue.stats(now)

    def prune(self, now: datetime, retention: timedelta) -> tuple[int, int]:
        """Forget idempotency keys and sent messages older than `retention` (at least 48 h)."""
        cutoff = (now - retention).timestamp()
        self._forget_before(cutoff)
        return self._queue.prune(cutoff)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=10)
        self._queue.close()
        for conn in (self._writer, self._reader):
            with contextlib.suppress(sqlite3.Error):
                conn.close()


class SqliteOutboxQueue:
    """Implements `OutboxQueue` over an outbox file that a `SqliteOutbox` (maybe in another process) writes:
    what the relay needs, on a connection of its own (WAL: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self._conn = _connect(path, synchronous="NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def pending(self, limit: int) -> list[PendingMessage]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, message_id, body FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [PendingMessage(seq=r[0], message_id=r[1], body=bytes(r[2])) for r in rows]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        now = time.time()
        marks = ",".join("?" * len(seqs))
        with self._lock:  # one statement: one short write transaction, not one per message
            self._conn.execute(f"UPDATE outbox SET sent_at = ? WHERE seq IN ({marks})", (now, *seqs))

    def park(self, refused: Sequence[tuple[int, str]]) -> None:
        """Move refused messages to `outbox_parked`, with the reason, in one transaction."""
        if not refused:
            return
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO outbox_parked (seq, message_id, body, created_at, parked_at, reason) "
                    "SELECT seq, message_id, body, created_at, ?, ? FROM outbox WHERE seq = ? AND sent_at IS NULL",
                    [(now, reason, seq) for seq, reason in refused],
                )
                self._conn.executemany(
                    "DELETE FROM outbox WHERE seq = ? AND sent_at IS NULL", [(s,) for s, _ in refused]
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def parked(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM outbox_parked").fetchone()[0])

    def parked_messages(self, limit: int) -> list[ParkedMessage]:
        """The parked messages, oldest first (`jwo outbox parked`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, message_id, reason, parked_at FROM outbox_parked ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [ParkedMessage(r[0], r[1], r[2], datetime.fromtimestamp(r[3], UTC)) for r in rows]

    def requeue(self, seqs: Sequence[int] | None = None) -> list[int]:
        """Put parked messages back on the outbox (those of `seqs`, or all of them), in one transaction, once the
        reason they were refused is fixed (`jwo outbox requeue`). Each keeps its sequence number, message id,
        body and creation time, so the relay sends them first and a consumer de-duplicates them as before; a
        sequence number not parked is ignored. Returns the sequence numbers put back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if seqs is None:
                    chosen = [r[0] for r in self._conn.execute("SELECT seq FROM outbox_parked ORDER BY seq")]
                else:
                    chosen = sorted(
                        {int(s) for s in seqs} & {r[0] for r in self._conn.execute("SELECT seq FROM outbox_parked")}
                    )
                back = [(seq,) for seq in chosen]
                self._conn.executemany(
                    "INSERT INTO outbox (seq, message_id, body, created_at) "
                    "SELECT seq, message_id, body, created_at FROM outbox_parked WHERE seq = ?",
                    back,
                )
                self._conn.executemany("DELETE FROM outbox_parked WHERE seq = ?", back)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return chosen

    def stats(self, now: datetime) -> tuple[int, float]:
        with self._lock:
            count, oldest = self._conn.execute(
                "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL"
            ).fetchone()
        age = max(0.0, now.timestamp() - oldest) if oldest is not None else 0.0
        return int(count), age

    def prune(self, cutoff: float) -> tuple[int, int]:
        with self._lock:
            keys = self._conn.execute("DELETE FROM idempotency WHERE created_at < ?", (cutoff,)).rowcount
            sent = self._conn.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND created_at < ?", (cutoff,)
            ).rowcount
        return keys, sent

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
