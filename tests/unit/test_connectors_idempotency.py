"""SPEC §2 idempotency: a retry gets the same answer and has no second effect; the same key with another
body is a 400 with no effect; concurrent duplicates execute once; the ledger survives a restart."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors import models
from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.errors import OutboxUnavailableError
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.ports import OutboxRecord, StoredResponse
from connectors.service import Answer, ConnectorService, fingerprint, legacy_fingerprint, purchase_id_for
from connectors.settings import ConnectorSettings
from contracts.messages import decode_envelope
from tests.conftest import NOW, b64, cart_item, identity_keys_body, new_id, purchase_body, scan_body, shopper_body

SCAN = "/v1/identity/scan"
KEYS = "/v1/identity/identity-keys"
SHOPPER = "/v1/identity/shopper"
PURCHASES = "/v1/order/purchases"


def retry_of(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What Amazon sends when it retries: a new requestId, maybe attributes we do not know."""
    out = copy.deepcopy(body) | extra
    out["requestId"] = new_id()
    return out


# --- over HTTP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (SCAN, scan_body(b64("key-1")), 200),
        (SCAN, scan_body(b64("no-such-key")), 200),
        (KEYS, identity_keys_body(b64("key-1")), 200),
        (KEYS, identity_keys_body(b64("key-blocked")), 401),
        (PURCHASES, purchase_body(), 201),
        (PURCHASES, purchase_body([]), 201),
        (PURCHASES, purchase_body([cart_item("sku-unknown")]), 201),
    ],
    ids=["scan-accept", "scan-reject", "keys-200", "keys-401", "purchase", "empty-cart", "bad-cart"],
)
def test_a_retry_gets_the_same_answer_and_no_second_effect(
    client: TestClient, outbox: MemoryOutbox, path: str, body: dict[str, Any], status: int
) -> None:
    first = client.post(path, json=body)
    effects = list(outbox.messages)

    retries = [client.post(path, json=retry_of(body, addedLater={"x": 1})) for _ in range(3)]

    assert first.status_code == status
    assert effects != []
    for retry in retries:
        assert retry.status_code == first.status_code
        assert retry.content == first.content
    assert outbox.messages == effects
    assert len(outbox.responses) == 1


def test_a_get_shopper_resent_with_the_same_request_id_has_one_effect(client: TestClient, outbox: MemoryOutbox) -> None:
    body = shopper_body("+1 617 555 1234", "PHONE_NUMBER")

    answers = [client.post(SHOPPER, json=body) for _ in range(3)]

    assert [(a.status_code, a.json()) for a in answers] == [(201, {"shopperId": "shopper-1"})] * 3
    assert len(outbox.messages) == 1


def test_the_same_trip_keeps_its_purchase_id_however_often_it_is_sent(client: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body(trip_id="trip-42")

    answers = {client.post(PURCHASES, json=retry_of(body)).json()["purchaseId"] for _ in range(5)}

    assert answers == {purchase_id_for("trip-42")}
    assert [decode_envelope(m.body).type for m in outbox.messages] == ["purchase"]


def test_a_retry_is_answered_from_the_ledger_even_after_the_shopper_changed(
    source: MemorySource, outbox: MemoryOutbox
) -> None:
    directory = CachedDirectory(source)
    client = TestClient(create_app(ConnectorService(directory, outbox, lambda: NOW), ConnectorSettings()))
    body = identity_keys_body(b64("key-1"))
    first = client.post(KEYS, json=body)
    source.indebted.add("shopper-1")
    source.changed()
    directory.refresh()

    retry = client.post(KEYS, json=retry_of(body))
    fresh = client.post(KEYS, json=identity_keys_body(b64("key-1")))

    assert (first.status_code, retry.status_code, fresh.status_code) == (200, 200, 401)
    assert retry.content == first.content


def _other_purchase(body: dict[str, Any]) -> dict[str, Any]:
    out = retry_of(body)
    out["cartItems"][0]["quantity"]["value"] = "2"
    return out


def _other_scan(body: dict[str, Any]) -> dict[str, Any]:
    out = retry_of(body)
    out["scanEvent"]["location"] = "EXIT"
    return out


def _other_keys(body: dict[str, Any]) -> dict[str, Any]:
    out = retry_of(body)
    out["identityKey"] = b64("key-assoc")
    return out


@pytest.mark.parametrize(
    ("path", "body", "change", "key"),
    [
        (PURCHASES, purchase_body(trip_id="trip-7"), _other_purchase, "trip-7"),
        (SCAN, scan_body(event_id="11111111-2222-3333-4444-555555555555"), _other_scan, None),
        (KEYS, identity_keys_body(event_id="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"), _other_keys, None),
    ],
    ids=["purchases", "scan", "identity-keys"],
)
def test_the_same_key_with_a_different_body_is_a_400_with_no_effect(
    client: TestClient, outbox: MemoryOutbox, path: str, body: dict[str, Any], change: Any, key: str | None
) -> None:
    first = client.post(path, json=body)
    effects = list(outbox.messages)

    clash = client.post(path, json=change(body))
    again = client.post(path, json=retry_of(body))

    assert clash.status_code == 400
    message = clash.json()["message"]
    assert "already used with a different request body" in message
    assert message.startswith("idempotency key ")
    if key is not None:
        assert f"'{key}'" in message
    assert outbox.messages == effects
    assert (again.status_code, again.content) == (first.status_code, first.content)


def test_a_different_store_for_the_same_trip_is_a_different_body(client: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body(trip_id="trip-8")
    client.post(PURCHASES, json=body)

    moved = retry_of(body, storeId="store-2")
    response = client.post(PURCHASES, json=moved)

    assert response.status_code == 400
    assert response.json() == {"message": "idempotency key 'trip-8' was already used with a different request body"}
    assert len(outbox.messages) == 1


def test_bodies_that_differ_only_in_request_id_and_unknown_fields_share_a_fingerprint() -> None:
    body = purchase_body()
    same = retry_of(body, somethingNew=[1, 2])
    same["shoppingTrip"]["addedLater"] = True
    same["shoppingTrip"]["startTime"] = "2026-11-20T06:30:00-05:00"  # the same instant
    other = retry_of(body)
    other["shopperDeviceId"] = "device-9"

    parse = models.CreatePurchasesRequest.model_validate

    assert fingerprint(parse(body)) == fingerprint(parse(same))
    assert fingerprint(parse(body)) != fingerprint(parse(other))


def test_a_retry_of_a_request_recorded_with_the_previous_fingerprint_gets_its_answer(
    client: TestClient, outbox: MemoryOutbox
) -> None:
    """Records made before the fingerprint changed are kept 48 hours: their retries must still match."""
    body = purchase_body(trip_id="trip-legacy")
    request = models.CreatePurchasesRequest.model_validate(body)
    stored = b'{"purchaseId":"recorded-before"}'
    outbox.responses[("purchases", "trip-legacy")] = StoredResponse(legacy_fingerprint(request), 201, stored)
    changed = retry_of(body, storeId="store-2")

    retry = client.post(PURCHASES, json=retry_of(body))
    other = client.post(PURCHASES, json=changed)

    assert legacy_fingerprint(request) != fingerprint(request)
    assert (retry.status_code, retry.content) == (201, stored)
    assert other.status_code == 400
    assert "already used with a different request body" in other.json()["message"]
    assert outbox.messages == []


def test_the_fingerprint_leaves_out_the_request_id_but_not_a_changed_field() -> None:
    body = scan_body(b64("key-1"))
    parse = models.ResolveScanRequest.model_validate

    assert fingerprint(parse(body)) == fingerprint(parse(retry_of(body)))
    assert fingerprint(parse(body)) != fingerprint(parse(retry_of(body, storeId="store-2")))
    assert parse(body).requestId == body["requestId"]


def test_an_unrecorded_request_answers_500_and_its_retry_is_recorded_once(
    client: TestClient, outbox: MemoryOutbox
) -> None:
    body = purchase_body(trip_id="trip-disk")
    outbox.fail = OutboxUnavailableError("the outbox could not write: disk I/O error")

    failed = client.post(PURCHASES, json=body)
    outbox.fail = None
    retried = client.post(PURCHASES, json=retry_of(body))

    assert failed.status_code == 500
    assert failed.json() == {"message": "internal error: the request could not be recorded"}
    assert (retried.status_code, retried.json()) == (201, {"purchaseId": purchase_id_for("trip-disk")})
    assert len(outbox.messages) == 1


# --- concurrency, on the service directly --------------------------------------------------------


class GatedOutbox(MemoryOutbox):
    """Holds every commit until `release` is set, so that concurrent requests really overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.commits = 0

    async def commit(
        self, route: str, key: str, response: StoredResponse, records: Sequence[OutboxRecord]
    ) -> StoredResponse:
        self.commits += 1
        await self.release.wait()
        return await super().commit(route, key, response, records)


async def _overlapping(outbox: GatedOutbox, calls: list[Any]) -> list[Answer | BaseException]:
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(5):
        await asyncio.sleep(0)
    assert outbox.commits == 1  # everyone else is waiting on the first attempt
    outbox.release.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def test_concurrent_duplicates_execute_once(source: MemorySource) -> None:
    outbox = GatedOutbox()
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    body = purchase_body(trip_id="trip-race")
    requests = [models.CreatePurchasesRequest.model_validate(retry_of(body)) for _ in range(20)]

    async def scenario() -> list[Answer | BaseException]:
        return await _overlapping(outbox, [service.create_purchase(r) for r in requests])

    answers = asyncio.run(scenario())

    assert answers == [Answer(201, b'{"purchaseId":"' + purchase_id_for("trip-race").encode() + b'"}')] * 20
    assert outbox.commits == 1
    assert len(outbox.messages) == 1


def test_a_concurrent_duplicate_with_another_body_is_refused(source: MemorySource) -> None:
    outbox = GatedOutbox()
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    key = "99999999-8888-7777-6666-555555555555"
    good = models.VerifyIdentityKeysRequest.model_validate(identity_keys_body(b64("key-1"), event_id=key))
    other = models.VerifyIdentityKeysRequest.model_validate(identity_keys_body(b64("key-assoc"), event_id=key))

    async def scenario() -> list[Answer | BaseException]:
        return await _overlapping(outbox, [service.verify_identity_keys(good), service.verify_identity_keys(other)])

    first, second = asyncio.run(scenario())

    assert first == Answer(200, b'{"visitorDetails":{"id":"shopper-1","type":"SHOPPER"}}')
    assert isinstance(second, Answer)
    assert second.status == 400
    assert b"already used with a different request body" in second.body
    assert len(outbox.messages) == 1


def test_concurrent_duplicates_of_a_failed_first_attempt_all_fail(source: MemorySource) -> None:
    outbox = GatedOutbox()
    outbox.fail = OutboxUnavailableError("the outbox could not write: disk I/O error")
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    body = scan_body(b64("key-1"))
    requests = [models.ResolveScanRequest.model_validate(retry_of(body)) for _ in range(3)]

    async def scenario() -> list[Answer | BaseException]:
        return await _overlapping(outbox, [service.resolve_scan(r) for r in requests])

    results = asyncio.run(scenario())

    assert [type(r) for r in results] == [OutboxUnavailableError] * 3
    assert "first attempt with this key failed" in str(results[1])
    assert outbox.messages == []
    assert outbox.responses == {}


def test_a_cancelled_duplicate_leaves_the_first_attempt_and_the_other_duplicates_answered(
    source: MemorySource,
) -> None:
    outbox = GatedOutbox()
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    body = purchase_body(trip_id="trip-cancel")
    requests = [models.CreatePurchasesRequest.model_validate(retry_of(body)) for _ in range(3)]

    async def scenario() -> list[Answer | BaseException]:
        tasks = [asyncio.ensure_future(service.create_purchase(r)) for r in requests]
        for _ in range(5):
            await asyncio.sleep(0)
        tasks[1].cancel()  # a client gone while it waited for the first attempt
        await asyncio.sleep(0)
        outbox.release.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    first, cancelled, third = asyncio.run(scenario())

    answer = Answer(201, b'{"purchaseId":"' + purchase_id_for("trip-cancel").encode() + b'"}')
    assert (first, third) == (answer, answer)
    assert isinstance(cancelled, asyncio.CancelledError)
    assert outbox.commits == 1
    assert len(outbox.messages) == 1


# --- the SQLite ledger: restart and retention ----------------------------------------------------


def test_the_ledger_survives_a_restart(tmp_path: Path, source: MemorySource) -> None:
    path = tmp_path / "outbox.db"
    body = purchase_body(trip_id="trip-restart")

    before = SqliteOutbox(path)
    try:
        first = TestClient(
            create_app(ConnectorService(CachedDirectory(source), before, lambda: NOW), ConnectorSettings())
        ).post(PURCHASES, json=body)
    finally:
        before.close()
    after = SqliteOutbox(path)
    try:
        retry = TestClient(
            create_app(ConnectorService(CachedDirectory(source), after, lambda: NOW), ConnectorSettings())
        ).post(PURCHASES, json=retry_of(body))
        pending = after.pending(100)
    finally:
        after.close()

    assert (first.status_code, first.json()) == (201, {"purchaseId": purchase_id_for("trip-restart")})
    assert (retry.status_code, retry.content) == (first.status_code, first.content)
    assert [decode_envelope(m.body).type for m in pending] == ["purchase"]


def test_prune_forgets_keys_after_the_retention_and_keeps_unsent_messages(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    retention = timedelta(hours=48)
    answer = StoredResponse("fp", 201, b'{"purchaseId":"p"}')

    async def record(key: str) -> None:
        await outbox.commit("purchases", key, answer, [OutboxRecord(f"m-{key}", b"{}")])

    try:
        asyncio.run(record("sent"))
        asyncio.run(record("unsent"))
        outbox.mark_sent([m.seq for m in outbox.pending(10) if m.message_id == "m-sent"])
        now = datetime.now(UTC)

        early = outbox.prune(now + timedelta(hours=47), retention)
        kept = outbox.lookup("purchases", "sent")
        late = outbox.prune(now + timedelta(hours=49), retention)

        assert early == (0, 0)
        assert kept == answer
        assert late == (2, 1)
        assert outbox.lookup("purchases", "sent") is None
        assert outbox.lookup("purchases", "unsent") is None
        assert [m.message_id for m in outbox.pending(10)] == ["m-unsent"]
    finally:
        outbox.close()


def test_after_the_retention_the_same_trip_is_a_new_request(tmp_path: Path, source: MemorySource) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    client = TestClient(create_app(ConnectorService(CachedDirectory(source), outbox, lambda: NOW), ConnectorSettings()))
    body = purchase_body(trip_id="trip-old")
    try:
        client.post(PURCHASES, json=body)
        outbox.prune(datetime.now(UTC) + timedelta(hours=49), timedelta(hours=48))
        changed = _other_purchase(body)

        response = client.post(PURCHASES, json=changed)

        assert response.status_code == 201
        assert len(outbox.pending(10)) == 2
    finally:
        outbox.close()
