"""What reconciliation needs from the outside: facts and its own current rows (the warehouse), somewhere to
write its rows (the lake), the identity store's debt list (so a debt closes the gate), where on-call is alerted,
and Amazon's Payment Service with the durable outbox of requests for it.

Each has a real adapter wired in `jwo/` and an in-memory fake in `reconcile/fakes.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, Protocol

import duckdb

from contracts.tables import Table
from reconcile.payments import PaymentReply, PaymentRequest, QueuedRequest, Refund, RefundableTrip
from reconcile.rules import Alert, Debt


@dataclass(frozen=True)
class Workspace:
    """An in-memory DuckDB connection that holds a run's inputs (`table_rules.INPUTS`), and what else the run
    needs to know."""

    con: duckdb.DuckDBPyConnection
    reports_available: bool
    """Whether any Intra-Day report line was ever loaded (if none, reports are not checked)."""


class FactsSource(Protocol):
    """Facts about trips: purchases, payment events, cancel requests and Intra-Day report lines."""

    def workspace(self, *, day: date | None = None, since: datetime | None = None) -> AbstractContextManager[Workspace]:
        """A connection holding `scope` (one column, shopping_trip_id) and the facts of those trips (`purchased`,
        `payments`, `reported`, `cancelled`, as `table_rules` describes them). In scope: the trips with a fact on
        the UTC day `day` (purchase end time, or event time for payments without a purchase, or a reconciliation
        row of that business day), or with a fact that arrived at or after `since`, plus every trip currently
        pending (its deadline may have passed); neither given: every trip. Closed when the run ends."""
        ...


class StateSource(Protocol):
    """Reconciliation's own current rows, as the views show them (newest version per key)."""

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Add to `con` (a workspace) the current rows the run compares with: `current_trips`, `current_debts`,
        `known_alerts`, `current_settlements` and `refunded`, as `table_rules.INPUTS` describes them."""
        ...

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        """Keyed by shopping trip id; every debt when `trip_ids` is None."""
        ...


class RowSink(Protocol):
    def write_tables(self, batch: Mapping[Table, Sequence[Mapping[str, object]]], batch_id: str) -> object:
        """Publish the rows of several tables under one batch id; writing the same batch again changes nothing."""
        ...

    def stage(
        self, table: Table, rows: Sequence[Mapping[str, object]]
    ) -> AbstractContextManager[Sequence[Mapping[str, object]]]:
        """Start writing a table's rows before their batch id is known (the lake encodes their files under temp
        names meanwhile); the context's value goes into `write_tables`'s batch in place of the rows. Nothing is
        published until then; leaving the context drops what was not."""
        ...


class DebtLedger(Protocol):
    """The identity store's debt list: an open debt for a shopper refuses them at the gate. The job opens only the
    debts that have a shopper (app entry): a card-entry debt has no one to refuse, and lives in `bad_debts` only."""

    def open(self, debt: Debt) -> bool: ...
    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool: ...
    def open_many(self, debts: Sequence[Debt]) -> int:
        """`open` for each debt, in one write of the store (a run opens thousands): how many were new."""
        ...

    def close_many(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        """`close` for each trip, in one write of the store: how many open debts were closed."""
        ...


class AlertSink(Protocol):
    """Where on-call is told about an alert (a log, a webhook, an SNS topic). `send` returns once the alert was
    accepted; it raises `reconcile.errors.AlertDeliveryError` when it was not (the caller retries later). Delivery is
    at least once: the same alert (same `alert_id`) may be sent again, and receivers de-duplicate on the id."""

    async def send(self, alert: Alert) -> None: ...


class PaymentService(Protocol):
    """Amazon's Payment Service (SigV4-signed HTTP). `call` returns the 2xx answer (business outcomes such as a
    DECLINED refund are data in it); it raises `reconcile.errors.PaymentRejectedError` when Amazon refused the
    request (terminal: 400 `{"errorMsg"}`) and `PaymentUnavailableError` when no answer came after its retries of
    429, 5xx and transport errors (transient: try again later)."""

    async def call(self, request: PaymentRequest) -> PaymentReply: ...


class RequestOutbox(Protocol):
    """Durable requests for the Payment Service and their delivery state (QUEUED → DELIVERED | FAILED)."""

    def enqueue(self, request: PaymentRequest, now: datetime) -> bool:
        """Keep the request until delivered; False when a request with this id is already kept (nothing changes)."""
        ...

    def claim(
        self, now: datetime, lease: timedelta, request_id: str | None = None, limit: int = 50
    ) -> list[QueuedRequest]:
        """QUEUED requests due at `now` (or the one `request_id`, if due), each hidden from other claims for
        `lease`: two senders never send the same request at the same time."""
        ...

    def delivered(self, request_id: str, response: str, at: datetime) -> None: ...
    def failed(self, request_id: str, message: str, at: datetime) -> None: ...
    def retry_at(self, request_id: str, message: str, at: datetime, next_attempt_at: datetime) -> None: ...
    def get(self, request_id: str) -> QueuedRequest | None: ...
    def requests(self, status: str | None = None, limit: int = 1000) -> list[QueuedRequest]:
        """Newest first."""
        ...


class RefundSource(Protocol):
    """What a refund depends on: the trip's captures and store (the warehouse) and the refunds already issued."""

    def refundable(self, shopping_trip_id: str) -> RefundableTrip | None: ...
    def refunds(self, shopping_trip_id: str | None = None) -> list[Refund]:
        """Current version of each refund (of the trip, or all), oldest first."""
        ...
