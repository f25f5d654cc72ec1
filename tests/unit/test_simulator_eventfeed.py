"""The simulated Event Feed: seeded, priced as the connector prices, and its key is what ingest makes of it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from contracts.eventfeed import loads_exact
from ingest.eventfeed import rows_for_event
from simulator.eventfeed import Delivery, Feed, FeedConfig, build_feed
from simulator.scenario import Scenario, ScenarioConfig, build_scenario
from simulator.truth import AnswerKey, build_answer_key

RECEIVED = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
CLEAN = FeedConfig(duplicate_share=0, reorder_window=0, malformed_share=0)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(ScenarioConfig(seed=3, shoppers=80, stores=2, card_entry_share=0.5))


@pytest.fixture(scope="module")
def key(scenario: Scenario) -> AnswerKey:
    return build_answer_key(scenario)


def feed_of(scenario: Scenario, key: AnswerKey, **config: Any) -> Feed:
    return build_feed(scenario, key, FeedConfig(**config))


def clean_feed(scenario: Scenario, key: AnswerKey, **changes: Any) -> Feed:
    """A feed in time order without duplicates or malformed deliveries, but for `changes`."""
    return build_feed(scenario, key, FeedConfig(**(CLEAN.model_dump() | changes)))


def ingest(feed: Feed) -> dict[str, list[dict[str, object]]]:
    """What the eventfeed consumer lands: every delivery decoded, duplicates (same dedup id) collapsed."""
    tables: dict[str, list[dict[str, object]]] = {}
    seen: set[str] = set()
    for n, delivery in enumerate(feed.deliveries):
        dedup_id, rows = rows_for_event("jwo-eventfeed", f"sqs-{n}", delivery.body, RECEIVED)
        if dedup_id in seen:
            continue
        seen.add(dedup_id)
        for table, table_rows in rows.items():
            tables.setdefault(table, []).extend(table_rows)
    return tables


def detail(delivery: Delivery) -> dict[str, Any]:
    assert delivery.detail is not None
    value = loads_exact(delivery.detail)
    assert isinstance(value, dict)
    return value


def test_the_same_inputs_give_the_same_feed_byte_for_byte(scenario: Scenario, key: AnswerKey) -> None:
    first = feed_of(scenario, key, duplicate_share=0.2, malformed_share=0.1)
    again = feed_of(scenario, key, duplicate_share=0.2, malformed_share=0.1)
    other = feed_of(scenario, key, seed=12, duplicate_share=0.2, malformed_share=0.1)

    assert first.model_dump_json() == again.model_dump_json()
    assert [d.body for d in other.deliveries] != [d.body for d in first.deliveries]


@pytest.mark.parametrize(
    "config",
    [
        CLEAN,
        FeedConfig(),
        FeedConfig(seed=5, duplicate_share=0.3, reorder_window=10, malformed_share=0.2, decline_share=0.5),
    ],
)
def test_ingesting_every_delivery_gives_exactly_the_counts_of_the_key(
    scenario: Scenario, key: AnswerKey, config: FeedConfig
) -> None:
    feed = build_feed(scenario, key, config)

    landed = {table: len(rows) for table, rows in ingest(feed).items()}

    assert landed == {table: count for table, count in feed.key.table_counts().items() if count}
    assert feed.key.deliveries == len(feed.deliveries)
    assert feed.key.events + sum(d.kind == "bad_json" for d in feed.deliveries) == len(
        {d.event_id or d.body for d in feed.deliveries}
    )


def test_card_entry_trips_are_authorized_at_entry_and_settled_once_after_exit(
    scenario: Scenario, key: AnswerKey
) -> None:
    feed = clean_feed(scenario, key, decline_share=0.3)
    payments: dict[str, list[dict[str, Any]]] = {}
    for delivery in feed.deliveries:
        if delivery.kind == "payment":
            payments.setdefault(detail(delivery)["shoppingTripId"], []).append(detail(delivery))
    starts = {
        r.body["idempotentShoppingTripId"]: r.body["shoppingTrip"]["startTime"]
        for r in scenario.requests
        if r.endpoint == "purchases"
    }

    card_trips = [trip for trip in key.trips if trip.entry_method == "FINANCIAL"]
    assert card_trips, "the scenario has card-entry trips"
    assert set(payments) == {trip.shopping_trip_id for trip in card_trips}  # app-entry trips have no payments
    for trip in card_trips:
        auth, *after = payments[trip.shopping_trip_id]
        assert (auth["subType"], auth["amount"]["value"], auth["status"]) == (
            "AuthorizationApproved",
            Decimal("50.00"),
            "APPROVED",
        )
        assert auth["eventTime"] == starts[trip.shopping_trip_id]
        if trip.line_count == 0:
            assert after == []  # an empty cart is cancelled, not captured
            continue
        [outcome] = after
        assert outcome["amount"] == {"value": trip.total, "currencyCode": trip.currency}
        assert outcome["eventTime"] > auth["eventTime"]
        assert outcome["status"] == ("APPROVED" if outcome["subType"] == "CaptureApproved" else "DECLINED")
        assert len({auth["cardLastFourDigits"], outcome["cardLastFourDigits"]}) == 1
        assert auth["reconciliationId"] == outcome["reconciliationId"]


def test_every_non_empty_trip_has_one_cart_event_priced_as_the_connector_prices_it(
    scenario: Scenario, key: AnswerKey
) -> None:
    feed = clean_feed(scenario, key)
    carts = {detail(d)["shoppingTripId"]: detail(d) for d in feed.deliveries if d.kind == "cart"}

    non_empty = [trip for trip in key.trips if trip.line_count]
    assert set(carts) == {trip.shopping_trip_id for trip in non_empty}
    for trip in non_empty:
        items = carts[trip.shopping_trip_id]["cartItems"]
        assert len(items) == trip.line_count
        price = sum((i["priceValue"] for i in items), Decimal(0))
        promotions = sum((p["amount"] for i in items for p in i.get("promotionInfos", [])), Decimal(0))
        tax = sum((i["taxValue"] for i in items), Decimal(0))
        assert (price, promotions, tax) == (trip.subtotal, trip.promotions, trip.tax)
        assert price - promotions + tax == trip.total
    assert feed.key.cart_events == sum(trip.line_count for trip in key.trips)


def test_the_decline_share_controls_how_many_card_trips_are_declined(scenario: Scenario, key: AnswerKey) -> None:
    outcomes = {"CaptureApproved", "AuthorizationDeclined", "CaptureDeclined"}

    def settled(share: float) -> Counter[str]:
        feed = clean_feed(scenario, key, decline_share=share)
        return Counter({k: v for k, v in feed.key.payments_by_sub_type.items() if k in outcomes})

    none, every = settled(0.0), settled(1.0)
    assert set(none) == {"CaptureApproved"}
    assert set(every) == {"AuthorizationDeclined", "CaptureDeclined"}
    assert none.total() == every.total()  # the same trips, settled differently


def test_duplicates_repeat_an_event_byte_for_byte_after_its_first_delivery(scenario: Scenario, key: AnswerKey) -> None:
    assert clean_feed(scenario, key).key.duplicates == 0

    feed = feed_of(scenario, key, duplicate_share=0.25, reorder_window=3, malformed_share=0.1)
    first_at: dict[str, int] = {}
    bodies: dict[str, str] = {}
    for position, delivery in enumerate(feed.deliveries):
        assert delivery.event_id is not None or delivery.delivery_no == 1  # bad JSON is never redelivered
        if delivery.event_id is None:
            continue
        if delivery.delivery_no == 1:
            first_at[delivery.event_id] = position
            bodies[delivery.event_id] = delivery.body
        else:
            assert first_at[delivery.event_id] < position
            assert delivery.body == bodies[delivery.event_id]
    redelivered = [d for d in feed.deliveries if d.delivery_no == 2]
    assert len(redelivered) == feed.key.duplicates == round(0.25 * feed.key.events)


def test_reordering_moves_a_delivery_at_most_the_window_away_from_time_order(
    scenario: Scenario, key: AnswerKey
) -> None:
    in_order = clean_feed(scenario, key)
    times = [d.time for d in in_order.deliveries]
    assert times == sorted(times)

    window = 6
    shuffled = clean_feed(scenario, key, reorder_window=window)
    position = {d.event_id: n for n, d in enumerate(in_order.deliveries)}
    moves = [abs(n - position[d.event_id]) for n, d in enumerate(shuffled.deliveries)]
    assert sorted(d.body for d in shuffled.deliveries) == sorted(d.body for d in in_order.deliveries)
    assert 0 < max(moves) <= window


def test_malformed_deliveries_come_in_three_kinds_and_add_to_the_events(scenario: Scenario, key: AnswerKey) -> None:
    clean = clean_feed(scenario, key)
    feed = clean_feed(scenario, key, malformed_share=0.2)
    malformed = [d for d in feed.deliveries if d.kind not in ("cart", "payment")]

    assert len(malformed) == feed.key.malformed == feed.key.unknown_events == round(0.2 * len(clean.deliveries))
    assert {d.kind for d in malformed} == {"bad_json", "unknown_detail_type", "unknown_sub_type"}
    assert (feed.key.cart_events, feed.key.payment_events) == (clean.key.cart_events, clean.key.payment_events)
    for delivery in malformed:
        if delivery.kind == "bad_json":
            with pytest.raises(ValueError, match=r"Expecting|Unterminated|Invalid"):
                json.loads(delivery.body)
        elif delivery.kind == "unknown_detail_type":
            assert json.loads(delivery.body)["detail-type"] == "SHOPPER"
        else:
            assert json.loads(delivery.body)["detail-type"] == "PAYMENT"
            assert detail(delivery)["subType"] not in feed.key.payments_by_sub_type
    unknown = ingest(feed)["unknown_events"]
    assert Counter(str(row["type"]).split("/")[0] for row in unknown) == Counter(
        {"undecodable": sum(d.kind == "bad_json" for d in malformed)}
        | {"SHOPPER": sum(d.kind == "unknown_detail_type" for d in malformed)}
        | {"PAYMENT": sum(d.kind == "unknown_sub_type" for d in malformed)}
    )


def test_money_travels_as_exact_json_numbers(scenario: Scenario, key: AnswerKey) -> None:
    feed = clean_feed(scenario, key)
    payment = next(d for d in feed.deliveries if d.kind == "payment")

    assert '"amount":{"value":50.00,"currencyCode":"USD"}' in payment.body
    landed = ingest(feed)
    assert all(isinstance(row["price"], Decimal) for row in landed["cart_events"])


def test_long_card_numbers_are_sent_when_asked_and_ingest_keeps_the_last_four(
    scenario: Scenario, key: AnswerKey
) -> None:
    feed = clean_feed(scenario, key, long_card_number_share=1.0)
    sent = [detail(d)["cardLastFourDigits"] for d in feed.deliveries if d.kind == "payment"]

    assert sent
    assert all(len(card) == 16 and card.startswith("*" * 12) for card in sent)
    assert sorted(str(row["card_last_four"]) for row in ingest(feed)["payment_events"]) == sorted(
        card[-4:] for card in sent
    )


def test_a_scenario_without_shoppers_gives_an_empty_feed() -> None:
    scenario = build_scenario(ScenarioConfig(shoppers=0, unknown_key_attempts=0, get_shopper_calls=0))
    feed = build_feed(scenario, build_answer_key(scenario), FeedConfig(malformed_share=1.0, duplicate_share=1.0))

    assert feed.deliveries == ()
    assert feed.key.table_counts() == {"cart_events": 0, "payment_events": 0, "unknown_events": 0}
