"""Alerts: decline alerts once per (trip, subtype) however often the event arrives; threshold alerts fire once while
their condition holds, clear, and fire again; delivery is retried off the consumer's path."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ingest.fakes import RecordingSink
from jwo.alerts import AlertDispatcher, AlertingSink, check_thresholds
from reconcile.alerts import (
    Breach,
    DeclineWindow,
    Thresholds,
    ThresholdTracker,
    alert_payload,
    decline_alerts_for_rows,
    decline_rate_breaches,
    payment_event,
)
from reconcile.errors import AlertDeliveryError
from reconcile.fakes import MemoryAlertSink
from reconcile.rules import Alert, decline_alert

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def payment(
    event_id: str, trip: str = "trip-1", sub_type: str = "CaptureDeclined", store: str = "store-1", minute: int = 0
) -> dict[str, object]:
    return {
        "event_id": event_id,
        "shopping_trip_id": trip,
        "store_id": store,
        "event_time": T0 + timedelta(minutes=minute),
        "sub_type": sub_type,
        "amount": Decimal("12.34"),
        "currency": "USD",
        "brand": "VISA",
        "card_last_four": "4242",
        "reconciliation_id": None,
        "status": "DECLINED",
    }


def test_a_decline_delivered_many_times_gives_one_alert_with_the_jobs_id() -> None:
    rows = [payment("e1"), payment("e1"), payment("e2", minute=1), payment("ok", sub_type="CaptureApproved")]
    alerts = decline_alerts_for_rows(rows)
    assert len(alerts) == 1
    [alert] = alerts
    assert alert.alert_id == decline_alert(payment_event(rows[0])).alert_id
    assert alert.kind == "decline_capture"
    assert alert.created_at == T0
    assert "trip-1" in alert.message
    assert "store-1" in alert.message
    assert "12.34" in alert.message


def test_authorization_and_capture_declines_of_one_trip_are_two_alerts() -> None:
    alerts = decline_alerts_for_rows([payment("a", sub_type="AuthorizationDeclined"), payment("c")])
    assert sorted(a.kind for a in alerts) == ["decline_authorization", "decline_capture"]
    assert len({a.alert_id for a in alerts}) == 2
    assert alert_payload(alerts[0])["created_at"] == T0.isoformat()


def test_the_alerting_sink_writes_the_alert_with_the_batch_and_sends_it_once() -> None:
    lake, memory = RecordingSink(), MemoryAlertSink()
    dispatcher = AlertDispatcher({"memory": memory})
    sink = AlertingSink(lake, dispatcher)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        for batch in ("b1", "b1", "b2"):  # a redelivered batch, then the same event in another batch
            await asyncio.to_thread(sink.write, {"payment_events": [payment("e1")]}, batch)
        await asyncio.sleep(0.05)
        stop.set()
        await running

    asyncio.run(scenario())
    alert_ids = {row["alert_id"] for row in lake.rows("alerts")}
    assert len(alert_ids) == 1  # the table keeps one row per id
    assert [w[0].keys() for w in lake.writes] == [{"payment_events", "alerts"}] * 3
    assert [a.alert_id for a in memory.sent] == list(alert_ids)


def test_a_batch_without_declines_passes_through_unchanged() -> None:
    lake = RecordingSink()
    AlertingSink(lake, AlertDispatcher({})).write({"cart_events": [{"x": 1}]}, "b")
    assert lake.writes == [({"cart_events": [{"x": 1}]}, "b")]


def test_a_failing_sink_is_retried_without_holding_back_the_others() -> None:
    flaky, steady = MemoryAlertSink(fail_sends=2), MemoryAlertSink()
    dispatcher = AlertDispatcher({"flaky": flaky, "steady": steady}, backoff_seconds=0.01)
    [alert] = decline_alerts_for_rows([payment("e1")])

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        dispatcher.submit([alert])
        for _ in range(200):
            if flaky.sent:
                break
            await asyncio.sleep(0.005)
        stop.set()
        await running

    asyncio.run(scenario())
    assert steady.sent == [alert]
    assert steady.attempts == 1
    assert flaky.sent == [alert]
    assert flaky.attempts == 3
    assert dispatcher.delivered == 2
    assert dispatcher.failed == 0


def test_a_terminal_refusal_is_not_retried() -> None:
    class Refusing:
        calls = 0

        async def send(self, alert: Alert) -> None:
            Refusing.calls += 1
            raise AlertDeliveryError("400", transient=False)

    dispatcher = AlertDispatcher({"refusing": Refusing()}, backoff_seconds=0.01)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        dispatcher.submit(decline_alerts_for_rows([payment("e1")]))
        await asyncio.sleep(0.05)
        stop.set()
        await running

    asyncio.run(scenario())
    assert Refusing.calls == 1
    assert dispatcher.failed == 1


def test_a_threshold_fires_once_while_it_holds_then_again_after_it_cleared() -> None:
    tracker = ThresholdTracker()
    breach = [Breach("dead_letters", "events", "critical", "1 dead letter")]
    first, _ = tracker.update(breach, ["dead_letters"], T0)
    held, _ = tracker.update(breach, ["dead_letters"], T0 + timedelta(minutes=1))
    gone, cleared = tracker.update([], ["dead_letters"], T0 + timedelta(minutes=2))
    again, _ = tracker.update(breach, ["dead_letters"], T0 + timedelta(minutes=3))
    assert len(first) == 1
    assert held == []
    assert gone == []
    assert cleared == [("dead_letters", "events")]
    assert len(again) == 1
    assert again[0].alert_id != first[0].alert_id


def test_a_kind_not_evaluated_keeps_its_alert_active() -> None:
    tracker = ThresholdTracker()
    tracker.update([Breach("outbox_age", "outbox", "warning", "old")], ["outbox_age"], T0)
    _, cleared = tracker.update([], ["dead_letters"], T0 + timedelta(minutes=1))
    again, _ = tracker.update([Breach("outbox_age", "outbox", "warning", "old")], ["outbox_age"], T0)
    assert cleared == []
    assert again == []


def test_the_decline_rate_needs_a_minimum_sample_and_forgets_old_events() -> None:
    t = Thresholds(decline_window=timedelta(minutes=10), decline_rate=Decimal("0.5"), decline_min_events=4)
    window = DeclineWindow(t.decline_window)
    window.add([payment(f"d{i}", trip=f"t{i}") for i in range(3)])
    window.add([payment("d0", trip="t0")])  # a redelivery counts once
    assert window.counts(T0) == {"store-1": (3, 3)}
    assert decline_rate_breaches(window.counts(T0), t) == []  # 3 < 4 outcomes
    window.add([payment("ok", trip="t9", sub_type="CaptureApproved", minute=1)])
    [breach] = decline_rate_breaches(window.counts(T0 + timedelta(minutes=1)), t)
    assert breach.key == "store-1"
    assert "3 of 4" in breach.message
    assert decline_rate_breaches(window.counts(T0 + timedelta(minutes=10, seconds=30)), t) == []


def test_check_thresholds_writes_new_alerts_once_and_retries_a_failed_write() -> None:
    class FlakyTable:
        def __init__(self) -> None:
            self.fail, self.rows = 1, list[Mapping[str, object]]()

        def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")
            self.rows.extend(rows["alerts"])

    table, tracker, t = FlakyTable(), ThresholdTracker(), Thresholds(outbox_age_max_seconds=60, backlog_max=5)
    dispatcher = AlertDispatcher({})

    def check(minute: int, dead: int, age: float | None) -> list[Alert]:
        return asyncio.run(
            check_thresholds(
                tracker, t, table, dispatcher, T0 + timedelta(minutes=minute),
                dead_letters=lambda: {"events": dead, "eventfeed": 0},
                outbox_age=lambda: age, backlog=lambda: 3,
            )
        )  # fmt: skip

    assert check(0, 2, 10.0) == []  # the write failed: nothing recorded, nothing active
    assert [a.kind for a in check(1, 2, 120.0)] == ["dead_letters", "outbox_age"]
    assert check(2, 3, 130.0) == []  # still holding
    assert check(3, 0, None) == []  # dead letters cleared; the outbox age could not be read
    assert [a.kind for a in check(4, 1, 130.0)] == ["dead_letters"]
    assert [r["kind"] for r in table.rows] == ["dead_letters", "outbox_age", "dead_letters"]
    assert all(r["message"] for r in table.rows)
