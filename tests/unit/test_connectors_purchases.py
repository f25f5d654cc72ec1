"""SPEC §2.4-2.6: CreatePurchases prices the cart, answers 201 with a purchase id, and records the purchase,
its bad-cart items and an empty cart's cancel-charge on the outbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.pricing import CatalogItem, PricedLine, price_line, round_money
from connectors.service import ConnectorService, purchase_id_for
from connectors.settings import ConnectorSettings
from contracts.messages import BadCart, CancelCharge, MessageType, Purchase, message_id_for
from ingest.decode import payload_rows
from tests.conftest import NOW, cart_item, envelopes, purchase_body

PURCHASES = "/v1/order/purchases"
D = Decimal

EXTRA_ITEMS = [
    (CatalogItem("store-1", "sku-banana", "Bananas (kg)", D("2.50"), "USD", D("0")), ["4011"]),
    (CatalogItem("store-1", "sku-gum", "Gum", D("0.25"), "USD", D("0.10"), D("10")), []),
    (CatalogItem("store-1", "sku-mint", "Mints", D("0.50"), "USD", D("0.05")), []),
    (CatalogItem("store-1", "sku-nuts", "Nuts (kg)", D("0.25"), "USD", D("0")), []),
    (CatalogItem("store-jp", "sku-tea", "Tea", D("105"), "JPY", D("0.10")), []),
]


@pytest.fixture
def shop(source: MemorySource, outbox: MemoryOutbox) -> TestClient:
    """The conftest catalog (apple 0.99 + 6.25% tax, barcode 000000000017; cheese 12.49, 10% off) and more."""
    source.items.extend(EXTRA_ITEMS)
    return TestClient(create_app(ConnectorService(CachedDirectory(source), outbox, lambda: NOW), ConnectorSettings()))


def purchase_of(outbox: MemoryOutbox) -> Purchase:
    [payload] = [e.typed_payload() for e in envelopes(outbox) if e.type == MessageType.PURCHASE]
    assert isinstance(payload, Purchase)
    return payload


def message_types(outbox: MemoryOutbox) -> list[str]:
    return [e.type for e in envelopes(outbox)]


# --- pricing (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (D("0.025"), "USD", D("0.02")),
        (D("0.035"), "USD", D("0.04")),
        (D("0.0250001"), "USD", D("0.03")),
        (D("10.5"), "JPY", D("10")),
        (D("11.5"), "JPY", D("12")),
        (D("1.0005"), "KWD", D("1.000")),
    ],
)
def test_money_rounds_half_even_to_the_currency_minor_unit(value: Decimal, currency: str, expected: Decimal) -> None:
    rounded = round_money(value, currency)

    assert rounded == expected
    assert rounded.as_tuple().exponent == expected.as_tuple().exponent


@pytest.mark.parametrize(
    ("item", "quantity", "expected"),
    [
        (EXTRA_ITEMS[3][0], "0.1", PricedLine(D("0.02"), D("0"), D("0"), D("0.02"))),  # 0.025 → 0.02
        (EXTRA_ITEMS[3][0], "0.3", PricedLine(D("0.08"), D("0"), D("0"), D("0.08"))),  # 0.075 → 0.08
        (EXTRA_ITEMS[0][0], "0.455", PricedLine(D("1.14"), D("0"), D("0"), D("1.14"))),  # 1.1375
        (EXTRA_ITEMS[1][0], "1", PricedLine(D("0.25"), D("0.02"), D("0.02"), D("0.25"))),  # discount 0.025
        (EXTRA_ITEMS[2][0], "1", PricedLine(D("0.50"), D("0"), D("0.02"), D("0.52"))),  # tax 0.025
        (EXTRA_ITEMS[2][0], "3", PricedLine(D("1.50"), D("0"), D("0.08"), D("1.58"))),  # tax 0.075
        (EXTRA_ITEMS[4][0], "1", PricedLine(D("105"), D("0"), D("10"), D("115"))),  # tax 10.5 yen
    ],
    ids=["tie-down", "tie-up", "weighed", "promotion-tie", "tax-tie-down", "tax-tie-up", "yen"],
)
def test_a_line_is_priced_half_even_at_each_step(item: CatalogItem, quantity: str, expected: PricedLine) -> None:
    assert price_line(item, D(quantity)) == expected


# --- CreatePurchases over HTTP -------------------------------------------------------------------


def test_a_cart_is_answered_201_with_a_stable_purchase_id(shop: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body(trip_id="trip-1")

    response = shop.post(PURCHASES, json=body)

    assert response.status_code == 201
    assert response.json() == {"purchaseId": purchase_id_for("trip-1")}
    assert response.json()["purchaseId"] != ""
    assert purchase_of(outbox).purchase_id == response.json()["purchaseId"]


def test_a_cart_is_priced_with_promotions_tax_barcodes_and_weighed_goods(
    shop: TestClient, outbox: MemoryOutbox
) -> None:
    body = purchase_body(
        [
            cart_item("sku-apple", "3", line="l-apple"),
            cart_item("sku-cheese", "1", line="l-cheese"),
            cart_item("4011", "0.455", item_type="SCANCODE", line="l-banana"),
            cart_item("000000000017", "1.0", item_type="SCANCODE", line="l-apple-scanned"),
        ],
        trip_id="trip-priced",
    )

    response = shop.post(PURCHASES, json=body)

    assert response.status_code == 201
    purchase = purchase_of(outbox)
    lines = [
        (line.line_item_id, line.sku, line.quantity, line.amount, line.discount, line.tax, line.line_total, line.known)
        for line in purchase.lines
    ]
    assert lines == [
        ("l-apple", "sku-apple", D("3"), D("2.97"), D("0.00"), D("0.19"), D("3.16"), True),
        ("l-cheese", "sku-cheese", D("1"), D("12.49"), D("1.25"), D("0.00"), D("11.24"), True),
        ("l-banana", "sku-banana", D("0.455"), D("1.14"), D("0.00"), D("0.00"), D("1.14"), True),
        ("l-apple-scanned", "sku-apple", D("1.0"), D("0.99"), D("0.00"), D("0.06"), D("1.05"), True),
    ]
    assert (purchase.subtotal, purchase.promotions, purchase.tax, purchase.total) == (
        D("17.59"),
        D("1.25"),
        D("0.25"),
        D("16.59"),
    )
    assert purchase.total == purchase.subtotal - purchase.promotions + purchase.tax
    assert (purchase.line_count, purchase.unknown_item_count, purchase.currency) == (4, 0, "USD")
    assert [line.line_no for line in purchase.lines] == [1, 2, 3, 4]
    assert [line.unit_price for line in purchase.lines] == [D("0.99"), D("12.49"), D("2.50"), D("0.99")]
    assert message_types(outbox) == ["purchase"]


def test_the_purchase_message_carries_the_trip_and_the_shopper(shop: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body(trip_id="trip-msg")

    shop.post(PURCHASES, json=body)

    [envelope] = envelopes(outbox)
    assert envelope.message_id == message_id_for(MessageType.PURCHASE, "trip-msg")
    assert (envelope.type, envelope.schema_version, envelope.occurred_at, envelope.producer) == (
        "purchase",
        1,
        NOW,
        "connectors",
    )
    purchase = purchase_of(outbox)
    assert (purchase.shopping_trip_id, purchase.store_id, purchase.entry_method, purchase.shopper_id) == (
        "trip-msg",
        "store-1",
        "SCAN_CODE",
        "shopper-1",
    )
    assert (purchase.start_time.isoformat(), purchase.end_time.isoformat()) == (
        "2026-11-20T11:30:00+00:00",
        "2026-11-20T11:45:00+00:00",
    )
    assert purchase.created_at == NOW


def test_a_card_entry_has_no_shopper_of_ours_even_with_a_scan_result(shop: TestClient, outbox: MemoryOutbox) -> None:
    shop.post(PURCHASES, json=purchase_body(payload_type="FINANCIAL", shopper_id="1111-2222-3333-4444-5555-6666"))

    purchase = purchase_of(outbox)
    assert (purchase.entry_method, purchase.shopper_id) == ("FINANCIAL", None)


def test_an_app_entry_without_scan_result_falls_back_to_the_shopper_identity(
    shop: TestClient, outbox: MemoryOutbox
) -> None:
    body = purchase_body(shopper_id=None)
    body["shopperIdentity"] = {"id": "shopper-1"}

    shop.post(PURCHASES, json=body)

    purchase = purchase_of(outbox)
    assert (purchase.entry_method, purchase.shopper_id) == ("SCAN_CODE", "shopper-1")


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (cart_item("sku-unknown"), "unknown SKU 'sku-unknown' in store 'store-1'"),
        (cart_item("999999999999", item_type="SCANCODE"), "unknown barcode '999999999999' in store 'store-1'"),
        (cart_item("000000000017", item_type="SKU"), "unknown SKU '000000000017' in store 'store-1'"),
        (cart_item("sku-apple", item_type="SCANCODE"), "unknown barcode 'sku-apple' in store 'store-1'"),
        (cart_item("sku-tea"), "unknown SKU 'sku-tea' in store 'store-1'"),
    ],
    ids=["unknown-sku", "unknown-barcode", "barcode-sent-as-sku", "sku-sent-as-scancode", "other-stores-sku"],
)
def test_an_unknown_item_still_succeeds_and_goes_to_bad_cart_handling(
    shop: TestClient, outbox: MemoryOutbox, item: dict[str, Any], reason: str
) -> None:
    body = purchase_body([cart_item("sku-apple", "1"), item], trip_id="trip-bad")

    response = shop.post(PURCHASES, json=body)

    assert response.status_code == 201
    assert response.json() == {"purchaseId": purchase_id_for("trip-bad")}
    assert message_types(outbox) == ["purchase", "bad_cart"]
    purchase = purchase_of(outbox)
    assert (purchase.line_count, purchase.unknown_item_count, purchase.total) == (2, 1, D("1.05"))
    unknown = purchase.lines[1]
    assert (unknown.known, unknown.sku, unknown.unit_price, unknown.line_total) == (False, None, None, D("0"))
    bad_envelope = envelopes(outbox)[1]
    assert bad_envelope.message_id == message_id_for(MessageType.BAD_CART, "trip-bad")
    bad = bad_envelope.typed_payload()
    assert isinstance(bad, BadCart)
    assert (bad.shopping_trip_id, bad.store_id, bad.created_at) == ("trip-bad", "store-1", NOW)
    assert [(i.item_id, i.item_type, i.reason) for i in bad.items] == [(item["id"], item["type"], reason)]


def test_a_cart_of_only_unknown_items_is_priced_zero_in_the_default_currency(
    shop: TestClient, outbox: MemoryOutbox
) -> None:
    response = shop.post(PURCHASES, json=purchase_body([cart_item("nope-1"), cart_item("nope-2")]))

    assert response.status_code == 201
    assert response.json()["purchaseId"] != ""
    purchase = purchase_of(outbox)
    assert (purchase.total, purchase.currency, purchase.unknown_item_count) == (D("0"), "USD", 2)
    bad = envelopes(outbox)[1].typed_payload()
    assert isinstance(bad, BadCart)
    assert [i.item_id for i in bad.items] == ["nope-1", "nope-2"]


def test_an_empty_cart_answers_an_empty_purchase_id_and_cancels_the_charge(
    shop: TestClient, outbox: MemoryOutbox
) -> None:
    response = shop.post(PURCHASES, json=purchase_body([], trip_id="trip-empty"))

    assert response.status_code == 201
    assert response.json() == {"purchaseId": ""}
    assert message_types(outbox) == ["purchase", "cancel_charge"]
    purchase = purchase_of(outbox)
    assert (purchase.purchase_id, purchase.line_count, purchase.total, purchase.lines) == ("", 0, D("0"), [])
    cancel_envelope = envelopes(outbox)[1]
    assert cancel_envelope.message_id == message_id_for(MessageType.CANCEL_CHARGE, "trip-empty")
    cancel = cancel_envelope.typed_payload()
    assert isinstance(cancel, CancelCharge)
    assert cancel.model_dump() == {
        "shopping_trip_id": "trip-empty",
        "store_id": "store-1",
        "requested_at": NOW,
        "reason": "EMPTY_CART",
    }


def test_a_yen_cart_is_priced_in_whole_yen(shop: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body([cart_item("sku-tea", "1")])
    body["storeId"] = "store-jp"

    assert shop.post(PURCHASES, json=body).status_code == 201

    purchase = purchase_of(outbox)
    assert (purchase.currency, purchase.subtotal, purchase.tax, purchase.total) == ("JPY", D("105"), D("10"), D("115"))


def test_prices_travel_as_exact_decimal_strings(shop: TestClient, outbox: MemoryOutbox) -> None:
    shop.post(PURCHASES, json=purchase_body([cart_item("sku-apple", "3")]))

    body = outbox.messages[0].body
    assert b'"total":"3.16"' in body
    assert b'"quantity":"3"' in body


def test_a_cart_too_large_for_one_queue_message_is_accepted_and_queued_in_parts(
    client: TestClient, outbox: MemoryOutbox
) -> None:
    items = [cart_item("sku-apple", line=f"{n:08d}-0000-4000-8000-{n:012d}") for n in range(1, 1501)]
    items += [
        cart_item(f"unknown-{n}-" + "x" * 200, line=f"{n:08d}-0000-4000-8000-{n:012d}") for n in range(1501, 1601)
    ]
    response = client.post("/v1/order/purchases", json=purchase_body(items))
    assert response.status_code == 201
    assert response.json()["purchaseId"] != ""
    decoded = envelopes(outbox)
    purchases = [e for e in decoded if e.type == "purchase"]
    assert len(purchases) >= 2
    assert {(e.part, e.parts) for e in purchases} == {(n, len(purchases)) for n in range(1, len(purchases) + 1)}
    rows = [row for e in purchases for row in payload_rows(e.typed_payload()).get("purchase_lines", [])]  # type: ignore[arg-type]
    assert sorted(int(row["line_no"]) for row in rows) == list(range(1, 1601))  # type: ignore[call-overload]
    bad_items = [item for e in decoded if e.type == "bad_cart" for item in e.payload["items"]]
    assert len(bad_items) == 100


def test_a_price_changed_in_the_catalog_prices_the_next_cart_anew(source: MemorySource, outbox: MemoryOutbox) -> None:
    """Priced lines are kept for the items seen last: the same cart twice is priced alike, and once the
    catalog changes an item's price, the next cart has the new one."""
    directory = CachedDirectory(source)
    shop = TestClient(create_app(ConnectorService(directory, outbox, lambda: NOW), ConnectorSettings()))
    cart = [cart_item("sku-apple", "2", line="l-1"), cart_item("sku-apple", "2", line="l-2")]

    def totals(trip: str) -> list[tuple[Decimal, Decimal, Decimal]]:
        outbox.messages.clear()
        assert shop.post(PURCHASES, json=purchase_body(cart, trip_id=trip)).status_code == 201
        return [(line.unit_price or D(0), line.amount, line.tax) for line in purchase_of(outbox).lines]

    before, again = totals("trip-a"), totals("trip-b")
    source.upsert_catalog([(CatalogItem("store-1", "sku-apple", "Apple", D("1.49"), "USD", D("0.0625")), [])])
    directory.refresh()
    after = totals("trip-c")

    assert before == again == [(D("0.99"), D("1.98"), D("0.12"))] * 2
    assert after == [(D("1.49"), D("2.98"), D("0.19"))] * 2
