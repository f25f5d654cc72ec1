"""Seeded events-queue traffic for the ingest exactly-once and crash tests and `bench/consumers.py`.

`queue_bodies(count, seed)` draws `count` envelopes as the connectors would publish them (SPEC §2.6) and
returns their queue bodies: auth events from the three identity routes, priced purchases with their lines
(some with items the catalog lacks), the bad carts those produce, cancel charges for empty carts, and a
few envelopes of a type this consumer does not know. With `huge_every`, every that-many-th envelope is
a purchase too large for one message, which `encode_parts` splits over several. Times advance with n (see
`SECONDS_APART`), so the tables have several daily partitions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import orjson

from contracts.messages import (
    AuthEvent,
    BadCart,
    BadCartItem,
    CancelCharge,
    MessageType,
    Payload,
    Purchase,
    PurchaseLine,
    encode_parts,
    envelope_for,
    message_id_for,
)

START = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
SECONDS_APART = 1.3
"""Envelope n happens about n x 1.3 s after START (a busy chain's pace): 5,000 envelopes cross one midnight,
200,000 span three days; a micro-batch of consecutive envelopes touches one or two days."""
CENT = Decimal("0.01")
STORES = tuple(f"store-{n:03d}" for n in range(1, 7))
CATALOG = tuple(
    (f"SKU-{n:04d}", f"Item {n}", Decimal(19 + (n * 7919) % 2581) / 100, (Decimal(0), Decimal("0.0625"))[n % 2])
    for n in range(200)
)
"""(sku, name, unit price, tax rate)"""

# Per 100 envelopes; the rest (100 - sum) are envelopes of an unknown type.
MIX = (("auth_event", 55), ("purchase", 30), ("cancel_charge", 8), ("bad_cart", 5))


@dataclass(frozen=True)
class Traffic:
    """Queue bodies and what they must land as."""

    bodies: list[str]
    envelopes: int
    keys: dict[str, set[tuple[object, ...]]]
    """The key of every row each table must hold once everything landed exactly once (`unknown_events`: the
    message id only; the source is the consumer's)."""

    @property
    def expected_rows(self) -> dict[str, int]:
        return {table: len(keys) for table, keys in self.keys.items()}


def queue_bodies(count: int, seed: int = 7, *, huge_every: int = 0, first: int = 0) -> Traffic:
    """`count` envelopes numbered from `first` (ids never collide across disjoint ranges)."""
    rng = random.Random(seed * 1_000_003 + first)
    bodies: list[str] = []
    keys: dict[str, set[tuple[object, ...]]] = {}
    for n in range(first, first + count):
        for table, key in _one(rng, n, huge=huge_every > 0 and n % huge_every == huge_every - 1, into=bodies):
            keys.setdefault(table, set()).add(key)
    return Traffic(bodies, count, keys)


def _one(rng: random.Random, n: int, *, huge: bool, into: list[str]) -> Iterator[tuple[str, tuple[object, ...]]]:
    """Appends the envelope's bodies to `into`; yields (table, key) for each row it must land as."""
    at = START + timedelta(seconds=n * SECONDS_APART + rng.uniform(0, 60))
    store = rng.choice(STORES)
    roll = rng.randrange(100)
    kind = "unknown"
    for name, share in MIX:
        if roll < share:
            kind = name
            break
        roll -= share
    if huge:
        kind = "purchase"
    if kind == "auth_event":
        event = _auth_event(rng, n, store, at)
        _emit(into, MessageType.AUTH_EVENT, f"{event.endpoint}:{event.event_id}", event, at)
        yield "auth_events", (event.event_id,)
    elif kind == "purchase":
        purchase, bad = _purchase(rng, n, store, at, lines=rng.randint(1500, 1800) if huge else rng.randint(1, 8))
        _emit(into, MessageType.PURCHASE, purchase.shopping_trip_id, purchase, at)
        trip = purchase.shopping_trip_id
        yield "purchases", (trip,)
        yield from (("purchase_lines", (trip, line.line_no)) for line in purchase.lines)
        if bad is not None:
            _emit(into, MessageType.BAD_CART, trip, bad, at)
            yield from (("bad_carts", (trip, item.item_id, item.item_type)) for item in bad.items)
    elif kind == "cancel_charge":
        trip = f"trip-{n:08d}"
        _emit(
            into,
            MessageType.CANCEL_CHARGE,
            trip,
            CancelCharge(shopping_trip_id=trip, store_id=store, requested_at=at),
            at,
        )
        yield "cancel_charges", (trip,)
    elif kind == "bad_cart":  # a cart of nothing but unknown items: no purchase lines, only the bad cart
        trip = f"trip-{n:08d}"
        items = [
            BadCartItem(item_id=f"0{rng.randrange(10**10, 10**11)}", item_type="SCANCODE", reason="unknown scan code")
            for _ in range(rng.randint(1, 3))
        ]
        _emit(
            into,
            MessageType.BAD_CART,
            trip,
            BadCart(shopping_trip_id=trip, store_id=store, created_at=at, items=items),
            at,
        )
        yield from (("bad_carts", (trip, item.item_id, item.item_type)) for item in items)
    else:
        message_id = message_id_for("refund", f"refund-{n}")
        into.append(
            orjson.dumps(
                {
                    "message_id": message_id,
                    "type": "refund",
                    "schema_version": 1,
                    "occurred_at": at.isoformat(),
                    "producer": "portal",
                    "payload": {"refund_id": f"refund-{n}", "amount": "4.20"},
                }
            ).decode()
        )
        yield "unknown_events", (message_id,)


def _emit(into: list[str], kind: MessageType, key: str, payload: Payload, at: datetime) -> None:
    envelope = envelope_for(kind, key, payload, occurred_at=at, producer="connectors")
    into.extend(body.decode() for _, body in encode_parts(envelope))


def _auth_event(rng: random.Random, n: int, store: str, at: datetime) -> AuthEvent:
    endpoint = rng.choice(("scan", "scan", "identity_keys", "identity_keys", "shopper"))
    outcome = rng.choices(("ACCEPT", "REJECT", "NOT_FOUND"), (85, 10, 5))[0]
    return AuthEvent(
        event_id=f"event-{n:08d}",
        request_id=f"request-{n:08d}",
        endpoint=endpoint,
        store_id=store,
        occurred_at=at,
        received_at=at + timedelta(milliseconds=rng.randint(20, 400)),
        location=None if endpoint == "shopper" else rng.choice(("ENTRY", "ENTRY", "EXIT", "MANUAL_IN_STORE")),
        channel=rng.choice(("OPTICAL", "RADIO", "CONTACT", "QR_CODE", "PHONE_NUMBER")),
        outcome=outcome,
        http_status=200,
        visitor_type="SHOPPER" if outcome != "NOT_FOUND" else None,
        shopper_id=f"shopper-{rng.randrange(5000):05d}" if outcome != "NOT_FOUND" else None,
    )


def _purchase(rng: random.Random, n: int, store: str, at: datetime, *, lines: int) -> tuple[Purchase, BadCart | None]:
    trip = f"trip-{n:08d}"
    priced: list[PurchaseLine] = []
    unknown: list[BadCartItem] = []
    for line_no in range(1, lines + 1):
        if rng.random() < 0.04:
            code = f"0{rng.randrange(10**10, 10**11)}-{line_no}"
            unknown.append(BadCartItem(item_id=code, item_type="SCANCODE", reason="unknown scan code"))
            zero = Decimal(0)
            priced.append(
                PurchaseLine(
                    line_no=line_no,
                    line_item_id=f"li-{n}-{line_no}",
                    item_id=code,
                    item_type="SCANCODE",
                    quantity=Decimal(1),
                    unit="EA",
                    amount=zero,
                    discount=zero,
                    tax=zero,
                    line_total=zero,
                    known=False,
                )
            )
            continue
        sku, name, price, rate = rng.choice(CATALOG)
        quantity = Decimal(rng.randint(1, 4))
        amount = (price * quantity).quantize(CENT, ROUND_HALF_EVEN)
        discount = (amount * Decimal("0.10")).quantize(CENT, ROUND_HALF_EVEN) if rng.random() < 0.2 else Decimal(0)
        tax = ((amount - discount) * rate).quantize(CENT, ROUND_HALF_EVEN)
        priced.append(
            PurchaseLine(
                line_no=line_no,
                line_item_id=f"li-{n}-{line_no}",
                item_id=sku,
                item_type="SKU",
                sku=sku,
                name=name,
                quantity=quantity,
                unit="EA",
                unit_price=price,
                amount=amount,
                discount=discount,
                tax=tax,
                line_total=amount - discount + tax,
                known=True,
            )
        )
    scan_code = rng.random() < 0.6
    purchase = Purchase(
        shopping_trip_id=trip,
        purchase_id=f"purchase-{n:08d}",
        store_id=store,
        entry_method="SCAN_CODE" if scan_code else "FINANCIAL",
        shopper_id=f"shopper-{rng.randrange(5000):05d}" if scan_code else None,
        start_time=at - timedelta(minutes=rng.randint(2, 40)),
        end_time=at,
        currency="USD",
        subtotal=sum((line.amount for line in priced), Decimal(0)),
        promotions=sum((line.discount for line in priced), Decimal(0)),
        tax=sum((line.tax for line in priced), Decimal(0)),
        total=sum((line.line_total for line in priced), Decimal(0)),
        line_count=len(priced),
        unknown_item_count=len(unknown),
        created_at=at + timedelta(milliseconds=rng.randint(5, 90)),
        lines=priced,
    )
    bad = BadCart(shopping_trip_id=trip, store_id=store, created_at=at, items=unknown) if unknown else None
    return purchase, bad
