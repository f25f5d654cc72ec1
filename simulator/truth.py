"""What the retailer side must make of a scenario: gate decisions, priced carts, warehouse row counts.

Written from the SPEC (§2.1-2.5), not from the connector, so the two check each other. Pure, apart
from `AnswerKey.save`/`load`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from simulator.scenario import CatalogItem, Endpoint, PlannedRequest, Scenario, Shopper, VisitorType

CENT = Decimal("0.01")
_ZERO = Decimal("0.00")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def round_money(value: Decimal) -> Decimal:
    """Half-even to the cent: 0.125 -> 0.12, 0.135 -> 0.14."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


class LinePrice(_Frozen):
    amount: Decimal
    discount: Decimal
    tax: Decimal
    line_total: Decimal
    known: bool


def price_line(quantity: Decimal, item: CatalogItem | None) -> LinePrice:
    """SPEC §2.5 for one cart line; an item missing from the catalog is priced at 0."""
    if item is None:
        return LinePrice(amount=_ZERO, discount=_ZERO, tax=_ZERO, line_total=_ZERO, known=False)
    amount = round_money(quantity * item.unit_price)
    discount = round_money(amount * (item.promotion_percent or 0) / 100)
    tax = round_money((amount - discount) * item.tax_rate)
    return LinePrice(amount=amount, discount=discount, tax=tax, line_total=amount - discount + tax, known=True)


class Catalog:
    """Catalog lookups within a store: a SKU item by SKU, a SCANCODE item by barcode."""

    def __init__(self, items: Iterable[CatalogItem]) -> None:
        self._items: dict[tuple[str, str, str], CatalogItem] = {}
        self.currencies: dict[str, str] = {}
        for item in items:
            self._items[(item.store_id, "SKU", item.sku)] = item
            for code in item.barcodes:
                self._items[(item.store_id, "SCANCODE", code)] = item
            self.currencies[item.store_id] = item.currency

    def find(self, store_id: str, item_type: str, item_id: str) -> CatalogItem | None:
        return self._items.get((store_id, item_type, item_id))


class TripTotals(_Frozen):
    shopping_trip_id: str
    store_id: str
    entry_method: Literal["FINANCIAL", "SCAN_CODE"]
    shopper_id: str | None
    currency: str
    line_count: int
    unknown_item_count: int
    subtotal: Decimal
    promotions: Decimal
    tax: Decimal
    total: Decimal


def price_trip(body: dict[str, Any], catalog: Catalog) -> TripTotals:
    """The purchase a CreatePurchases body must produce."""
    store_id = body["storeId"]
    lines = [
        price_line(Decimal(item["quantity"]["value"]), catalog.find(store_id, item["type"], item["id"]))
        for item in body["cartItems"]
    ]
    entry = body["shoppingTrip"]["authEvents"][0]
    return TripTotals(
        shopping_trip_id=body["idempotentShoppingTripId"],
        store_id=store_id,
        entry_method=entry["payloadType"],
        shopper_id=entry["scanResult"]["id"] if entry["payloadType"] == "SCAN_CODE" else None,
        currency=catalog.currencies.get(store_id, "USD"),
        line_count=len(lines),
        unknown_item_count=sum(not line.known for line in lines),
        subtotal=sum((line.amount for line in lines), _ZERO),
        promotions=sum((line.discount for line in lines), _ZERO),
        tax=sum((line.tax for line in lines), _ZERO),
        total=sum((line.line_total for line in lines), _ZERO),
    )


class GateOutcome(_Frozen):
    """What an identity call must decide. `key` is its idempotency key."""

    key: str
    request_id: str
    endpoint: Endpoint
    store_id: str
    outcome: Literal["ACCEPT", "REJECT", "NOT_FOUND"]
    http_status: int
    shopper_id: str | None
    visitor_type: VisitorType | None


def idempotency_key(request: PlannedRequest) -> str:
    """SPEC §2: what makes two requests the same request (Amazon's retries share it)."""
    body = request.body
    match request.endpoint:
        case "scan":
            return f"{body['scanEvent']['id']}|{body['scanEvent']['timestamp']}"
        case "identity_keys":
            return str(body["authEvent"]["id"])
        case "shopper":
            return request.request_id
        case "purchases":
            return str(body["idempotentShoppingTripId"])


class _Identity:
    """The identity store as the connector must see it (no open bad debts in a scenario)."""

    def __init__(self, shoppers: Iterable[Shopper]) -> None:
        shoppers = list(shoppers)
        self.by_key = {s.identity_key: s for s in shoppers}
        self.by_phone = {_digits(s.phone_number): s for s in shoppers if s.phone_number}

    def from_base64(self, text: str) -> Shopper | None:
        try:
            decoded = base64.b64decode(text.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self.by_key.get(decoded)

    def decide(self, request: PlannedRequest) -> GateOutcome:
        body = request.body
        if request.endpoint == "shopper":
            if body.get("shopperKeyType") == "PHONE_NUMBER":
                shopper = self.by_phone.get(_digits(body["shopperKey"]))
            else:
                shopper = self.from_base64(body["shopperKey"])
            return _outcome(request, shopper, "ACCEPT", 201) if shopper else _outcome(request, None, "NOT_FOUND", 404)
        if request.endpoint == "scan":
            scan = body["scanEvent"]
            shopper = self.from_base64(scan["value"]) or self.from_base64(scan["id"])
        else:
            shopper = self.from_base64(body["identityKey"])
        if shopper is None or shopper.status != "active":
            return _outcome(request, None, "REJECT", 200 if request.endpoint == "scan" else 401)
        return _outcome(request, shopper, "ACCEPT", 200)


def _outcome(
    request: PlannedRequest,
    shopper: Shopper | None,
    outcome: Literal["ACCEPT", "REJECT", "NOT_FOUND"],
    http_status: int,
) -> GateOutcome:
    return GateOutcome(
        key=idempotency_key(request),
        request_id=request.request_id,
        endpoint=request.endpoint,
        store_id=request.body["storeId"],
        outcome=outcome,
        http_status=http_status,
        shopper_id=shopper.shopper_id if shopper else None,
        visitor_type=shopper.visitor_type if shopper else None,
    )


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


class TableCounts(_Frozen):
    """Rows the warehouse must hold once everything the scenario sent is ingested."""

    auth_events: int
    purchases: int
    purchase_lines: int
    bad_carts: int
    cancel_charges: int


class SentCounts(_Frozen):
    requests: int
    retries: int
    by_endpoint: dict[str, int]


class AnswerKey(_Frozen):
    seed: int
    business_date: date
    tables: TableCounts
    sent: SentCounts
    gate: tuple[GateOutcome, ...]
    """One per distinct identity call (idempotency key), in the order first sent."""
    trips: tuple[TripTotals, ...]
    """One per distinct shopping trip, in the order first sent."""

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> AnswerKey:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


def build_answer_key(scenario: Scenario) -> AnswerKey:
    identity = _Identity(scenario.shoppers)
    catalog = Catalog(scenario.catalog)
    gate: dict[str, GateOutcome] = {}
    trips: dict[str, TripTotals] = {}
    for request in scenario.requests:
        key = idempotency_key(request)
        if request.endpoint == "purchases":
            if key not in trips:
                trips[key] = price_trip(request.body, catalog)
        elif key not in gate:
            gate[key] = identity.decide(request)
    return AnswerKey(
        seed=scenario.config.seed,
        business_date=scenario.config.business_date,
        tables=TableCounts(
            auth_events=len(gate),
            purchases=len(trips),
            purchase_lines=sum(trip.line_count for trip in trips.values()),
            bad_carts=sum(trip.unknown_item_count for trip in trips.values()),
            cancel_charges=sum(trip.line_count == 0 for trip in trips.values()),
        ),
        sent=SentCounts(
            requests=len(scenario.requests),
            retries=sum(request.retry_of is not None for request in scenario.requests),
            by_endpoint=dict(Counter(request.endpoint for request in scenario.requests)),
        ),
        gate=tuple(gate.values()),
        trips=tuple(trips.values()),
    )
