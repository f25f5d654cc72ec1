"""SPEC §2 general rules: every validation failure is a 400 `{"message"}` naming the field and the problem,
unknown fields are ignored, and nothing invalid reaches the outbox."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.fakes import MemoryOutbox
from tests.conftest import b64, identity_keys_body, purchase_body, scan_body, shopper_body

SCAN = "/v1/identity/scan"
KEYS = "/v1/identity/identity-keys"
SHOPPER = "/v1/identity/shopper"
PURCHASES = "/v1/order/purchases"

BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    SCAN: scan_body,
    KEYS: identity_keys_body,
    SHOPPER: shopper_body,
    PURCHASES: purchase_body,
}
SUCCESS = {SCAN: 200, KEYS: 200, SHOPPER: 201, PURCHASES: 201}

DELETE = object()
TIME_FORMAT = "must be an ISO-8601 date-time such as 2024-04-25T13:03:14Z"


def mutate(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of `body` with the dotted `path` (list indexes as digits) set to `value`, or removed."""
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: int | str = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return out


INVALID: list[tuple[str, str, object, str]] = [
    # ResolveScan (§2.1)
    (SCAN, "requestId", DELETE, "requestId: is required"),
    (SCAN, "requestId", 42, "requestId: must be a string"),
    (SCAN, "requestId", "not-a-uuid", "requestId: must be a UUID"),
    (SCAN, "requestId", "123e4567-e89b-12d3-a456-42661417400", "requestId: must be a UUID"),
    (SCAN, "storeId", DELETE, "storeId: is required"),
    (SCAN, "storeId", "", "storeId: must not be empty"),
    (SCAN, "storeId", "s" * 256, "storeId: is longer than 255 characters"),
    (SCAN, "scanEvent", DELETE, "scanEvent: is required"),
    (SCAN, "scanEvent", "ENTRY", "scanEvent: must be an object"),
    (SCAN, "scanEvent.id", "", "scanEvent.id: must not be empty"),
    (SCAN, "scanEvent.id", "i" * 1001, "scanEvent.id: is longer than 1000 characters"),
    (SCAN, "scanEvent.timestamp", DELETE, "scanEvent.timestamp: is required"),
    (SCAN, "scanEvent.timestamp", "yesterday", f"scanEvent.timestamp: {TIME_FORMAT}"),
    (SCAN, "scanEvent.timestamp", "2024-13-25T13:03:14Z", f"scanEvent.timestamp: {TIME_FORMAT}"),
    (SCAN, "scanEvent.timestamp", "2024-04-25", f"scanEvent.timestamp: {TIME_FORMAT}"),
    (SCAN, "scanEvent.timestamp", 1714050194, "scanEvent.timestamp: must be an ISO-8601 date-time string"),
    (SCAN, "scanEvent.location", "LOBBY", "scanEvent.location: must be one of 'ENTRY', 'EXIT' or 'MANUAL_IN_STORE'"),
    (SCAN, "scanEvent.value", DELETE, "scanEvent.value: is required"),
    (SCAN, "scanEvent.value", None, "scanEvent.value: must be a string"),
    (SCAN, "scanEvent.value", "v" * 1001, "scanEvent.value: is longer than 1000 characters"),
    (SCAN, "scanEvent.channel", "NFC", "scanEvent.channel: must be one of 'OPTICAL', 'RADIO' or 'CONTACT'"),
    # VerifyIdentityKeys (§2.2)
    (KEYS, "identityKey", DELETE, "identityKey: is required"),
    (KEYS, "identityKey", "", "identityKey: must not be empty"),
    (KEYS, "identityKey", "not base64!", "identityKey: must be valid Base64"),
    (KEYS, "identityKey", "QUJD" * 250 + "QQ==", "identityKey: is longer than 1000 characters"),
    (KEYS, "identityKey", ["a2V5LTE="], "identityKey: must be a string"),
    (KEYS, "storeId", "s" * 256, "storeId: is longer than 255 characters"),
    (KEYS, "authEvent", DELETE, "authEvent: is required"),
    (KEYS, "authEvent.id", DELETE, "authEvent.id: is required"),
    (KEYS, "authEvent.id", "event-1", "authEvent.id: must be a UUID"),
    (KEYS, "authEvent.timestamp", "25/04/2024 13:03", f"authEvent.timestamp: {TIME_FORMAT}"),
    (KEYS, "authEvent.location", "entry", "authEvent.location: must be one of 'ENTRY', 'EXIT' or 'MANUAL_IN_STORE'"),
    (KEYS, "keyChannel", "BLUETOOTH", "keyChannel: must be one of 'OPTICAL', 'RADIO' or 'CONTACT'"),
    # GetShopper (§2.3)
    (SHOPPER, "requestId", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "requestId: must be a UUID"),
    (SHOPPER, "shopperKey", DELETE, "shopperKey: is required"),
    (SHOPPER, "shopperKey", "k" * 1001, "shopperKey: is longer than 1000 characters"),
    (SHOPPER, "shopperKey", "***", "shopperKey: must be valid Base64 for a QR_CODE key"),
    (SHOPPER, "shopperKeyType", "EMAIL", "shopperKeyType: must be one of 'QR_CODE' or 'PHONE_NUMBER'"),
    (SHOPPER, "storeId", "", "storeId: must not be empty"),
    (SHOPPER, "timestamp", DELETE, "timestamp: is required"),
    (SHOPPER, "timestamp", "2024-02-16T25:01:25Z", f"timestamp: {TIME_FORMAT}"),
    # CreatePurchases (§2.4)
    (PURCHASES, "requestId", DELETE, "requestId: is required"),
    (PURCHASES, "idempotentShoppingTripId", DELETE, "idempotentShoppingTripId: is required"),
    (PURCHASES, "idempotentShoppingTripId", "", "idempotentShoppingTripId: must not be empty"),
    (PURCHASES, "idempotentShoppingTripId", "t" * 256, "idempotentShoppingTripId: is longer than 255 characters"),
    (PURCHASES, "idempotentShoppingTripId", 7, "idempotentShoppingTripId: must be a string"),
    (PURCHASES, "storeId", "s" * 256, "storeId: is longer than 255 characters"),
    (PURCHASES, "shoppingTrip", DELETE, "shoppingTrip: is required"),
    (PURCHASES, "shoppingTrip.startTime", DELETE, "shoppingTrip.startTime: is required"),
    (PURCHASES, "shoppingTrip.endTime", "soon", f"shoppingTrip.endTime: {TIME_FORMAT}"),
    (PURCHASES, "shoppingTrip.endTime", "2026-11-20T11:29:59Z", "shoppingTrip: endTime must not be before startTime"),
    (PURCHASES, "shoppingTrip.authEvents", DELETE, "shoppingTrip.authEvents: is required"),
    (PURCHASES, "shoppingTrip.authEvents", {}, "shoppingTrip.authEvents: must be an array"),
    (PURCHASES, "shoppingTrip.authEvents.0.id", "abc", "shoppingTrip.authEvents[0].id: must be a UUID"),
    (PURCHASES, "shoppingTrip.authEvents.0.timestamp", DELETE, "shoppingTrip.authEvents[0].timestamp: is required"),
    (
        PURCHASES,
        "shoppingTrip.authEvents.0.location",
        "GATE",
        "shoppingTrip.authEvents[0].location: must be one of 'ENTRY', 'EXIT' or 'MANUAL_IN_STORE'",
    ),
    (PURCHASES, "shoppingTrip.authEvents.0.payloadType", DELETE, "shoppingTrip.authEvents[0].payloadType: is required"),
    (
        PURCHASES,
        "shoppingTrip.authEvents.0.payloadType",
        "CASH",
        "shoppingTrip.authEvents[0].payloadType: must be one of 'FINANCIAL' or 'SCAN_CODE'",
    ),
    (
        PURCHASES,
        "shoppingTrip.authEvents.0.scanResult.id",
        "x" * 256,
        "shoppingTrip.authEvents[0].scanResult.id: is longer than 255 characters",
    ),
    (
        PURCHASES,
        "shoppingTrip.authEvents.0.scanResult.type",
        "VIP",
        "shoppingTrip.authEvents[0].scanResult.type: must be one of 'SHOPPER', 'ASSOCIATE', 'CASH' or 'LOYALTY'",
    ),
    (PURCHASES, "cartItems", DELETE, "cartItems: is required"),
    (PURCHASES, "cartItems", None, "cartItems: must be an array"),
    (PURCHASES, "cartItems.0.id", DELETE, "cartItems[0].id: is required"),
    (PURCHASES, "cartItems.0.id", "x" * 256, "cartItems[0].id: is longer than 255 characters"),
    (PURCHASES, "cartItems.0.type", "PLU", "cartItems[0].type: must be one of 'SKU' or 'SCANCODE'"),
    (PURCHASES, "cartItems.0.quantity", DELETE, "cartItems[0].quantity: is required"),
    (PURCHASES, "cartItems.0.quantity.value", 1.0, "cartItems[0].quantity.value: must be a string"),
    (
        PURCHASES,
        "cartItems.0.quantity.value",
        "12345678901",
        "cartItems[0].quantity.value: is longer than 10 characters",
    ),
    (
        PURCHASES,
        "cartItems.0.quantity.value",
        "-1",
        'cartItems[0].quantity.value: must be a decimal number written as a string, such as "1.0"',
    ),
    (
        PURCHASES,
        "cartItems.0.quantity.value",
        "1e3",
        'cartItems[0].quantity.value: must be a decimal number written as a string, such as "1.0"',
    ),
    (PURCHASES, "cartItems.0.quantity.unit", 3, "cartItems[0].quantity.unit: must be a string"),
    (PURCHASES, "cartItems.0.lineItemId", "l" * 256, "cartItems[0].lineItemId: is longer than 255 characters"),
    (PURCHASES, "shopperIdentity", {"id": "x" * 256}, "shopperIdentity.id: is longer than 255 characters"),
    (PURCHASES, "shopperDeviceId", "d" * 256, "shopperDeviceId: is longer than 255 characters"),
]


@pytest.mark.parametrize(
    ("path", "field", "value", "message"),
    INVALID,
    ids=[f"{p.rsplit('/', 1)[1]}-{f}-{i}" for i, (p, f, _, _) in enumerate(INVALID)],
)
def test_an_invalid_field_is_a_400_naming_the_field_and_the_problem(
    client: TestClient, outbox: MemoryOutbox, path: str, field: str, value: object, message: str
) -> None:
    response = client.post(path, json=mutate(BODIES[path](), field, value))

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": message}
    assert outbox.messages == []


def test_a_phone_number_key_without_digits_is_a_400(client: TestClient) -> None:
    response = client.post(SHOPPER, json=shopper_body("call me", "PHONE_NUMBER"))

    assert response.status_code == 400
    assert response.json() == {"message": "shopperKey must be an E.123 phone number"}


def test_a_duplicate_line_item_id_is_a_400_naming_it(client: TestClient, outbox: MemoryOutbox) -> None:
    body = purchase_body()
    body["cartItems"] = [
        {"id": "sku-apple", "type": "SKU", "quantity": {"value": "1", "unit": "each"}, "lineItemId": "line-7"},
        {"id": "sku-cheese", "type": "SKU", "quantity": {"value": "2", "unit": "each"}, "lineItemId": "line-7"},
    ]

    response = client.post(PURCHASES, json=body)

    assert response.status_code == 400
    assert response.json() == {"message": "cartItems: duplicate lineItemId line-7"}
    assert outbox.messages == []


@pytest.mark.parametrize("path", list(BODIES))
def test_an_empty_body_is_a_400(client: TestClient, outbox: MemoryOutbox, path: str) -> None:
    response = client.post(path, content=b"", headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json() == {"message": "request body is empty: a JSON object is required"}
    assert outbox.messages == []


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("raw", [b"{", b'{"requestId": }', b"{'storeId': 'store-1'}", b"\xff\xfe"])
def test_malformed_json_is_a_400_that_says_so(client: TestClient, outbox: MemoryOutbox, path: str, raw: bytes) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["message"].startswith("malformed JSON: ")
    assert outbox.messages == []


@pytest.mark.parametrize("raw", [b"[]", b'"scan"', b"42", b"true"])
def test_a_body_that_is_not_an_object_is_a_400(client: TestClient, raw: bytes) -> None:
    response = client.post(SCAN, content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json() == {"message": "request body must be a JSON object"}


def test_only_the_first_problem_is_described_when_several_fields_are_wrong(client: TestClient) -> None:
    body = mutate(mutate(scan_body(), "requestId", "x"), "scanEvent.channel", "NFC")

    response = client.post(SCAN, json=body)

    assert response.status_code == 400
    assert response.json() == {"message": "requestId: must be a UUID"}


def _with_unknown_fields(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["futureAttribute"] = {"nested": [1, 2, 3]}
    for nested in ("scanEvent", "authEvent", "shoppingTrip"):
        if nested in out:
            out[nested]["addedLater"] = "ignored"
    for item in out.get("cartItems", []):
        item["brandNew"] = True
        item["quantity"]["precision"] = 3
    return out


@pytest.mark.parametrize("path", list(BODIES))
def test_unknown_fields_are_accepted_and_ignored(client: TestClient, outbox: MemoryOutbox, path: str) -> None:
    body = BODIES[path]()

    response = client.post(path, json=_with_unknown_fields(body))

    assert response.status_code == SUCCESS[path]
    assert len(outbox.messages) == 1
    assert b"futureAttribute" not in outbox.messages[0].body
    assert b"addedLater" not in outbox.messages[0].body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (KEYS, identity_keys_body(b64("key-1") + "  ")),
        (SHOPPER, shopper_body("+1 (617) 555-1234", "PHONE_NUMBER")),
        (SCAN, mutate(scan_body(), "scanEvent.timestamp", "2026-11-20T06:30:00-05:00")),
        (SCAN, mutate(scan_body(), "scanEvent.timestamp", "2026-11-20T11:30:00.123456Z")),
        (SCAN, mutate(scan_body(), "requestId", "123E4567-E89B-12D3-A456-426614174000")),
        (SCAN, mutate(scan_body(), "scanEvent.id", b64("key-1") + " ")),
        (PURCHASES, mutate(purchase_body(), "cartItems", [])),
        (PURCHASES, mutate(purchase_body(), "shoppingTrip.endTime", "2026-11-20T11:30:00Z")),
        (PURCHASES, mutate(purchase_body(), "cartItems.0.lineItemId", DELETE)),
        (PURCHASES, mutate(purchase_body(), "shoppingTrip.authEvents", [])),
    ],
    ids=[
        "base64-with-whitespace",
        "phone-with-punctuation",
        "offset-time",
        "fractional-seconds",
        "upper-case-uuid",
        "faq-base64-scan-id",
        "empty-cart",
        "zero-length-trip",
        "no-line-item-id",
        "no-auth-events",
    ],
)
def test_valid_edge_cases_are_not_rejected(client: TestClient, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)

    assert response.status_code == SUCCESS[path], response.text
