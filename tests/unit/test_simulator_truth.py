import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.scenario import CatalogItem, Scenario, ScenarioConfig, build_scenario
from simulator.truth import (
    AnswerKey,
    Catalog,
    build_answer_key,
    idempotency_key,
    price_line,
    price_trip,
    round_money,
)


def item(
    price: str,
    *,
    tax: str = "0",
    promotion: str | None = None,
    store: str = "store-001",
    sku: str = "SKU-1",
    barcodes: tuple[str, ...] = (),
) -> CatalogItem:
    return CatalogItem(
        store_id=store,
        sku=sku,
        name="thing",
        barcodes=barcodes,
        unit_price=Decimal(price),
        currency="USD",
        tax_rate=Decimal(tax),
        promotion_percent=Decimal(promotion) if promotion else None,
        sold_by_weight=False,
    )


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        ("0.125", "0.12"),
        ("0.135", "0.14"),
        ("0.145", "0.14"),
        ("1.005", "1.00"),
        ("2.675", "2.68"),
        ("-0.125", "-0.12"),
    ],
)
def test_money_rounds_half_even_to_the_cent(value: str, rounded: str) -> None:
    assert str(round_money(Decimal(value))) == rounded


def test_a_weighed_line_with_promotion_and_tax_rounds_at_every_step() -> None:
    # 0.455 kg x 2.99 = 1.36045 -> 1.36; 10% = 0.136 -> 0.14; tax (1.36 - 0.14) x 0.0625 = 0.07625 -> 0.08
    line = price_line(Decimal("0.455"), item("2.99", tax="0.0625", promotion="10"))
    assert (line.amount, line.discount, line.tax, line.line_total) == (
        Decimal("1.36"),
        Decimal("0.14"),
        Decimal("0.08"),
        Decimal("1.30"),
    )
    assert line.known


@pytest.mark.parametrize(
    ("price", "tax", "expected_tax"),
    [("2.50", "0.05", "0.12"), ("2.70", "0.05", "0.14")],
)
def test_tax_rounds_half_even(price: str, tax: str, expected_tax: str) -> None:
    line = price_line(Decimal("1"), item(price, tax=tax))
    assert line.tax == Decimal(expected_tax)
    assert line.line_total == Decimal(price) + Decimal(expected_tax)


def test_a_fractional_promotion_rounds_half_even() -> None:
    # 3 x 1.00 = 3.00; 12.5% = 0.375 -> 0.38
    line = price_line(Decimal("3"), item("1.00", promotion="12.5"))
    assert (line.amount, line.discount, line.tax, line.line_total) == (
        Decimal("3.00"),
        Decimal("0.38"),
        Decimal("0.00"),
        Decimal("2.62"),
    )


def test_the_amount_rounds_before_tax_is_computed() -> None:
    # 3 x 0.335 = 1.005 -> 1.00 (half-even); tax 1.00 x 0.0625 = 0.0625 -> 0.06
    line = price_line(Decimal("3"), item("0.335", tax="0.0625"))
    assert (line.amount, line.tax, line.line_total) == (Decimal("1.00"), Decimal("0.06"), Decimal("1.06"))


def test_an_unknown_item_is_priced_at_zero() -> None:
    line = price_line(Decimal("2"), None)
    assert (line.amount, line.discount, line.tax, line.line_total) == (Decimal("0.00"),) * 4
    assert not line.known


def cart(store: str, *items: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "idempotentShoppingTripId": "trip-1",
        "storeId": store,
        "shoppingTrip": {"authEvents": [{"payloadType": "FINANCIAL"}]},
        "cartItems": [
            {"id": item_id, "type": item_type, "quantity": {"value": quantity, "unit": "EA"}}
            for item_id, item_type, quantity in items
        ],
    }


def test_a_trip_is_priced_with_its_own_stores_catalog() -> None:
    catalog = Catalog(
        [
            item("2.00", tax="0.10", store="store-001", barcodes=("012345678905",)),
            item("9.99", tax="0.10", store="store-002", barcodes=("012345678905",)),
        ]
    )
    body = cart("store-001", ("SKU-1", "SKU", "2"), ("012345678905", "SCANCODE", "1"), ("SKU-404", "SKU", "1"))
    trip = price_trip(body, catalog)
    assert (trip.line_count, trip.unknown_item_count) == (3, 1)
    assert (trip.subtotal, trip.promotions, trip.tax, trip.total) == (
        Decimal("6.00"),
        Decimal("0.00"),
        Decimal("0.60"),
        Decimal("6.60"),
    )
    assert trip.entry_method == "FINANCIAL"
    assert trip.shopper_id is None
    assert trip.currency == "USD"


def test_an_empty_cart_totals_zero() -> None:
    trip = price_trip(cart("store-001"), Catalog([item("1.00")]))
    assert (trip.line_count, str(trip.total)) == (0, "0.00")


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(ScenarioConfig())


def test_answer_key_counts_each_request_once_however_often_amazon_sent_it(scenario: Scenario) -> None:
    key = build_answer_key(scenario)
    first_sends = [r for r in scenario.requests if r.retry_of is None]
    carts = [r.body["cartItems"] for r in first_sends if r.endpoint == "purchases"]
    identity_calls = [r for r in first_sends if r.endpoint in ("scan", "identity_keys")]
    get_shopper = [r for r in scenario.requests if r.endpoint == "shopper"]  # requestId is its only key
    assert key.tables.purchases == len(carts) == 194
    assert key.tables.purchase_lines == sum(len(c) for c in carts)
    assert key.tables.cancel_charges == sum(not c for c in carts)
    assert key.tables.auth_events == len(identity_calls) + len(get_shopper)
    assert key.tables.bad_carts == sum(t.unknown_item_count for t in key.trips) > 0
    assert key.sent.requests == len(scenario.requests)
    assert key.sent.retries == len(scenario.requests) - len(first_sends) > 0
    assert key.sent.by_endpoint == dict(Counter(r.endpoint for r in scenario.requests))
    assert len({idempotency_key(r) for r in scenario.requests}) == len(key.gate) + len(key.trips)


def test_answer_key_gate_outcomes_follow_the_identity_store(scenario: Scenario) -> None:
    key = build_answer_key(scenario)
    status = {s.shopper_id: s.status for s in scenario.shoppers}
    lanes = {r.request_id: r.lane for r in scenario.requests}
    decided: Counter[tuple[str, str, int]] = Counter()
    for gate in key.gate:
        lane = lanes[gate.request_id]
        decided[gate.endpoint, gate.outcome, gate.http_status] += 1
        if gate.endpoint == "shopper":
            continue
        if status.get(lane) == "active":
            assert (gate.outcome, gate.shopper_id) == ("ACCEPT", lane)
        else:
            assert gate.outcome == "REJECT"
            assert gate.shopper_id is None
    assert set(decided) == {
        ("identity_keys", "ACCEPT", 200),
        ("identity_keys", "REJECT", 401),
        ("scan", "ACCEPT", 200),
        ("scan", "REJECT", 200),
        ("shopper", "ACCEPT", 201),
        ("shopper", "NOT_FOUND", 404),
    }


def test_answer_key_round_trips_through_json_with_money_as_strings(scenario: Scenario, tmp_path: Path) -> None:
    key = build_answer_key(scenario)
    path = tmp_path / "answer-key.json"
    key.save(path)
    assert AnswerKey.load(path) == key
    trip = json.loads(path.read_text())["trips"][0]
    assert all(isinstance(trip[name], str) for name in ("subtotal", "promotions", "tax", "total"))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), shoppers=st.integers(0, 40), stores=st.integers(1, 4))
def test_every_trip_total_is_subtotal_less_promotions_plus_tax(seed: int, shoppers: int, stores: int) -> None:
    scenario = build_scenario(ScenarioConfig(seed=seed, shoppers=shoppers, stores=stores, skus_per_store=8))
    key = build_answer_key(scenario)
    for trip in key.trips:
        assert trip.total == trip.subtotal - trip.promotions + trip.tax
        assert trip.subtotal == trip.subtotal.quantize(Decimal("0.01"))
        assert trip.unknown_item_count <= trip.line_count <= 8
    assert key.tables.purchases == len(
        {r.body["idempotentShoppingTripId"] for r in scenario.requests if r.endpoint == "purchases"}
    )
