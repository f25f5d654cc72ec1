"""The gate loop over HTTP (SPEC §5): a shopper's capture is declined → reconciliation opens a bad debt →
the next gate call is refused → finance settles the debt → the next gate call is accepted."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connectors.ports import Shopper
from connectors.pricing import CatalogItem
from jwo.reconcile_facts import build_job
from jwo.runtime import running
from jwo.settings import Settings
from simulator.eventfeed import deliver_to_queue
from tests.conftest import cart_item, identity_keys_body, purchase_body
from warehouse.query import run_query

DAY = date(2026, 11, 20)
AFTER_THE_DAY = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # past the pre-auth window of every trip that day


def _declined_capture(trip_id: str, amount: str) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "PAYMENT",
            "source": "jwo.eventfeed",
            "account": "123456789012",
            "time": "2026-11-20T12:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "shoppingTripId": trip_id,
                "storeId": "store-1",
                "eventTime": "2026-11-20T12:00:00Z",
                "subType": "CaptureDeclined",
                "amount": {"value": amount, "currencyCode": "USD"},
                "brand": "VISA",
                "cardLastFourDigits": "4242",
                "reconciliationId": "RCN-1",
                "status": "DECLINED",
            },
        }
    )


async def _until(check: Any, within: float = 20.0) -> None:
    for _ in range(int(within / 0.2)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")


def test_a_declined_capture_closes_the_gate_until_the_debt_is_settled(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        settings = Settings(home=tmp_path / "home", aws_mode="embedded")
        settings.connectors = settings.connectors.model_copy(update={"port": 0, "directory_refresh_seconds": 0.2})
        statuses: list[int] = []
        async with running(settings, connectors=True, consumers=True) as pipeline:
            pipeline.store.upsert_shoppers([Shopper("shopper-1", "key-1", "SHOPPER", None, "active")])
            pipeline.store.upsert_catalog(
                [(CatalogItem("store-1", "sku-apple", "Apple", Decimal("5.00"), "USD", Decimal("0")), [])]
            )
            async with httpx.AsyncClient(base_url=pipeline.base_url) as client:

                async def gate() -> int:
                    response = await client.post("/v1/identity/identity-keys", json=identity_keys_body())
                    return response.status_code

                directory = pipeline.directory
                assert directory is not None
                await _until(lambda: directory.item_by_sku("store-1", "sku-apple"))
                statuses.append(await gate())  # admitted

                body = purchase_body([cart_item("sku-apple")])
                trip_id = body["idempotentShoppingTripId"]
                bought = await client.post("/v1/order/purchases", json=body)
                assert bought.status_code == 201
                await deliver_to_queue(
                    pipeline.aws.endpoint, pipeline.aws.resources.eventfeed.url, [_declined_capture(trip_id, "5.00")]
                )
                lake = settings.lake_dir
                await _until(lambda: run_query(lake, "select count(*) from payment_events").rows == [(1,)])
                await _until(lambda: run_query(lake, "select count(*) from purchases").rows == [(1,)])

                job = build_job(lake, pipeline.store, settings.reconcile, clock=lambda: AFTER_THE_DAY)
                report = await asyncio.to_thread(job.run, day=DAY)
                assert report.debts_opened == 1
                await asyncio.sleep(0.6)  # the gate's directory reloads within its refresh period
                statuses.append(await gate())  # refused: an open debt

                await asyncio.to_thread(job.close_debt, trip_id, "SETTLED", None)
                await asyncio.sleep(0.6)
                statuses.append(await gate())  # admitted again
        return statuses

    assert asyncio.run(scenario()) == [200, 401, 200]
