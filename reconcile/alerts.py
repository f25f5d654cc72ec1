"""Alerts (SPEC §5): decline alerts from PAYMENT events as they are consumed, and threshold alerts. Pure: values in,
values out; the clock is passed in.

- Decline alerts reuse `reconcile.rules.decline_alert`: one per (trip, decline subtype), its id a UUIDv5 of the
  two, so the real-time path and the reconciliation job raise the same alert (the `alerts` table keeps one row per
  id) however often the event is delivered.
- Threshold alerts: decline rate per store over a sliding window (with a minimum sample), dead letters on a queue,
  the age of the outbox's oldest unsent message, and the reconciliation backlog. `ThresholdTracker` de-duplicates
  them: a breach of the same (kind, key) fires once while it holds; once it has cleared it may fire again, under a
  new id (derived from the kind, key and the time it started).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from reconcile.rules import (
    AUTH_APPROVED,
    AUTH_DECLINED,
    CAPTURE_APPROVED,
    CAPTURE_DECLINED,
    DECLINES,
    Alert,
    PaymentEvent,
    decline_alerts,
)

ThresholdKind = Literal["decline_rate", "dead_letters", "outbox_age", "reconcile_backlog"]
THRESHOLD_KINDS: tuple[ThresholdKind, ...] = ("decline_rate", "dead_letters", "outbox_age", "reconcile_backlog")
_OUTCOMES = frozenset({AUTH_APPROVED, AUTH_DECLINED, CAPTURE_APPROVED, CAPTURE_DECLINED})
_NAMESPACE = uuid.UUID("0b6f2c1e-5d1a-4c36-a0a7-8f3e9d2b7c41")


# --------------------------------------------------------------------------- decline alerts


def payment_event(row: Mapping[str, object]) -> PaymentEvent:
    """A `payment_events` row (as ingest writes it) as the rules' PaymentEvent."""
    r = cast(Mapping[str, Any], row)
    return PaymentEvent(
        event_id=str(r["event_id"]),
        shopping_trip_id=str(r["shopping_trip_id"]),
        store_id=str(r["store_id"]),
        sub_type=str(r["sub_type"]),
        amount=Decimal(r["amount"]),
        currency=str(r["currency"]),
        event_time=r["event_time"],
    )


def decline_alerts_for_rows(rows: Iterable[Mapping[str, object]]) -> list[Alert]:
    """One alert per (trip, decline subtype) among these `payment_events` rows; duplicates collapse."""
    return decline_alerts(payment_event(r) for r in rows if r.get("sub_type") in DECLINES)


def alert_payload(alert: Alert) -> dict[str, str]:
    """The JSON body sent to external sinks (webhook, SNS)."""
    return {**asdict(alert), "created_at": alert.created_at.isoformat()}


# --------------------------------------------------------------------------- threshold evaluators


@dataclass(frozen=True)
class Breach:
    """A threshold condition that holds now. `key` tells instances of one kind apart (store, queue)."""

    kind: ThresholdKind
    key: str
    severity: str
    message: str
    store_id: str = ""


@dataclass(frozen=True)
class Thresholds:
    decline_window: timedelta = timedelta(minutes=15)
    decline_rate: Decimal = Decimal("0.20")
    """A store whose declines / payment outcomes in the window exceed this breaches."""
    decline_min_events: int = 20
    """Fewer payment outcomes than this in the window: no verdict (too small a sample)."""
    dead_letters_max: int = 0
    outbox_age_max_seconds: float = 300.0
    backlog_max: int = 1000


@dataclass
class DeclineWindow:
    """Payment outcomes (authorization and capture, approved or declined) of the last `window`, per store, by event
    time; an event id counts once however often it is added. In memory: a restart starts with an empty window."""

    window: timedelta
    _events: dict[str, tuple[datetime, str, bool]] = field(default_factory=dict)

    def add(self, rows: Iterable[Mapping[str, object]]) -> None:
        for row in rows:
            sub_type = row.get("sub_type")
            if sub_type not in _OUTCOMES:
                continue
            event_id, moment = str(row["event_id"]), cast(datetime, row["event_time"])
            self._events.setdefault(event_id, (moment, str(row["store_id"]), sub_type in DECLINES))

    def counts(self, now: datetime) -> dict[str, tuple[int, int]]:
        """(declines, outcomes) per store within the window ending at `now`; older events are forgotten."""
        start = now - self.window
        for event_id in [e for e, (t, _, _) in self._events.items() if t < start]:
            del self._events[event_id]
        out: dict[str, tuple[int, int]] = {}
        for moment, store, declined in self._events.values():
            if moment > now:
                continue
            d, n = out.get(store, (0, 0))
            out[store] = (d + declined, n + 1)
        return out


def decline_rate_breaches(counts: Mapping[str, tuple[int, int]], t: Thresholds) -> list[Breach]:
    out: list[Breach] = []
    for store, (declines, total) in sorted(counts.items()):
        if total < t.decline_min_events or total == 0:
            continue
        rate = Decimal(declines) / Decimal(total)
        if rate > t.decline_rate:
            minutes = int(t.decline_window.total_seconds() // 60)
            message = (
                f"store {store}: {declines} of {total} payments declined in the last {minutes} min "
                f"({rate:.1%} > {t.decline_rate:.1%})"
            )
            out.append(Breach("decline_rate", store, "critical", message, store_id=store))
    return out


def dead_letter_breaches(dead_letters: Mapping[str, int], t: Thresholds) -> list[Breach]:
    return [
        Breach("dead_letters", queue, "critical", f"queue {queue}: {depth} message(s) on its dead-letter queue")
        for queue, depth in sorted(dead_letters.items())
        if depth > t.dead_letters_max
    ]


def outbox_age_breaches(age_seconds: float, t: Thresholds) -> list[Breach]:
    if age_seconds <= t.outbox_age_max_seconds:
        return []
    message = f"outbox: the oldest unsent message is {age_seconds:.0f} s old (limit {t.outbox_age_max_seconds:.0f} s)"
    return [Breach("outbox_age", "outbox", "warning", message)]


def backlog_breaches(backlog: int, t: Thresholds) -> list[Breach]:
    if backlog <= t.backlog_max:
        return []
    message = f"{backlog} trips await reconciliation (limit {t.backlog_max})"
    return [Breach("reconcile_backlog", "reconcile", "warning", message)]


# --------------------------------------------------------------------------- de-duplication


def threshold_alert_id(kind: str, key: str, since: datetime) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"threshold|{kind}|{key}|{since.isoformat()}"))


@dataclass
class ThresholdTracker:
    """Which (kind, key) breaches are active. `update` returns the alerts to raise now: one per breach that was not
    active, none for one that still holds. A breach that is gone from an evaluated kind is cleared (and may fire
    again later); kinds not evaluated this round (their input could not be read) keep their state."""

    active: dict[tuple[str, str], Alert] = field(default_factory=dict)

    def update(
        self, breaches: Sequence[Breach], evaluated: Collection[str], now: datetime
    ) -> tuple[list[Alert], list[tuple[str, str]]]:
        """(alerts to raise, (kind, key) pairs that cleared)."""
        holding = {(b.kind, b.key): b for b in breaches}
        cleared = [k for k in self.active if k[0] in evaluated and k not in holding]
        for key in cleared:
            del self.active[key]
        fired: list[Alert] = []
        for key, b in holding.items():
            if key in self.active:
                continue
            alert = Alert(
                alert_id=threshold_alert_id(b.kind, b.key, now),
                kind=b.kind,
                severity=b.severity,
                store_id=b.store_id,
                shopping_trip_id="",
                message=b.message,
                created_at=now,
            )
            self.active[key] = alert
            fired.append(alert)
        return fired, cleared

    def forget(self, alerts: Collection[Alert]) -> None:
        """Make these alerts' breaches inactive again (they were not recorded), so the next update raises them."""
        ids = {a.alert_id for a in alerts}
        for key in [k for k, a in self.active.items() if a.alert_id in ids]:
            del self.active[key]
