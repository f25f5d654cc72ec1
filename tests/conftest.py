from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.ports import Shopper
from connectors.pricing import CatalogItem
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings

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
