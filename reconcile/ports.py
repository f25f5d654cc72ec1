"""What reconciliation needs from the outside: facts and its own current rows (the warehouse), somewhere to
write its rows (the lake), the identity store's debt list (so a debt closes the gate), and where on-call is alerted.

Each has a real adapter wired in `jwo/` and an in-memory fake in `reconcile/fakes.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

import duckdb

from contracts.tables import Table
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


class DebtLedger(Protocol):
    """The identity store's debt list: an open debt for a shopper refuses them at the gate."""

    def open(self, debt: Debt) -> bool: ...
    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool: ...


class AlertSink(Protocol):
    """Where on-call is told about an alert (a log, a webhook, an SNS topic). `send` returns once the alert was
    accepted; it raises `reconcile.errors.AlertDeliveryError` when it was not (the caller retries later). Delivery is
    at least once: the same alert (same `alert_id`) may be sent again, and receivers de-duplicate on the id."""

    async def send(self, alert: Alert) -> None: ...
