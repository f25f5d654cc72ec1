"""A seeded business day at a few JWO stores: the retailer's data and the calls Amazon makes.

Pure: the same `ScenarioConfig` always gives the same `Scenario`, byte for byte. The plan holds
the request bodies exactly as Amazon would send them (SPEC §2.1-2.4); what the connector must
answer is worked out separately, by `simulator.truth`.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

_T = TypeVar("_T")
Endpoint = Literal["scan", "identity_keys", "shopper", "purchases"]
VisitorType = Literal["SHOPPER", "ASSOCIATE", "CASH_SHOPPER"]
Share = Annotated[float, Field(ge=0.0, le=1.0)]

SCAN_TYPES: dict[VisitorType, str] = {"SHOPPER": "SHOPPER", "ASSOCIATE": "ASSOCIATE", "CASH_SHOPPER": "CASH"}
"""A visitor type as ResolveScan and the cart's `scanResult` spell it."""

PATHS: dict[Endpoint, str] = {
    "scan": "/v1/identity/scan",
    "identity_keys": "/v1/identity/identity-keys",
    "shopper": "/v1/identity/shopper",
    "purchases": "/v1/order/purchases",
}

_OPEN, _CLOSE = time(7, 0), time(21, 0)
_STORE_TAX_RATES = (Decimal("0.0625"), Decimal("0.08875"), Decimal("0.0725"), Decimal("0.06"))
_PROMOTIONS = (Decimal("5"), Decimal("10"), Decimal("12.5"), Decimal("20"), Decimal("25"))
_CENTS = (Decimal("0.29"), Decimal("0.49"), Decimal("0.79"), Decimal("0.99"))
_AREA_CODES = ("617", "212", "415", "312", "206")
_PHONE_NUMBERS = 10_000 * len(_AREA_CODES)
# (name, sold by weight, taxable)
_PRODUCTS = (
    ("Bananas", True, False),
    ("Gala Apples", True, False),
    ("Roma Tomatoes", True, False),
    ("Deli Turkey", True, False),
    ("Whole Milk 1gal", False, False),
    ("Greek Yogurt", False, False),
    ("Sourdough Loaf", False, False),
    ("Free Range Eggs 12ct", False, False),
    ("Cheddar Block", False, False),
    ("Cold Brew Coffee", False, True),
    ("Sparkling Water 12pk", False, True),
    ("Potato Chips", False, True),
    ("Dark Chocolate Bar", False, True),
    ("Paper Towels 6pk", False, True),
    ("Dish Soap", False, True),
    ("Toothpaste", False, True),
    ("AA Batteries 4pk", False, True),
    ("Energy Drink", False, True),
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScenarioConfig(_Frozen):
    seed: int = 7
    shoppers: int = Field(200, ge=0)
    stores: int = Field(3, ge=1)
    business_date: date = date(2026, 11, 20)
    skus_per_store: int = Field(40, ge=1)
    card_entry_share: Share = 0.2
    resolve_scan_share: Share = 0.3
    """Of app entries: ResolveScan at the gate; the others use VerifyIdentityKeys."""
    associate_share: Share = 0.05
    blocked_share: Share = 0.03
    unknown_key_attempts: int = Field(4, ge=0)
    empty_cart_share: Share = 0.05
    unknown_item_share: Share = 0.03
    """Of cart lines: an item that is in no catalog."""
    retry_share: Share = 0.1
    """Of requests: re-sent as an Amazon retry (same body, new requestId)."""
    get_shopper_calls: int = Field(6, ge=0)


class Shopper(_Frozen):
    shopper_id: str
    identity_key: str
    visitor_type: VisitorType
    phone_number: str | None
    status: Literal["active", "blocked"]


class CatalogItem(_Frozen):
    store_id: str
    sku: str
    name: str
    barcodes: tuple[str, ...]
    unit_price: Decimal
    currency: str
    tax_rate: Decimal
    promotion_percent: Decimal | None
    sold_by_weight: bool


class PlannedRequest(_Frozen):
    at: datetime
    endpoint: Endpoint
    lane: str
    """Requests of one lane (one shopper, or one stray caller) are sent in order, one at a time."""
    body: dict[str, Any]
    retry_of: str | None = None
    """The requestId of the original when this is an Amazon retry."""

    @property
    def path(self) -> str:
        return PATHS[self.endpoint]

    @property
    def request_id(self) -> str:
        return str(self.body["requestId"])


class Scenario(_Frozen):
    config: ScenarioConfig
    stores: tuple[str, ...]
    shoppers: tuple[Shopper, ...]
    catalog: tuple[CatalogItem, ...]
    requests: tuple[PlannedRequest, ...]
    """Every call Amazon makes, retries included, in time order."""


def timestamp(moment: datetime) -> str:
    """The wire format of a time: `2026-11-20T13:03:14Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def build_scenario(config: ScenarioConfig) -> Scenario:
    return _Planner(config).scenario()


class _Planner:
    def __init__(self, config: ScenarioConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stores = tuple(f"store-{n:03d}" for n in range(1, config.stores + 1))
        self.requests: list[PlannedRequest] = []

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sample(self, items: Sequence[_T], share: float) -> list[_T]:
        return self.rng.sample(items, round(share * len(items)))

    def scenario(self) -> Scenario:
        catalog = self.catalog()
        shoppers = self.shoppers()
        self.visits(shoppers, catalog)
        self.unknown_keys()
        self.get_shopper_calls(shoppers)
        self.retries()
        return Scenario(
            config=self.config,
            stores=self.stores,
            shoppers=tuple(shoppers),
            catalog=tuple(sorted(catalog, key=lambda item: (item.store_id, item.sku))),
            requests=tuple(sorted(self.requests, key=lambda r: (r.at, r.request_id))),
        )

    def catalog(self) -> list[CatalogItem]:
        rng = self.rng
        codes = rng.sample(range(10**10), 2 * self.config.skus_per_store)
        catalog: list[CatalogItem] = []
        for index in range(self.config.skus_per_store):
            name, weighed, taxable = _PRODUCTS[index % len(_PRODUCTS)]
            if index >= len(_PRODUCTS):
                name = f"{name} #{index // len(_PRODUCTS) + 1}"
            barcodes = tuple(_upc(f"0{code:010d}") for code in codes[2 * index : 2 * index + rng.randint(1, 2)])
            for number, store_id in enumerate(self.stores):
                catalog.append(
                    CatalogItem(
                        store_id=store_id,
                        sku=f"SKU-{index + 1:05d}",
                        name=name,
                        barcodes=barcodes,
                        unit_price=rng.randint(0, 14) + rng.choice(_CENTS),
                        currency="USD",
                        tax_rate=_STORE_TAX_RATES[number % len(_STORE_TAX_RATES)] if taxable else Decimal(0),
                        promotion_percent=rng.choice(_PROMOTIONS) if rng.random() < 0.15 else None,
                        sold_by_weight=weighed,
                    )
                )
        return catalog

    def shoppers(self) -> list[Shopper]:
        count = self.config.shoppers
        associates = set(self.sample(range(count), self.config.associate_share))
        blocked = set(self.sample(range(count), self.config.blocked_share))
        numbers = self.rng.sample(range(_PHONE_NUMBERS), min(count, _PHONE_NUMBERS))
        return [
            Shopper(
                shopper_id=self.uuid(),
                identity_key=self.uuid(),
                visitor_type="ASSOCIATE" if n in associates else "SHOPPER",
                phone_number=_phone(numbers[n]) if n < len(numbers) and self.rng.random() < 0.9 else None,
                status="blocked" if n in blocked else "active",
            )
            for n in range(count)
        ]

    def visits(self, shoppers: list[Shopper], catalog: list[CatalogItem]) -> None:
        active = [s for s in shoppers if s.status == "active"]
        card = {s.shopper_id for s in self.sample(active, self.config.card_entry_share)}
        app = [s for s in active if s.shopper_id not in card]
        scanners = {s.shopper_id for s in self.sample(app, self.config.resolve_scan_share)}
        empty = {s.shopper_id for s in self.sample(active, self.config.empty_cart_share)}
        by_store = {store: [item for item in catalog if item.store_id == store] for store in self.stores}
        for shopper in shoppers:
            store_id = self.rng.choice(self.stores)
            entry = self.moment()
            if shopper.shopper_id in card:
                auth_event = self.entry_event(entry) | {"payloadType": "FINANCIAL"}
            else:
                if shopper.status == "blocked":
                    use_scan = self.rng.random() < self.config.resolve_scan_share
                else:
                    use_scan = shopper.shopper_id in scanners
                event = self.gate(shopper.shopper_id, store_id, entry, shopper.identity_key, use_scan)
                if shopper.status == "blocked":
                    continue
                scan_result = {"id": shopper.shopper_id, "type": SCAN_TYPES[shopper.visitor_type]}
                auth_event = event | {"payloadType": "SCAN_CODE", "scanResult": scan_result}
            lines = 0 if shopper.shopper_id in empty else self.rng.randint(1, 8)
            self.purchase(shopper.shopper_id, store_id, entry, auth_event, by_store[store_id], lines)

    def moment(self) -> datetime:
        opening = datetime.combine(self.config.business_date, _OPEN, UTC)
        day = datetime.combine(self.config.business_date, _CLOSE, UTC) - opening
        return opening + timedelta(seconds=self.rng.randrange(int(day.total_seconds())))

    def entry_event(self, at: datetime) -> dict[str, Any]:
        return {"id": self.uuid(), "timestamp": timestamp(at), "location": "ENTRY"}

    def gate(self, lane: str, store_id: str, at: datetime, identity_key: str, use_scan: bool) -> dict[str, Any]:
        """Plan a gate call; returns its event, which the cart later carries as authEvents[0]."""
        event = self.entry_event(at)
        if use_scan:
            scan = event | {"value": b64(identity_key), "channel": "OPTICAL"}
            body = {"requestId": self.uuid(), "storeId": store_id, "scanEvent": scan}
            self.plan(at, "scan", lane, body)
        else:
            body = {
                "requestId": self.uuid(),
                "identityKey": b64(identity_key),
                "storeId": store_id,
                "authEvent": event,
                "keyChannel": "OPTICAL",
            }
            self.plan(at, "identity_keys", lane, body)
        return event

    def purchase(
        self,
        lane: str,
        store_id: str,
        entry: datetime,
        auth_event: dict[str, Any],
        items: list[CatalogItem],
        lines: int,
    ) -> None:
        exit_at = entry + timedelta(seconds=self.rng.randint(120, 2700))
        body = {
            "requestId": self.uuid(),
            "idempotentShoppingTripId": self.uuid(),
            "storeId": store_id,
            "shoppingTrip": {
                "startTime": timestamp(entry),
                "endTime": timestamp(exit_at),
                "authEvents": [auth_event],
            },
            "cartItems": [self.cart_item(items) for _ in range(lines)],
        }
        self.plan(exit_at + timedelta(seconds=self.rng.randint(5, 90)), "purchases", lane, body)

    def cart_item(self, items: list[CatalogItem]) -> dict[str, Any]:
        rng = self.rng
        line: dict[str, Any] = {"lineItemId": self.uuid()}
        if rng.random() < self.config.unknown_item_share:
            if rng.random() < 0.5:
                return line | {"id": f"SKU-NEW-{rng.randint(1000, 9999)}", "type": "SKU", **_each(1)}
            code = _upc(f"9{rng.randrange(10**10):010d}")
            return line | {"id": code, "type": "SCANCODE", **_each(1)}
        item = rng.choice(items)
        if item.sold_by_weight:
            quantity = {"quantity": {"value": str(Decimal(rng.randint(100, 1500)).scaleb(-3)), "unit": "KG"}}
        else:
            quantity = _each(rng.choice((1, 1, 1, 2, 3)))
        if rng.random() < 0.4:
            code = rng.choice(item.barcodes)
            upc = {"externalIdentifiers": [{"id": code, "type": "UPC"}]}
            return line | {"id": code, "type": "SCANCODE", **quantity, **upc}
        return line | {"id": item.sku, "type": "SKU", **quantity}

    def unknown_keys(self) -> None:
        for n in range(self.config.unknown_key_attempts):
            use_scan = self.rng.random() < self.config.resolve_scan_share
            self.gate(f"stranger-{n}", self.rng.choice(self.stores), self.moment(), self.uuid(), use_scan)

    def get_shopper_calls(self, shoppers: list[Shopper]) -> None:
        """Associates acting for a shopper; every third call is for someone we do not know."""
        phones = {s.identity_key: s.phone_number for s in shoppers if s.status == "active" and s.phone_number}
        keys = sorted(phones)
        for n in range(self.config.get_shopper_calls):
            by_phone = n % 2 == 1
            known = self.rng.choice(keys) if keys and n % 3 != 2 else None
            if by_phone:
                key = phones[known] if known else f"+44 20 7946 {self.rng.randrange(1000):04d}"
            else:
                key = b64(known or self.uuid())
            at = self.moment()
            body = {
                "requestId": self.uuid(),
                "shopperKey": key,
                "shopperKeyType": "PHONE_NUMBER" if by_phone else "QR_CODE",
                "storeId": self.rng.choice(self.stores),
                "timestamp": timestamp(at),
            }
            self.plan(at, "shopper", f"associate-{n}", body)

    def retries(self) -> None:
        for original in list(self.requests):
            if self.rng.random() < self.config.retry_share:
                self.requests.append(
                    original.model_copy(
                        update={
                            "at": original.at + timedelta(seconds=self.rng.randint(1, 4)),
                            "body": original.body | {"requestId": self.uuid()},
                            "retry_of": original.request_id,
                        }
                    )
                )

    def plan(self, at: datetime, endpoint: Endpoint, lane: str, body: dict[str, Any]) -> None:
        self.requests.append(PlannedRequest(at=at, endpoint=endpoint, lane=lane, body=body))


def _each(count: int) -> dict[str, Any]:
    return {"quantity": {"value": str(count), "unit": "EA"}}


def _phone(number: int) -> str:
    """One of `_PHONE_NUMBERS` distinct E.123 numbers."""
    return f"+1 {_AREA_CODES[number // 10_000]} 555 {number % 10_000:04d}"


def _upc(first_eleven: str) -> str:
    """A UPC-A code: eleven digits and their check digit."""
    odd = sum(int(d) for d in first_eleven[0::2])
    even = sum(int(d) for d in first_eleven[1::2])
    return first_eleven + str((10 - (3 * odd + even) % 10) % 10)
