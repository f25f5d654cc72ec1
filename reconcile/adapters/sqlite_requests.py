"""`RequestOutbox` in SQLite (`JWO_HOME/payments.db`, WAL, synchronous=FULL): the Payment-Service requests we owe
Amazon, kept until delivered, shared by the CLI (which queues and tries once) and `jwo up`'s sender.

A claim is one `UPDATE … RETURNING` under `BEGIN IMMEDIATE`, so two processes never claim the same request.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from reconcile.payments import DeliveryStatus, Operation, PaymentRequest, QueuedRequest

_SCHEMA = """
create table if not exists payment_requests (
    request_id text primary key,
    operation text not null,
    store_id text not null,
    shopping_trip_id text not null,
    body text not null,
    status text not null default 'QUEUED',
    attempts integer not null default 0,
    queued_at text not null,
    next_attempt_at text,
    finished_at text,
    last_error text,
    response text
);
create index if not exists payment_requests_due on payment_requests (status, next_attempt_at);
"""
_COLUMNS = (
    "request_id, operation, store_id, shopping_trip_id, body, status, attempts, queued_at, next_attempt_at, "
    "finished_at, last_error, response"
)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _queued(row: tuple[Any, ...]) -> QueuedRequest:
    request = PaymentRequest(row[0], cast(Operation, row[1]), row[2], row[3], row[4])
    queued_at = _time(row[7])
    assert queued_at is not None
    return QueuedRequest(
        request=request,
        status=cast(DeliveryStatus, row[5]),
        attempts=int(row[6]),
        queued_at=queued_at,
        next_attempt_at=_time(row[8]),
        finished_at=_time(row[9]),
        last_error=row[10],
        response=row[11],
    )


class SqliteRequestOutbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                rows = self._db.execute(sql, args).fetchall()
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")
            return rows

    def enqueue(self, request: PaymentRequest, now: datetime) -> bool:
        rows = self._write(
            "insert into payment_requests (request_id, operation, store_id, shopping_trip_id, body, queued_at, "
            "next_attempt_at) values (?, ?, ?, ?, ?, ?, ?) on conflict (request_id) do nothing returning request_id",
            (
                request.request_id,
                request.operation,
                request.store_id,
                request.shopping_trip_id,
                request.body,
                _text(now),
                _text(now),
            ),
        )
        return bool(rows)

    def claim(
        self, now: datetime, lease: timedelta, request_id: str | None = None, limit: int = 50
    ) -> list[QueuedRequest]:
        only = "and request_id = ? " if request_id is not None else ""
        args: tuple[object, ...] = (_text(now + lease), _text(now))
        args += (request_id,) if request_id is not None else ()
        rows = self._write(
            f"update payment_requests set attempts = attempts + 1, next_attempt_at = ? where request_id in ("
            f"select request_id from payment_requests where status = 'QUEUED' and next_attempt_at <= ? {only}"
            f"order by next_attempt_at, queued_at limit {int(limit)}) returning {_COLUMNS}",
            args,
        )
        return sorted(map(_queued, rows), key=lambda q: (q.queued_at, q.request.request_id))

    def delivered(self, request_id: str, response: str, at: datetime) -> None:
        self._write(
            "update payment_requests set status = 'DELIVERED', finished_at = ?, response = ?, next_attempt_at = null "
            "where request_id = ?",
            (_text(at), response, request_id),
        )

    def failed(self, request_id: str, message: str, at: datetime) -> None:
        self._write(
            "update payment_requests set status = 'FAILED', finished_at = ?, last_error = ?, next_attempt_at = null "
            "where request_id = ?",
            (_text(at), message, request_id),
        )

    def retry_at(self, request_id: str, message: str, at: datetime, next_attempt_at: datetime) -> None:
        self._write(
            "update payment_requests set last_error = ?, next_attempt_at = ? "
            "where request_id = ? and status = 'QUEUED'",
            (message, _text(next_attempt_at), request_id),
        )

    def get(self, request_id: str) -> QueuedRequest | None:
        with self._lock:
            row = self._db.execute(
                f"select {_COLUMNS} from payment_requests where request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else _queued(row)

    def requests(self, status: str | None = None, limit: int = 1000) -> list[QueuedRequest]:
        where, args = ("where status = ? ", (status,)) if status is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"select {_COLUMNS} from payment_requests {where}"
                f"order by queued_at desc, request_id limit {int(limit)}",
                args,
            ).fetchall()
        return [_queued(r) for r in rows]
