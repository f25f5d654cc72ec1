"""Amazon's Event Feed for a scenario (SPEC §3.2), as our eventfeed queue receives it, and its answer key.

From a scenario and its answer key: for every card-entry (FINANCIAL) trip an AuthorizationApproved at entry
and, once a non-empty cart is priced, a CaptureApproved for the trip total (or, for a seeded share, an
AuthorizationDeclined or CaptureDeclined); for every non-empty trip a CART event with its lines priced as the
connector prices them (SPEC §2.5). Then what a real feed does to them, all seeded: at-least-once duplicates
(the same envelope id again), arrival out of time order within a window, and malformed deliveries (bad JSON,
an unknown detail-type, an unknown PAYMENT subType).

`build_feed` is pure: the same inputs give the same feed, byte for byte. The publishers at the bottom play
Amazon's producer (`publish_events`, EventBridge PutEvents) and EventBridge's SQS target (`deliver_to_queue`);
`play_feed` uses both so that everything in the key reaches the queue.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from aiobotocore.session import get_session
from pydantic import BaseModel, ConfigDict, Field

from contracts.aws import AwsEndpoint
from contracts.eventfeed import (
    DEFAULT_SOURCE,
    CartDetail,
    CartItem,
    DetailType,
    PaymentAmount,
    PaymentDetail,
    PaymentSubType,
    PromotionInfo,
    dumps_exact,
)
from simulator.scenario import Scenario, Share
from simulator.truth import AnswerKey, Catalog, TripTotals, price_line

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef
    from types_aiobotocore_sqs import SQSClient

DeliveryKind = Literal["cart", "payment", "bad_json", "unknown_detail_type", "unknown_sub_type"]
MALFORMED_KINDS: tuple[DeliveryKind, ...] = ("bad_json", "unknown_detail_type", "unknown_sub_type")
UNKNOWN_SUB_TYPES = ("RefundApproved", "AuthorizationExpired", "ChargebackReceived")
"""PAYMENT subtypes Amazon might add one day; today they are not ours to type."""
UNKNOWN_DETAIL_TYPE = "SHOPPER"
"""The vendor names a third event type (shopper events) that SPEC §3.2 does not shape."""

_BRANDS = ("VISA", "MASTERCARD", "AMEX", "DISCOVER")
_MAX_ENTRIES = 10
"""PutEvents and SendMessageBatch take at most 10 entries a call."""
_RETRYABLE = frozenset({"ThrottlingException", "InternalException", "InternalFailure", "ServiceUnavailable"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeedConfig(_Frozen):
    seed: int = 11
    source: str = DEFAULT_SOURCE
    account: str = "123456789012"
    region: str = "us-east-1"
    preauth_amount: Decimal = Decimal("50.00")
    """What a card tap pre-authorizes at entry."""
    decline_share: Share = 0.1
    """Of card-entry trips with a cart: declined after exit, as an AuthorizationDeclined (the adjustment to the
    cart total) or a CaptureDeclined, half and half."""
    long_card_number_share: Share = 0.1
    """Of card-entry trips: `cardLastFourDigits` carries a masked full card number instead of four digits."""
    duplicate_share: Share = 0.05
    """Of events: delivered a second time with the same envelope id (EventBridge is at-least-once)."""
    reorder_window: int = Field(4, ge=0)
    """A delivery arrives at most this many places away from its time order (0: in time order)."""
    malformed_share: Share = 0.03
    """Extra deliveries, as a share of the events: bad JSON, an unknown detail-type or an unknown subType."""


class Delivery(_Frozen):
    """One message as our eventfeed queue receives it."""

    kind: DeliveryKind
    body: str
    """The SQS body: the EventBridge envelope (or, for `bad_json`, what arrived instead)."""
    time: datetime
    event_id: str | None = None
    """The envelope id; None for a body that is not an envelope."""
    detail_type: str | None = None
    detail: str | None = None
    """The detail's JSON text as Amazon puts it on the bus; None for a body that is not an envelope."""
    sub_type: str | None = None
    """A PAYMENT event's subType."""
    delivery_no: int = Field(1, ge=1)
    """2 for a redelivery of an event that already arrived."""


class FeedKey(_Frozen):
    """What the warehouse must hold once the whole feed is ingested (duplicates collapsed)."""

    cart_events: int
    payment_events: int
    unknown_events: int
    events: int
    """Distinct envelope ids: CART, PAYMENT and the unknown types."""
    deliveries: int
    duplicates: int
    malformed: int
    payments_by_sub_type: dict[str, int]

    def table_counts(self) -> dict[str, int]:
        return {
            "cart_events": self.cart_events,
            "payment_events": self.payment_events,
            "unknown_events": self.unknown_events,
        }


class Feed(_Frozen):
    config: FeedConfig
    deliveries: tuple[Delivery, ...]
    """In arrival order."""
    key: FeedKey


def build_feed(scenario: Scenario, key: AnswerKey, config: FeedConfig | None = None) -> Feed:
    return _FeedPlanner(scenario, key, config or FeedConfig()).feed()


def envelope_body(
    event_id: str, detail_type: str, detail: str, time: datetime, *, source: str, account: str, region: str
) -> str:
    """The standard EventBridge envelope around a detail's JSON text (kept exactly as it is)."""
    head = {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": time,
        "region": region,
        "resources": [],
    }
    return f'{dumps_exact(head)[:-1]},"detail":{detail}}}'


@dataclass(frozen=True)
class _Trip:
    totals: TripTotals
    start: datetime
    end: datetime
    lines: tuple[CartItem, ...]


class _FeedPlanner:
    def __init__(self, scenario: Scenario, key: AnswerKey, config: FeedConfig) -> None:
        self.scenario = scenario
        self.key = key
        self.config = config
        self.rng = random.Random(f"eventfeed:{scenario.config.seed}:{config.seed}")

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sample(self, items: Sequence[Any], share: float) -> list[Any]:
        return self.rng.sample(list(items), round(share * len(items)))

    def feed(self) -> Feed:
        trips = self.trips()
        events = [event for trip in trips for event in self.trip_events(trip)]
        events.sort(key=lambda d: (d.time, d.event_id or ""))
        malformed = self.malformed(trips, events) if events else []
        arrived = self.arrival_order(events, malformed)
        payments = Counter(str(d.sub_type) for d in arrived if d.kind == "payment" and d.delivery_no == 1)
        firsts = [d for d in arrived if d.delivery_no == 1]
        return Feed(
            config=self.config,
            deliveries=tuple(arrived),
            key=FeedKey(
                cart_events=sum(len(trip.lines) for trip in trips),
                payment_events=sum(payments.values()),
                unknown_events=len(malformed),
                events=sum(d.event_id is not None for d in firsts),
                deliveries=len(arrived),
                duplicates=len(arrived) - len(firsts),
                malformed=len(malformed),
                payments_by_sub_type=dict(sorted(payments.items())),
            ),
        )

    def trips(self) -> list[_Trip]:
        """Every distinct trip of the answer key with its times and its lines priced per SPEC §2.5."""
        catalog = Catalog(self.scenario.catalog)
        bodies: dict[str, dict[str, Any]] = {}
        for request in self.scenario.requests:
            if request.endpoint == "purchases":
                bodies.setdefault(str(request.body["idempotentShoppingTripId"]), request.body)
        trips: list[_Trip] = []
        for totals in self.key.trips:
            body = bodies[totals.shopping_trip_id]
            lines: list[CartItem] = []
            for item in body["cartItems"]:
                quantity = Decimal(item["quantity"]["value"])
                found = catalog.find(totals.store_id, item["type"], item["id"])
                price = price_line(quantity, found)
                promotions: tuple[PromotionInfo, ...] = ()
                if found is not None and price.discount:
                    promotions = (PromotionInfo(promotion_id=f"PROMO-{found.sku}", amount=price.discount),)
                lines.append(
                    CartItem(
                        merchant_sku=found.sku if found is not None else item["id"],
                        quantity_value=quantity,
                        price_value=price.amount,
                        tax_value=price.tax,
                        list_price_value=found.unit_price if found is not None else None,
                        promotion_infos=promotions,
                    )
                )
            trip = body["shoppingTrip"]
            trips.append(_Trip(totals, _parse_time(trip["startTime"]), _parse_time(trip["endTime"]), tuple(lines)))
        return trips

    def trip_events(self, trip: _Trip) -> list[Delivery]:
        # Every trip draws the same random numbers whatever the shares, so a share changes only what it controls.
        totals, config = trip.totals, self.config
        cart_at = trip.end + timedelta(seconds=self.rng.randint(5, 120))
        settle_at = cart_at + timedelta(seconds=self.rng.randint(30, 600))
        cart_id, auth_id, settle_id, reconciliation_id = self.uuid(), self.uuid(), self.uuid(), self.uuid()
        brand, four = self.rng.choice(_BRANDS), f"{self.rng.randrange(10_000):04d}"
        long_number, decline = self.rng.random() < config.long_card_number_share, self.rng.random()

        events: list[Delivery] = []
        if trip.lines:
            cart = CartDetail(
                shopping_trip_id=totals.shopping_trip_id,
                store_id=totals.store_id,
                event_time=cart_at,
                cart_items=trip.lines,
            )
            events.append(self.event("cart", cart_id, DetailType.CART, _detail_json(cart), cart_at))
        if totals.entry_method != "FINANCIAL":
            return events

        def payment(event_id: str, sub_type: PaymentSubType, amount: Decimal, at: datetime, status: str) -> Delivery:
            detail = PaymentDetail(
                shopping_trip_id=totals.shopping_trip_id,
                store_id=totals.store_id,
                event_time=at,
                sub_type=sub_type,
                amount=PaymentAmount(value=amount, currency_code=totals.currency),
                brand=brand,
                card_last_four_digits=f"{'*' * 12}{four}" if long_number else four,
                reconciliation_id=reconciliation_id,
                status=status,
            )
            return self.event("payment", event_id, DetailType.PAYMENT, _detail_json(detail), at, sub_type=sub_type)

        approved = PaymentSubType.AUTHORIZATION_APPROVED
        events.append(payment(auth_id, approved, config.preauth_amount, trip.start, "APPROVED"))
        if trip.lines:
            if decline < config.decline_share:  # the lower half declines the adjustment, the upper the capture
                declined = decline < config.decline_share / 2
                sub_type = PaymentSubType.AUTHORIZATION_DECLINED if declined else PaymentSubType.CAPTURE_DECLINED
                events.append(payment(settle_id, sub_type, totals.total, settle_at, "DECLINED"))
            else:
                events.append(payment(settle_id, PaymentSubType.CAPTURE_APPROVED, totals.total, settle_at, "APPROVED"))
        return events

    def event(
        self,
        kind: DeliveryKind,
        event_id: str,
        detail_type: str,
        detail: str,
        at: datetime,
        *,
        sub_type: str | None = None,
    ) -> Delivery:
        c = self.config
        body = envelope_body(event_id, detail_type, detail, at, source=c.source, account=c.account, region=c.region)
        return Delivery(
            kind=kind,
            body=body,
            time=at,
            event_id=event_id,
            detail_type=detail_type,
            detail=detail,
            sub_type=sub_type,
        )

    def malformed(self, trips: list[_Trip], events: list[Delivery]) -> list[Delivery]:
        out: list[Delivery] = []
        for _ in range(round(self.config.malformed_share * len(events))):
            kind = self.rng.choice(MALFORMED_KINDS)
            base = self.rng.choice(events)
            at = base.time + timedelta(seconds=self.rng.randint(1, 30))
            trip = self.rng.choice(trips).totals
            if kind == "bad_json":
                cut = self.rng.randrange(1, len(base.body))  # a truncated object is never valid JSON
                out.append(Delivery(kind=kind, body=base.body[:cut], time=at))
                continue
            common = {"shoppingTripId": trip.shopping_trip_id, "storeId": trip.store_id, "eventTime": at}
            if kind == "unknown_detail_type":
                detail = dumps_exact(common | {"shopperEvent": "EXIT"})
                out.append(self.event(kind, self.uuid(), UNKNOWN_DETAIL_TYPE, detail, at))
                continue
            sub_type = self.rng.choice(UNKNOWN_SUB_TYPES)
            amount = {"value": trip.total, "currencyCode": trip.currency}
            detail = dumps_exact(common | {"subType": sub_type, "amount": amount, "status": "APPROVED"})
            out.append(self.event(kind, self.uuid(), DetailType.PAYMENT, detail, at, sub_type=sub_type))
        return out

    def arrival_order(self, events: list[Delivery], malformed: list[Delivery]) -> list[Delivery]:
        """Time order, plus duplicates after their original, then each moved by at most `reorder_window` places."""
        ordered = sorted([*events, *malformed], key=lambda d: (d.time, d.event_id or "", d.body))
        with_ids = [d for d in ordered if d.event_id is not None]
        again = {d.event_id for d in self.sample(with_ids, self.config.duplicate_share)}
        window = self.config.reorder_window
        keyed: list[tuple[float, int, Delivery]] = []
        for position, delivery in enumerate(ordered):
            keyed.append((position + self.rng.uniform(0, window), len(keyed), delivery))
            if delivery.event_id in again:
                later = position + 1 + self.rng.uniform(0, window)
                keyed.append((later, len(keyed), delivery))
        keyed.sort(key=lambda k: (k[0], k[1]))
        seen: set[str] = set()
        arrived: list[Delivery] = []
        for _, _, delivery in keyed:
            if delivery.event_id is not None and delivery.event_id in seen:
                delivery = delivery.model_copy(update={"delivery_no": 2})
            elif delivery.event_id is not None:
                seen.add(delivery.event_id)
            arrived.append(delivery)
        return arrived


def _detail_json(detail: BaseModel) -> str:
    return dumps_exact(detail.model_dump(by_alias=True, exclude_none=True))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class PublishResult:
    event_ids: tuple[str | None, ...]
    """EventBridge's id for each event given, in order; None where it refused the event."""
    failures: tuple[str, ...]


@dataclass(frozen=True)
class PlayReport:
    published: int
    """Events put on the bus (EventBridge gives them their ids and the rule delivers them)."""
    delivered: int
    """Bodies handed straight to the queue: redeliveries, bad JSON, unknown detail-types."""
    failures: tuple[str, ...]


async def publish_events(
    endpoint: AwsEndpoint, bus_name: str, source: str, events: Sequence[Delivery]
) -> PublishResult:
    """Put the events on the bus with PutEvents, 10 a call; entries refused for throttling or an internal error
    are tried again (3 attempts). EventBridge gives every entry a new id: putting an event twice makes two."""
    async with get_session().create_client("events", **endpoint.client_kwargs()) as client:
        return await _put_events(client, bus_name, source, events)


async def deliver_to_queue(endpoint: AwsEndpoint, queue_url: str, bodies: Sequence[str]) -> None:
    """Send the bodies to the queue as they are, 10 a call (EventBridge's SQS target, or a stray producer)."""
    async with get_session().create_client("sqs", **endpoint.client_kwargs()) as client:
        await _send_bodies(client, queue_url, bodies)


async def _put_events(
    client: EventBridgeClient, bus_name: str, source: str, events: Sequence[Delivery]
) -> PublishResult:
    for event in events:
        if event.detail_type is None or event.detail is None:
            raise ValueError(f"a {event.kind} delivery is not an event and cannot be put on a bus")
    ids: list[str | None] = [None] * len(events)
    failures: list[str] = []
    for start in range(0, len(events), _MAX_ENTRIES):
        pending = list(range(start, min(start + _MAX_ENTRIES, len(events))))
        for attempt in range(3):
            entries: list[PutEventsRequestEntryTypeDef] = [
                {
                    "Source": source,
                    "DetailType": str(events[i].detail_type),
                    "Detail": str(events[i].detail),
                    "Time": events[i].time,
                    "EventBusName": bus_name,
                }
                for i in pending
            ]
            response = await client.put_events(Entries=entries)
            retry: list[int] = []
            for index, entry in zip(pending, response["Entries"], strict=True):
                if "EventId" in entry:
                    ids[index] = entry["EventId"]
                elif entry.get("ErrorCode") in _RETRYABLE and attempt < 2:
                    retry.append(index)
                else:
                    failures.append(f"event {index}: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
            if not retry:
                break
            pending = retry
            await asyncio.sleep(0.1 * 2**attempt)
    return PublishResult(tuple(ids), tuple(failures))


async def _send_bodies(client: SQSClient, queue_url: str, bodies: Sequence[str]) -> None:
    for start in range(0, len(bodies), _MAX_ENTRIES):
        chunk = bodies[start : start + _MAX_ENTRIES]
        response = await client.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)]
        )
        if response.get("Failed"):
            raise RuntimeError(f"SQS refused {len(response['Failed'])} feed messages: {response['Failed'][0]}")


async def play_feed(endpoint: AwsEndpoint, bus_name: str, queue_url: str, feed: Feed) -> PlayReport:
    """Deliver the feed in arrival order: the first copy of each CART and PAYMENT event through the bus (the rule
    routes it to the queue); everything a bus cannot carry straight to the queue, in its place in the order.

    A redelivery carries the id EventBridge gave the first copy, as a real at-least-once redelivery does. Bad
    JSON cannot be put on a bus, so it goes to the queue directly (a stray producer); so do malformed events of
    unknown detail-types, whose exact bodies the answer key describes.
    """
    session = get_session()
    kwargs = endpoint.client_kwargs()
    async with session.create_client("events", **kwargs) as events, session.create_client("sqs", **kwargs) as sqs:
        return await _Player(events, sqs, bus_name, queue_url, feed.config).play(feed.deliveries)


class _Player:
    def __init__(
        self, events: EventBridgeClient, sqs: SQSClient, bus_name: str, queue_url: str, config: FeedConfig
    ) -> None:
        self.events, self.sqs = events, sqs
        self.bus_name, self.queue_url, self.config = bus_name, queue_url, config
        self.assigned: dict[str, str] = {}
        """Our event id -> the id EventBridge gave the event."""
        self.to_bus: list[Delivery] = []
        self.to_queue: list[str] = []
        self.published = self.delivered = 0
        self.failures: list[str] = []

    async def play(self, deliveries: Sequence[Delivery]) -> PlayReport:
        routed = {d.value for d in DetailType}
        for delivery in deliveries:
            if delivery.delivery_no == 1 and delivery.detail_type in routed and delivery.detail is not None:
                await self.flush_queue()
                self.to_bus.append(delivery)
                if len(self.to_bus) == _MAX_ENTRIES:
                    await self.flush_bus()
                continue
            await self.flush_bus()  # a redelivery needs the id the bus gave its first copy
            self.to_queue.append(self.body(delivery))
            if len(self.to_queue) == _MAX_ENTRIES:
                await self.flush_queue()
        await self.flush_bus()
        await self.flush_queue()
        return PlayReport(self.published, self.delivered, tuple(self.failures))

    def body(self, delivery: Delivery) -> str:
        bus_id = self.assigned.get(delivery.event_id or "")
        if bus_id is None or delivery.detail_type is None or delivery.detail is None:
            return delivery.body
        c = self.config
        return envelope_body(
            bus_id,
            delivery.detail_type,
            delivery.detail,
            delivery.time,
            source=c.source,
            account=c.account,
            region=c.region,
        )

    async def flush_bus(self) -> None:
        if not self.to_bus:
            return
        result = await _put_events(self.events, self.bus_name, self.config.source, self.to_bus)
        for delivery, bus_id in zip(self.to_bus, result.event_ids, strict=True):
            if bus_id is not None and delivery.event_id is not None:
                self.assigned[delivery.event_id] = bus_id
        self.published += sum(bus_id is not None for bus_id in result.event_ids)
        self.failures.extend(result.failures)
        self.to_bus.clear()

    async def flush_queue(self) -> None:
        if self.to_queue:
            await _send_bodies(self.sqs, self.queue_url, self.to_queue)
            self.delivered += len(self.to_queue)
            self.to_queue.clear()
