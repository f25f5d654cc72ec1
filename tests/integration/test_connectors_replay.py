"""SPEC §2 idempotency at volume: per route, 1,000 generated valid requests (seeded: several stores,
shoppers in every standing, known, unknown, weighed and empty carts), each sent five times; the fifth
time after a restart (a new `ConnectorService` and `SqliteOutbox` over the same `outbox.db`). Every
attempt gets the first answer byte for byte, and the outbox holds exactly the messages the first
answers recorded, no more."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.messages import decode_envelope
from tests.connectors_traffic import ROUTES, Generated, Population, Route, Traffic, outbox_rows, retry_of

REQUESTS = 1_000
ATTEMPTS = 5
CONCURRENCY = 64
# The per-store rate limit would answer 429 to a test that sends thousands of requests a second.
SETTINGS = ConnectorSettings(rate_limit_per_store=1e9)

Answer = tuple[int, bytes]


def clock() -> datetime:
    return datetime.now(UTC)  # a real clock: answers must not depend on when a retry arrives


async def send_all(app: Any, path: str, bodies: Sequence[dict[str, Any]]) -> list[Answer]:
    limit = asyncio.Semaphore(CONCURRENCY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://connectors") as client:

        async def one(body: dict[str, Any]) -> Answer:
            async with limit:
                response = await client.post(path, json=body)
                return response.status_code, response.content

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def message_counts(db: Path) -> tuple[int, int]:
    rows = outbox_rows(db)
    return len(rows), len({message_id for message_id, _ in rows})


def message_types(purchase: Generated) -> list[str]:
    """What a CreatePurchases records: its purchase, a bad cart for unknown items, a cancel for an empty cart."""
    empty = not purchase.body["cartItems"]
    return ["purchase"] + ["bad_cart"] * (purchase.messages - 1 - empty) + ["cancel_charge"] * empty


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_every_retry_and_the_retry_after_a_restart_get_the_first_answer_and_record_nothing_more(
    tmp_path: Path, route: Route
) -> None:
    population = Population.build()
    traffic = Traffic(population, seed=1000 + ROUTES.index(route))
    requests: list[Generated] = [traffic.draw(route) for _ in range(REQUESTS)]
    expected_messages = sum(g.messages for g in requests)
    path = requests[0].path
    db = tmp_path / "outbox.db"
    directory = CachedDirectory(population.source())
    counts_after: list[tuple[int, int]] = []

    async def attempts_before_restart() -> list[list[Answer]]:
        outbox = SqliteOutbox(db)
        try:
            app = create_app(ConnectorService(directory, outbox, clock), SETTINGS)
            answers = [await send_all(app, path, [g.body for g in requests])]
            counts_after.append(message_counts(db))
            for attempt in range(2, ATTEMPTS):
                answers.append(await send_all(app, path, [retry_of(g, attempt) for g in requests]))
                counts_after.append(message_counts(db))
            return answers
        finally:
            outbox.close()

    async def attempt_after_restart() -> list[Answer]:
        outbox = SqliteOutbox(db)
        try:
            app = create_app(ConnectorService(CachedDirectory(population.source()), outbox, clock), SETTINGS)
            return await send_all(app, path, [retry_of(g, ATTEMPTS) for g in requests])
        finally:
            outbox.close()

    answers = asyncio.run(attempts_before_restart())
    answers.append(asyncio.run(attempt_after_restart()))
    counts_after.append(message_counts(db))

    first = answers[0]
    assert [status for status, _ in first] == [g.expected_status for g in requests]
    if route == "scan":
        assert {json.loads(body)["action"] for _, body in first} == {"ACCEPT", "REJECT"}
    for attempt, later in enumerate(answers[1:], start=2):
        mismatched = [n for n in range(REQUESTS) if later[n] != first[n]]
        assert mismatched == [], f"attempt {attempt} answered differently for requests {mismatched[:5]}"
    assert counts_after == [(expected_messages, expected_messages)] * ATTEMPTS

    # Each message belongs to the first attempt of exactly one request.
    envelopes = [decode_envelope(body) for _, body in outbox_rows(db)]
    if route == "purchases":
        by_trip = Counter((e.payload["shopping_trip_id"], e.type) for e in envelopes)
        assert by_trip == Counter(
            (str(g.body["idempotentShoppingTripId"]), kind) for g in requests for kind in message_types(g)
        )
    else:
        assert {e.type for e in envelopes} == {"auth_event"}
        assert Counter(e.payload["request_id"] for e in envelopes) == Counter(
            str(g.body["requestId"]) for g in requests
        )


def test_the_generated_traffic_covers_every_outcome() -> None:
    """The replay above is only as good as its traffic: each route's 1,000 requests reach every answer."""
    population = Population.build()
    drawn: dict[Route, list[Generated]] = {}
    for n, route in enumerate(ROUTES):
        traffic = Traffic(population, seed=1000 + n)
        drawn[route] = [traffic.draw(route) for _ in range(REQUESTS)]
    statuses = {route: Counter(g.expected_status for g in drawn[route]) for route in ROUTES}
    purchases = drawn["purchases"]
    carts = Counter("empty" if not g.body["cartItems"] else "bad" if g.messages == 2 else "priced" for g in purchases)

    assert set(statuses["identity_keys"]) == {200, 401}
    assert set(statuses["shopper"]) == {201, 404}
    assert min(carts[kind] for kind in ("empty", "bad", "priced")) >= 50
    assert len({g.body["storeId"] for g in purchases}) == len(population.stores)
