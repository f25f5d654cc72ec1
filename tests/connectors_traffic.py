"""Seeded traffic for the connector load, replay, outage and crash tests.

`Population` is a retailer (shoppers in good standing, blocked and indebted ones, associates, several
stores with catalogs); `Traffic` draws valid requests for the four routes from it with a fixed seed, each
with the number of queue messages it must produce (SPEC §2.6). `retry_of` is what Amazon sends when it
retries. `serving` runs an ASGI app under uvicorn on 127.0.0.1 in the current event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import random
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI

from connectors.fakes import MemorySource
from connectors.ports import Shopper, VisitorType
from connectors.pricing import CatalogItem

Route = Literal["scan", "identity_keys", "shopper", "purchases"]
PATHS: dict[Route, str] = {
    "scan": "/v1/identity/scan",
    "identity_keys": "/v1/identity/identity-keys",
    "shopper": "/v1/identity/shopper",
    "purchases": "/v1/order/purchases",
}
ROUTES: tuple[Route, ...] = tuple(PATHS)
BASE_TIME = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class Population:
    """A retailer's identity store and catalog, the same for a given seed."""

    shoppers: tuple[Shopper, ...]
    indebted: frozenset[str]
    stores: tuple[str, ...]
    catalog: tuple[tuple[CatalogItem, tuple[str, ...]], ...]

    @classmethod
    def build(cls, seed: int = 7, *, shoppers: int = 60, stores: int = 6, skus: int = 25) -> Population:
        rng = random.Random(seed)
        people: list[Shopper] = []
        for n in range(shoppers):
            kind: VisitorType = "ASSOCIATE" if n % 9 == 4 else "CASH_SHOPPER" if n % 13 == 6 else "SHOPPER"
            people.append(
                Shopper(
                    shopper_id=f"shopper-{n:04d}",
                    identity_key=seeded_uuid(rng),
                    visitor_type=kind,
                    phone_number=f"+1 617 555 {n:04d}" if n % 2 == 0 else None,
                    status="blocked" if n % 10 == 3 else "active",
                )
            )
        indebted = frozenset(p.shopper_id for n, p in enumerate(people) if n % 7 == 5)
        store_ids = tuple(f"store-{n:03d}" for n in range(1, stores + 1))
        items: list[tuple[CatalogItem, tuple[str, ...]]] = []
        for store in store_ids:
            for n in range(skus):
                price = Decimal(rng.randint(19, 2599)) / 100
                tax = rng.choice([Decimal(0), Decimal("0.0625"), Decimal("0.08875")])
                promotion = Decimal(rng.choice([5, 10, 25])) if n % 5 == 0 else None
                item = CatalogItem(store, f"SKU-{n:03d}", f"Item {n}", price, "USD", tax, promotion)
                items.append((item, (f"0{rng.randint(10**10, 10**11 - 1)}",)))
        return cls(tuple(people), indebted, store_ids, tuple(items))

    def source(self) -> MemorySource:
        src = MemorySource()
        for shopper in self.shoppers:
            src.shoppers[shopper.identity_key] = shopper
        src.indebted.update(self.indebted)
        src.items = [(item, list(barcodes)) for item, barcodes in self.catalog]
        return src

    def items_of(self, store: str) -> list[tuple[CatalogItem, tuple[str, ...]]]:
        return [(item, codes) for item, codes in self.catalog if item.store_id == store]

    def admitted(self, shopper: Shopper) -> bool:
        return shopper.status == "active" and shopper.shopper_id not in self.indebted


@dataclass(frozen=True)
class Generated:
    route: Route
    body: dict[str, Any]
    messages: int
    """Queue messages the first answer records: one auth event, or a purchase (+ bad cart, + cancel)."""
    expected_status: int

    @property
    def path(self) -> str:
        return PATHS[self.route]

    @property
    def key(self) -> str:
        """The idempotency key, as SPEC §2 defines it for the route."""
        body = self.body
        if self.route == "scan":
            return f"{body['scanEvent']['id'].strip()}|{body['scanEvent']['timestamp']}"
        if self.route == "identity_keys":
            return str(body["authEvent"]["id"])
        if self.route == "shopper":
            return str(body["requestId"])
        return str(body["idempotentShoppingTripId"])


@dataclass
class Traffic:
    """Valid requests drawn from a population with a fixed seed; every one has its own idempotency key."""

    population: Population
    seed: int = 11
    _rng: random.Random = field(init=False)
    _n: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _moment(self) -> datetime:
        self._n += 1
        return BASE_TIME + timedelta(seconds=self._n)

    def _who(self) -> tuple[Shopper | None, str]:
        """A shopper and their decoded key; now and then a key nobody has."""
        if self._rng.random() < 0.12:
            return None, seeded_uuid(self._rng)
        shopper = self._rng.choice(self.population.shoppers)
        return shopper, shopper.identity_key

    def draw(self, route: Route) -> Generated:
        return {
            "scan": self.scan,
            "identity_keys": self.identity_keys,
            "shopper": self.shopper,
            "purchases": self.purchase,
        }[route]()

    def identity(self) -> Generated:
        return self.draw(self._rng.choice(("scan", "identity_keys", "shopper")))

    def scan(self) -> Generated:
        rng = self._rng
        _, key = self._who()
        channel = rng.choice(("OPTICAL", "OPTICAL", "RADIO", "CONTACT"))
        value = key if channel == "RADIO" else b64(key)
        # The vendor FAQ's static QR code: the Base64 payload as the event id (with its stray space).
        event_id = b64(key) + " " if channel != "RADIO" and rng.random() < 0.3 else seeded_uuid(rng)
        body = {
            "requestId": seeded_uuid(rng),
            "storeId": rng.choice(self.population.stores),
            "scanEvent": {
                "id": event_id,
                "timestamp": iso(self._moment()),
                "location": rng.choice(("ENTRY", "EXIT", "MANUAL_IN_STORE")),
                "value": value,
                "channel": channel,
            },
        }
        return Generated("scan", body, 1, 200)

    def identity_keys(self) -> Generated:
        rng = self._rng
        shopper, key = self._who()
        body: dict[str, Any] = {
            "requestId": seeded_uuid(rng),
            "identityKey": b64(key),
            "storeId": rng.choice(self.population.stores),
            "authEvent": {"id": seeded_uuid(rng), "timestamp": iso(self._moment()), "location": "ENTRY"},
        }
        if rng.random() < 0.7:
            body["keyChannel"] = rng.choice(("OPTICAL", "RADIO", "CONTACT"))
        admitted = shopper is not None and self.population.admitted(shopper)
        return Generated("identity_keys", body, 1, 200 if admitted else 401)

    def shopper(self) -> Generated:
        rng = self._rng
        shopper, key = self._who()
        body: dict[str, Any] = {
            "requestId": seeded_uuid(rng),
            "storeId": rng.choice(self.population.stores),
            "timestamp": iso(self._moment()),
        }
        phone = shopper.phone_number if shopper is not None else None
        if phone is not None and rng.random() < 0.5:
            body["shopperKeyType"] = "PHONE_NUMBER"
            body["shopperKey"] = rng.choice((phone, phone.replace(" ", "-"), phone.replace(" ", "")))
        else:
            if rng.random() < 0.5:
                body["shopperKeyType"] = "QR_CODE"
            body["shopperKey"] = b64(key)
        return Generated("shopper", body, 1, 201 if shopper is not None else 404)

    def purchase(self, trip_id: str | None = None) -> Generated:
        rng = self._rng
        store = rng.choice(self.population.stores)
        catalog = self.population.items_of(store)
        start = self._moment()
        items: list[dict[str, Any]] = []
        unknown = 0
        for line in range(rng.choice((0, 1, 1, 2, 3, 4, 6))):
            kind = rng.choice(("SKU", "SCANCODE"))
            if rng.random() < 0.1:
                unknown += 1
                item_id = f"NOPE-{rng.randint(0, 10**6)}"
            else:
                item, barcodes = rng.choice(catalog)
                item_id = item.sku if kind == "SKU" else barcodes[0]
            weighed = rng.random() < 0.2
            cart_item: dict[str, Any] = {
                "id": item_id,
                "type": kind,
                "quantity": {
                    "value": f"0.{rng.randint(100, 999)}" if weighed else str(rng.randint(1, 4)),
                    "unit": "kg" if weighed else "each",
                },
            }
            if rng.random() < 0.8:
                cart_item["lineItemId"] = f"line-{line}"
            if rng.random() < 0.2:
                cart_item["externalIdentifiers"] = [{"id": str(rng.randint(10**11, 10**12 - 1)), "type": "UPC"}]
            items.append(cart_item)
        card = rng.random() < 0.3
        auth_event: dict[str, Any] = {
            "id": seeded_uuid(rng),
            "timestamp": iso(start),
            "location": "ENTRY",
            "payloadType": "FINANCIAL" if card else "SCAN_CODE",
        }
        if not card:
            auth_event["scanResult"] = {"id": rng.choice(self.population.shoppers).shopper_id, "type": "SHOPPER"}
        body: dict[str, Any] = {
            "requestId": seeded_uuid(rng),
            "idempotentShoppingTripId": trip_id or (seeded_uuid(rng) if rng.random() < 0.7 else f"trip-{self._n}"),
            "storeId": store,
            "shoppingTrip": {
                "startTime": iso(start),
                "endTime": iso(start + timedelta(minutes=rng.randint(1, 40))),
                "authEvents": [auth_event],
            },
            "cartItems": items,
        }
        if rng.random() < 0.3:
            body["shopperDeviceId"] = f"device-{rng.randint(1, 500)}"
        messages = 1 + (1 if unknown else 0) + (1 if not items else 0)
        return Generated("purchases", body, messages, 201)


def retry_of(generated: Generated, attempt: int) -> dict[str, Any]:
    """What Amazon sends when it retries: a new requestId (except for GetShopper, whose requestId is the
    idempotency key) and attributes we do not know yet."""
    body = copy.deepcopy(generated.body)
    if generated.route != "shopper":
        body["requestId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{body['requestId']}/{attempt}"))
    body[f"addedInVersion{attempt}"] = {"attempt": attempt, "note": "unknown fields are ignored"}
    return body


async def wait_until(done: Callable[[], bool], within: float, every: float = 0.1) -> float:
    """Poll `done` until it holds or `within` seconds passed; returns the seconds it took."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started >= within:
            break
        await asyncio.sleep(every)
    return time.monotonic() - started


# --- reading the outbox file ---------------------------------------------------------------------


def outbox_rows(db: Path) -> list[tuple[str, bytes]]:
    """(message_id, body) of every message in an outbox file, in commit order (another reader's view)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(r[0], bytes(r[1])) for r in conn.execute("SELECT message_id, body FROM outbox ORDER BY seq")]
    finally:
        conn.close()


# --- uvicorn on a free loopback port, in this event loop --------------------------------------------


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app under uvicorn on 127.0.0.1 (a free port) in this event loop; yields its base URL."""
    sock = loopback_socket()
    # A keep-alive connection is kept for a minute: with uvicorn's 5 s, a busy test client may send on a
    # connection the server is closing at that moment, and get a ReadError for a request never received.
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=60, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
