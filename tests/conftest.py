from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.ports import Shopper
from connectors.pricing import CatalogItem
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.messages import Envelope, decode_envelope
from jwo import logs

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def source() -> MemorySource:
    src = MemorySource()
    for shopper in (
        Shopper("shopper-1", "key-1", "SHOPPER", "+1 617 555 1234", "active"),
        Shopper("1111-2222-3333-4444-5555-6666", "1111-2222-3333-4444-5555-6666", "SHOPPER", None, "active"),
        Shopper("assoc-1", "key-assoc", "ASSOCIATE", None, "active"),
        Shopper("blocked-1", "key-blocked", "SHOPPER", None, "blocked"),
        Shopper("debtor-1", "key-debtor", "SHOPPER", None, "active"),
    ):
        src.shoppers[shopper.shopper_id] = shopper
    src.indebted.add("debtor-1")
    src.items = [
        (CatalogItem("store-1", "sku-apple", "Apple", Decimal("0.99"), "USD", Decimal("0.0625")), ["000000000017"]),
        (CatalogItem("store-1", "sku-cheese", "Cheese", Decimal("12.49"), "USD", Decimal("0"), Decimal("10")), []),
    ]
    return src


@pytest.fixture
def outbox() -> MemoryOutbox:
    return MemoryOutbox()


@pytest.fixture
def client(source: MemorySource, outbox: MemoryOutbox) -> TestClient:
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    return TestClient(create_app(service, ConnectorSettings()))


# --- connector request bodies and outbox helpers ----------------------------------------------------

T_ENTRY = "2026-11-20T11:30:00Z"
T_EXIT = "2026-11-20T11:45:00Z"


def new_id() -> str:
    return str(uuid.uuid4())


def scan_body(
    value: str | None = None,
    *,
    event_id: str | None = None,
    timestamp: str = T_ENTRY,
    channel: str = "OPTICAL",
    store_id: str = "store-1",
) -> dict[str, Any]:
    """A valid ResolveScan request (SPEC §2.1); `value` defaults to shopper-1's key in Base64."""
    return {
        "requestId": new_id(),
        "storeId": store_id,
        "scanEvent": {
            "id": event_id or new_id(),
            "timestamp": timestamp,
            "location": "ENTRY",
            "value": b64("key-1") if value is None else value,
            "channel": channel,
        },
    }


def identity_keys_body(identity_key: str | None = None, *, event_id: str | None = None) -> dict[str, Any]:
    """A valid VerifyIdentityKeys request (SPEC §2.2); the key defaults to shopper-1's in Base64."""
    return {
        "requestId": new_id(),
        "identityKey": b64("key-1") if identity_key is None else identity_key,
        "storeId": "store-1",
        "authEvent": {"id": event_id or new_id(), "timestamp": T_ENTRY, "location": "ENTRY"},
        "keyChannel": "OPTICAL",
    }


def shopper_body(shopper_key: str | None = None, key_type: str | None = None) -> dict[str, Any]:
    """A valid GetShopper request (SPEC §2.3); the key defaults to shopper-1's QR code."""
    body: dict[str, Any] = {
        "requestId": new_id(),
        "shopperKey": b64("key-1") if shopper_key is None else shopper_key,
        "storeId": "store-1",
        "timestamp": T_ENTRY,
    }
    if key_type is not None:
        body["shopperKeyType"] = key_type
    return body


def cart_item(item_id: str, quantity: str = "1", *, item_type: str = "SKU", line: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": item_type,
        "quantity": {"value": quantity, "unit": "each"},
        "lineItemId": line or new_id(),
    }


def purchase_body(
    items: list[dict[str, Any]] | None = None,
    *,
    trip_id: str | None = None,
    payload_type: str = "SCAN_CODE",
    shopper_id: str | None = "shopper-1",
) -> dict[str, Any]:
    """A valid CreatePurchases request (SPEC §2.4); one apple unless `items` says otherwise."""
    auth_event: dict[str, Any] = {
        "id": new_id(),
        "timestamp": T_ENTRY,
        "location": "ENTRY",
        "payloadType": payload_type,
    }
    if shopper_id is not None:
        auth_event["scanResult"] = {"id": shopper_id, "type": "SHOPPER"}
    return {
        "requestId": new_id(),
        "idempotentShoppingTripId": trip_id or new_id(),
        "storeId": "store-1",
        "shoppingTrip": {"startTime": T_ENTRY, "endTime": T_EXIT, "authEvents": [auth_event]},
        "cartItems": [cart_item("sku-apple")] if items is None else items,
    }


def envelopes(outbox: MemoryOutbox) -> list[Envelope]:
    """Every message the connectors made durable, decoded as a consumer would."""
    return [decode_envelope(m.body) for m in outbox.messages]


@pytest.fixture
def service(source: MemorySource, outbox: MemoryOutbox) -> ConnectorService:
    return ConnectorService(CachedDirectory(source), outbox, lambda: NOW)


@pytest.fixture
def make_client(service: ConnectorService) -> Callable[[ConnectorSettings], TestClient]:
    """A TestClient over the `service` fixture with the given settings (rate limit, body cap, api key)."""

    def make(settings: ConnectorSettings) -> TestClient:
        return TestClient(create_app(service, settings))

    return make


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A CLI command configures process-wide logging; put the test runner's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if root.handlers != handlers:
        logs.shutdown()
        root.handlers[:] = handlers
        root.setLevel(level)
