"""Wiring of alerts (SPEC §5): decline alerts raised as PAYMENT events are consumed, threshold alerts raised by a
periodic check, both written to the `alerts` table and delivered to the configured sinks (log, webhook, SNS).

    eventfeed consumer ──write(batch)──► AlertingSink ──► LakeSink (payment_events + alerts, one batch)
                                              └─submit──► AlertDispatcher ──► log / webhook / SNS  (its own tasks)

Guarantees:
- Table: exactly once per (trip, decline subtype). The alert rows are part of the consumer's batch (same batch id,
  so a rewritten batch rewrites the same files), and their `alert_id` is `reconcile.rules.decline_alert`'s UUIDv5 of
  (trip, subtype), the id the reconciliation job uses too; the view keeps one row per id, so redeliveries, restarts
  and the job never double a row.
- Sinks: at least once. The dispatcher remembers the ids it was given (in memory, bounded), so a redelivered event
  is not sent again while the process lives; after a restart, a redelivered event (e.g. the process crashed after
  the write, before deleting the message) is sent again. Receivers de-duplicate on `alert_id` (the webhook also
  gets it as `Idempotency-Key`).
- Delivery never blocks the consumer: `write` only hands the alerts over (a deque and a wake-up on the dispatcher's
  loop). Each (alert, sink) delivery is a task retried with exponential backoff; a failure is logged and never
  touches the table row. Latency is the consumer's micro-batch linger (0.5 s by default) plus one send.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from contracts.aws import AwsEndpoint
from contracts.reconcile_tables import ALERTS
from ingest.ports import TableSink
from reconcile.adapters.log_alerts import LogAlertSink
from reconcile.adapters.sns_alerts import SnsAlertSink
from reconcile.adapters.webhook_alerts import WebhookAlertSink
from reconcile.alerts import (
    Breach,
    DeclineWindow,
    Thresholds,
    ThresholdTracker,
    backlog_breaches,
    dead_letter_breaches,
    decline_alerts_for_rows,
    decline_rate_breaches,
    outbox_age_breaches,
)
from reconcile.errors import AlertDeliveryError
from reconcile.ports import AlertSink
from reconcile.rows import alert_row
from reconcile.rules import Alert
from reconcile.settings import AlertSettings
from warehouse.query import run_query
from warehouse.views import quote_literal

log = logging.getLogger("jwo.alerts")
T = TypeVar("T")

SNS_CONFIG = AioConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"})


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlertDispatcher:
    """Delivers alerts to every sink, off the caller's path. `submit` is thread-safe and never waits; `run` (on an
    event loop, until `stop`) starts one delivery task per (alert, sink), retried with backoff up to `attempts`."""

    def __init__(
        self,
        sinks: Mapping[str, AlertSink],
        *,
        attempts: int = 8,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 60.0,
        send_timeout_seconds: float = 30.0,
        concurrency: int = 16,
        remember: int = 100_000,
        drain_seconds: float = 5.0,
    ) -> None:
        self._sinks = dict(sinks)
        self._attempts, self._backoff, self._max_backoff = attempts, backoff_seconds, max_backoff_seconds
        self._send_timeout, self._concurrency, self._remember = send_timeout_seconds, concurrency, remember
        self._drain = drain_seconds
        self._lock = threading.Lock()
        self._pending: collections.deque[Alert] = collections.deque()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    def submit(self, alerts: Iterable[Alert]) -> int:
        """Queue alerts not seen before (by id) for delivery; returns how many were new. Any thread."""
        with self._lock:
            new = []
            for alert in alerts:
                if alert.alert_id in self._seen:
                    continue
                self._seen[alert.alert_id] = None
                if len(self._seen) > self._remember:
                    self._seen.popitem(last=False)
                new.append(alert)
            self._pending.extend(new)
            loop, wake = self._loop, self._wake
        if new and loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: what is pending is logged at the end of run
                loop.call_soon_threadsafe(wake.set)
        return len(new)

    async def run(self, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), wake
        sem = asyncio.Semaphore(self._concurrency)
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                self._start_pending(sem)
                if stop.is_set():
                    break
                woken = asyncio.create_task(wake.wait())
                await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                wake.clear()
        finally:
            stopping.cancel()
            with self._lock:
                self._loop = self._wake = None
            self._start_pending(sem)
            if self._tasks:
                _, undone = await asyncio.wait(set(self._tasks), timeout=self._drain)
                for task in undone:
                    task.cancel()
                if undone:
                    log.warning("%d alert deliveries unfinished at shutdown (the table has the alerts)", len(undone))

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + len(self._pending)

    def _start_pending(self, sem: asyncio.Semaphore) -> None:
        while self._pending:
            alert = self._pending.popleft()
            for name, sink in self._sinks.items():
                task = asyncio.create_task(self._deliver(alert, name, sink, sem))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, alert: Alert, name: str, sink: AlertSink, sem: asyncio.Semaphore) -> None:
        for attempt in range(1, self._attempts + 1):
            terminal = False
            async with sem:
                try:
                    async with asyncio.timeout(self._send_timeout):
                        await sink.send(alert)
                    self.delivered += 1
                    return
                except AlertDeliveryError as exc:
                    problem, terminal = str(exc), not exc.transient
                except Exception as exc:  # a sink's bug must not end delivery to the others
                    problem = f"{type(exc).__name__}: {exc}"
            if terminal or attempt == self._attempts:
                self.failed += 1
                log.error("alert %s not delivered to %s: %s", alert.alert_id, name, problem)
                return
            delay = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
            log.warning("alert %s to %s failed (try %d): %s; retry in %.1f s", alert.alert_id, name, attempt,
                        problem, delay)  # fmt: skip
            await asyncio.sleep(delay)


class AlertingSink:
    """A TableSink around another: a batch with `payment_events` rows gets its decline alerts added to the `alerts`
    table in the same write, and, once the write returned, the alerts go to the dispatcher. Also feeds the decline
    window the threshold check reads."""

    def __init__(self, inner: TableSink, dispatcher: AlertDispatcher, window: DeclineWindow | None = None) -> None:
        self._inner, self._dispatcher = inner, dispatcher
        self._window = window or DeclineWindow(timedelta(minutes=15))
        self._window_lock = threading.Lock()

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
        payments = rows.get("payment_events") or ()
        alerts = decline_alerts_for_rows(payments) if payments else []
        if alerts:
            rows = {**rows, ALERTS.name: [*rows.get(ALERTS.name, ()), *(alert_row(a) for a in alerts)]}
        self._inner.write(rows, batch_id)
        if payments:
            with self._window_lock:
                self._window.add(payments)
        if alerts:
            self._dispatcher.submit(alerts)

    def decline_counts(self, now: datetime) -> dict[str, tuple[int, int]]:
        with self._window_lock:
            return self._window.counts(now)


async def _read(kind: str, read: Callable[[], T | None] | None) -> T | None:
    if read is None:
        return None
    try:
        return await asyncio.to_thread(read)
    except Exception as exc:  # an input that cannot be read leaves its alerts as they are
        log.warning("threshold check: could not read %s: %s", kind, exc)
        return None


async def check_thresholds(
    tracker: ThresholdTracker,
    thresholds: Thresholds,
    table: TableSink,
    dispatcher: AlertDispatcher,
    now: datetime,
    *,
    decline_counts: Callable[[], Mapping[str, tuple[int, int]]] | None = None,
    dead_letters: Callable[[], Mapping[str, int]] | None = None,
    outbox_age: Callable[[], float | None] | None = None,
    backlog: Callable[[], int | None] | None = None,
) -> list[Alert]:
    """One round: read the inputs (each may be absent or fail: its kind is then not evaluated), raise the alerts of
    new breaches into the table and the sinks. Returns the alerts raised."""
    breaches: list[Breach] = []
    evaluated: list[str] = []
    if (counts := await _read("decline rate", decline_counts)) is not None:
        evaluated.append("decline_rate")
        breaches += decline_rate_breaches(counts, thresholds)
    if (dead := await _read("dead letters", dead_letters)) is not None:
        evaluated.append("dead_letters")
        breaches += dead_letter_breaches(dead, thresholds)
    if (age := await _read("outbox age", outbox_age)) is not None:
        evaluated.append("outbox_age")
        breaches += outbox_age_breaches(age, thresholds)
    if (pending := await _read("backlog", backlog)) is not None:
        evaluated.append("reconcile_backlog")
        breaches += backlog_breaches(pending, thresholds)
    fired, cleared = tracker.update(breaches, evaluated, now)
    for kind, key in cleared:
        log.info("alert condition cleared: %s %s", kind, key)
    if not fired:
        return []
    ids = "\n".join(sorted(a.alert_id for a in fired))
    batch_id = f"alerts-{hashlib.sha256(ids.encode()).hexdigest()[:32]}"
    try:
        await asyncio.to_thread(table.write, {ALERTS.name: [alert_row(a) for a in fired]}, batch_id)
    except Exception:
        log.exception("threshold alerts not written; raised again on the next check")
        tracker.forget(fired)
        return []
    dispatcher.submit(fired)
    return fired


async def run_threshold_checks(
    settings: AlertSettings,
    table: TableSink,
    dispatcher: AlertDispatcher,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = utc_now,
    decline_counts: Callable[[datetime], Mapping[str, tuple[int, int]]] | None = None,
    dead_letters: Callable[[], Mapping[str, int]] | None = None,
    outbox_age: Callable[[], float | None] | None = None,
    backlog: Callable[[], int | None] | None = None,
) -> None:
    """`check_thresholds` every `settings.check_interval_seconds` until `stop`."""
    tracker, thresholds = ThresholdTracker(), settings.thresholds()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.check_interval_seconds)
        if stop.is_set():
            return
        now = clock()
        counts = None if decline_counts is None else functools.partial(decline_counts, now)
        try:
            await check_thresholds(tracker, thresholds, table, dispatcher, now, decline_counts=counts,
                                   dead_letters=dead_letters, outbox_age=outbox_age, backlog=backlog)  # fmt: skip
        except Exception:
            log.exception("threshold check failed; trying again next period")


def lake_backlog(lake_dir: Path, grace: timedelta, now: datetime) -> int:
    """Trips with a purchase that landed more than `grace` ago and no reconciliation row yet."""
    cutoff = f"TIMESTAMPTZ {quote_literal((now - grace).astimezone(UTC).isoformat())}"
    sql = (
        f"select count(*) from purchases p where p.created_at < {cutoff} and not exists "
        "(select 1 from trip_reconciliation r where r.shopping_trip_id = p.shopping_trip_id)"
    )
    count = run_query(lake_dir, sql).rows[0][0]
    return int(str(count))


@dataclass
class Alerting:
    """What `open_alerting` built: the sink to give the eventfeed consumer, and `run` for the consumers' loop."""

    settings: AlertSettings
    sink: AlertingSink
    dispatcher: AlertDispatcher
    inner: TableSink
    sinks: dict[str, AlertSink] = field(default_factory=dict)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        dead_letters: Callable[[], Mapping[str, int]] | None = None,
        outbox_age: Callable[[], float | None] | None = None,
        backlog: Callable[[], int | None] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """The dispatcher and the threshold check, until `stop` (then the dispatcher drains for a few seconds)."""
        await asyncio.gather(
            self.dispatcher.run(stop),
            run_threshold_checks(
                self.settings,
                self.inner,
                self.dispatcher,
                stop,
                clock=clock,
                decline_counts=self.sink.decline_counts,
                dead_letters=dead_letters,
                outbox_age=outbox_age,
                backlog=backlog,
            ),
        )


@contextlib.asynccontextmanager
async def open_alerting(
    settings: AlertSettings,
    inner: TableSink,
    endpoint: AwsEndpoint | None = None,
    *,
    extra_sinks: Mapping[str, AlertSink] | None = None,
) -> AsyncIterator[Alerting]:
    """Build the configured sinks (their clients live as long as the context) around `inner`. Enter it on the loop
    that runs `Alerting.run` (the consumers' loop)."""
    async with contextlib.AsyncExitStack() as stack:
        sinks: dict[str, AlertSink] = {}
        for name in dict.fromkeys(settings.sinks):
            if name == "log":
                sinks[name] = LogAlertSink()
            elif name == "webhook" and settings.webhook_url:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
                )
                sinks[name] = WebhookAlertSink(client, settings.webhook_url, attempts=settings.webhook_attempts)
            elif name == "sns" and settings.sns_topic_arn:
                kwargs = endpoint.client_kwargs() if endpoint is not None else {}
                sns = await stack.enter_async_context(get_session().create_client("sns", config=SNS_CONFIG, **kwargs))
                sinks[name] = SnsAlertSink(sns, settings.sns_topic_arn)
        sinks.update(extra_sinks or {})
        dispatcher = AlertDispatcher(
            sinks, attempts=settings.delivery_attempts, max_backoff_seconds=settings.delivery_max_backoff_seconds
        )
        window = DeclineWindow(timedelta(minutes=settings.decline_window_minutes))
        yield Alerting(settings, AlertingSink(inner, dispatcher, window), dispatcher, inner, sinks)
