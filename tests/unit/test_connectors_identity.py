"""SPEC §2.1-2.3 and §2.6: the three identity endpoints' decisions, exact answers, and auth-event messages."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.ports import Shopper
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.messages import AuthEvent, MessageType, message_id_for
from tests.conftest import NOW, b64, envelopes, identity_keys_body, scan_body, shopper_body

SCAN = "/v1/identity/scan"
KEYS = "/v1/identity/identity-keys"
SHOPPER = "/v1/identity/shopper"


def client_over(source: MemorySource, directory: CachedDirectory | None = None) -> TestClient:
    """A client whose directory is built now, after the test changed the source."""
    service = ConnectorService(directory or CachedDirectory(source), MemoryOutbox(), lambda: NOW)
    return TestClient(create_app(service, ConnectorSettings()))


def only_auth_event(outbox: MemoryOutbox) -> AuthEvent:
    [envelope] = envelopes(outbox)
    assert envelope.type == MessageType.AUTH_EVENT
    payload = envelope.typed_payload()
    assert isinstance(payload, AuthEvent)
    return payload


# --- ResolveScan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("key-1", {"id": "shopper-1", "type": "SHOPPER", "action": "ACCEPT"}),
        ("key-assoc", {"id": "assoc-1", "type": "ASSOCIATE", "action": "ACCEPT"}),
        ("key-blocked", {"id": "blocked-1", "type": "SHOPPER", "action": "REJECT"}),
        ("key-debtor", {"id": "debtor-1", "type": "SHOPPER", "action": "REJECT"}),
        ("no-such-key", {"id": "", "type": "SHOPPER", "action": "REJECT"}),
    ],
    ids=["good-standing", "associate", "blocked", "open-bad-debt", "unknown-key"],
)
def test_resolve_scan_accepts_only_known_shoppers_in_good_standing(
    client: TestClient, key: str, expected: dict[str, str]
) -> None:
    response = client.post(SCAN, json=scan_body(b64(key)))

    assert response.status_code == 200
    assert response.json() == expected


def test_a_cash_shopper_scans_in_as_type_cash(source: MemorySource) -> None:
    source.shoppers["cash-1"] = Shopper("cash-1", "key-cash", "CASH_SHOPPER", None, "active")

    response = client_over(source).post(SCAN, json=scan_body(b64("key-cash")))

    assert response.status_code == 200
    assert response.json() == {"id": "cash-1", "type": "CASH", "action": "ACCEPT"}


def test_the_vendor_faq_scan_resolves_from_the_base64_id_with_a_stray_space(client: TestClient) -> None:
    body = scan_body("string", event_id="MTExMS0yMjIyLTMzMzMtNDQ0NC01NTU1LTY2NjY= ")

    response = client.post(SCAN, json=body)

    assert response.status_code == 200
    assert response.json() == {"id": "1111-2222-3333-4444-5555-6666", "type": "SHOPPER", "action": "ACCEPT"}


def test_a_radio_scan_value_is_used_as_is_without_base64(client: TestClient) -> None:
    accepted = client.post(SCAN, json=scan_body("key-1", channel="RADIO"))
    not_decoded = client.post(SCAN, json=scan_body(b64("key-1"), channel="RADIO"))

    assert accepted.json() == {"id": "shopper-1", "type": "SHOPPER", "action": "ACCEPT"}
    assert not_decoded.json() == {"id": "", "type": "SHOPPER", "action": "REJECT"}


def test_an_optical_value_that_is_not_base64_is_rejected_not_an_error(client: TestClient) -> None:
    response = client.post(SCAN, json=scan_body("key-1"))

    assert response.status_code == 200
    assert response.json() == {"id": "", "type": "SHOPPER", "action": "REJECT"}


def test_a_scan_records_an_auth_event_without_the_raw_key(client: TestClient, outbox: MemoryOutbox) -> None:
    body = scan_body(b64("key-debtor"))
    event_id = body["scanEvent"]["id"]

    client.post(SCAN, json=body)

    [envelope] = envelopes(outbox)
    event = only_auth_event(outbox)
    key = f"{event_id}|2026-11-20T11:30:00+00:00"
    assert envelope.message_id == message_id_for(MessageType.AUTH_EVENT, f"scan:{key}")
    assert envelope.schema_version == 1
    assert envelope.occurred_at == NOW
    assert event.model_dump() == {
        "event_id": key,
        "request_id": body["requestId"],
        "endpoint": "scan",
        "store_id": "store-1",
        "occurred_at": event.occurred_at,
        "received_at": NOW,
        "location": "ENTRY",
        "channel": "OPTICAL",
        "outcome": "REJECT",
        "http_status": 200,
        "visitor_type": "SHOPPER",
        "shopper_id": "debtor-1",
    }
    assert event.occurred_at.isoformat() == "2026-11-20T11:30:00+00:00"
    assert b"key-debtor" not in outbox.messages[0].body
    assert b64("key-debtor").encode() not in outbox.messages[0].body


# --- VerifyIdentityKeys --------------------------------------------------------------------------


def test_verify_identity_keys_admits_a_shopper_in_good_standing(client: TestClient, outbox: MemoryOutbox) -> None:
    body = identity_keys_body(b64("key-1"))

    response = client.post(KEYS, json=body)

    assert response.status_code == 200
    assert response.json() == {"visitorDetails": {"id": "shopper-1", "type": "SHOPPER"}}
    event = only_auth_event(outbox)
    assert (event.endpoint, event.event_id, event.outcome, event.http_status) == (
        "identity_keys",
        body["authEvent"]["id"],
        "ACCEPT",
        200,
    )
    assert (event.shopper_id, event.visitor_type, event.channel) == ("shopper-1", "SHOPPER", "OPTICAL")


def test_verify_identity_keys_reports_an_associate(client: TestClient) -> None:
    response = client.post(KEYS, json=identity_keys_body(b64("key-assoc")))

    assert response.status_code == 200
    assert response.json() == {"visitorDetails": {"id": "assoc-1", "type": "ASSOCIATE"}}


@pytest.mark.parametrize(
    ("key", "message", "shopper_id"),
    [
        ("no-such-key", "identity key not recognised", None),
        ("key-blocked", "shopper is blocked", "blocked-1"),
        ("key-debtor", "shopper has an outstanding balance", "debtor-1"),
    ],
    ids=["unknown-key", "blocked", "open-bad-debt"],
)
def test_verify_identity_keys_refuses_with_401(
    client: TestClient, outbox: MemoryOutbox, key: str, message: str, shopper_id: str | None
) -> None:
    response = client.post(KEYS, json=identity_keys_body(b64(key)))

    assert response.status_code == 401
    assert response.json() == {"message": message}
    event = only_auth_event(outbox)
    assert (event.outcome, event.http_status, event.shopper_id) == ("REJECT", 401, shopper_id)


def test_a_settled_debt_lets_the_shopper_in_after_the_directory_refreshes(source: MemorySource) -> None:
    directory = CachedDirectory(source)
    client = client_over(source, directory)
    assert client.post(KEYS, json=identity_keys_body(b64("key-debtor"))).status_code == 401

    source.indebted.discard("debtor-1")
    source.changed()
    assert directory.refresh() is True
    response = client.post(KEYS, json=identity_keys_body(b64("key-debtor")))

    assert response.status_code == 200
    assert response.json() == {"visitorDetails": {"id": "debtor-1", "type": "SHOPPER"}}


def test_a_cash_shopper_passes_the_gate_as_cash_shopper(source: MemorySource) -> None:
    source.shoppers["cash-1"] = Shopper("cash-1", "key-cash", "CASH_SHOPPER", None, "active")

    response = client_over(source).post(KEYS, json=identity_keys_body(b64("key-cash")))

    assert response.status_code == 200
    assert response.json() == {"visitorDetails": {"id": "cash-1", "type": "CASH_SHOPPER"}}


# --- GetShopper ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "key_type", "shopper_id"),
    [
        (b64("key-1"), None, "shopper-1"),
        (b64("key-1"), "QR_CODE", "shopper-1"),
        (b64("key-blocked"), "QR_CODE", "blocked-1"),
        ("+1 617 555 1234", "PHONE_NUMBER", "shopper-1"),
        ("+1-617-555-1234", "PHONE_NUMBER", "shopper-1"),
        ("+1 (617) 555.1234", "PHONE_NUMBER", "shopper-1"),
        ("16175551234", "PHONE_NUMBER", "shopper-1"),
    ],
    ids=["qr-default", "qr", "blocked-still-found", "e123", "dashes", "punctuation", "digits-only"],
)
def test_get_shopper_finds_a_shopper_by_qr_code_or_by_phone_digits(
    client: TestClient, outbox: MemoryOutbox, key: str, key_type: str | None, shopper_id: str
) -> None:
    body = shopper_body(key, key_type)

    response = client.post(SHOPPER, json=body)

    assert response.status_code == 201
    assert response.json() == {"shopperId": shopper_id}
    event = only_auth_event(outbox)
    assert (event.endpoint, event.outcome, event.http_status, event.shopper_id) == (
        "shopper",
        "ACCEPT",
        201,
        shopper_id,
    )
    assert event.channel == (key_type or "QR_CODE")
    assert event.request_id == body["requestId"]


@pytest.mark.parametrize(
    ("key", "key_type"),
    [(b64("no-such-key"), "QR_CODE"), ("+44 20 7946 0000", "PHONE_NUMBER"), ("+1 617 555 123", "PHONE_NUMBER")],
    ids=["unknown-qr", "unknown-phone", "one-digit-short"],
)
def test_get_shopper_answers_404_for_no_such_shopper(
    client: TestClient, outbox: MemoryOutbox, key: str, key_type: str
) -> None:
    response = client.post(SHOPPER, json=shopper_body(key, key_type))

    assert response.status_code == 404
    assert response.json() == {"message": "no such shopper"}
    event = only_auth_event(outbox)
    assert (event.outcome, event.http_status, event.shopper_id, event.visitor_type) == ("NOT_FOUND", 404, None, None)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (SCAN, scan_body(b64("key-1"))),
        (KEYS, identity_keys_body(b64("key-1"))),
        (SHOPPER, shopper_body(b64("key-1"))),
        (SCAN, scan_body("string", event_id=b64("key-1") + " ")),
    ],
    ids=["scan", "identity-keys", "shopper", "faq-static-qr-in-scan-id"],
)
def test_identity_messages_never_carry_the_identity_key(
    client: TestClient, outbox: MemoryOutbox, path: str, body: dict[str, Any]
) -> None:
    client.post(path, json=body)

    [message] = outbox.messages
    assert b"key-1" not in message.body
    assert b64("key-1").encode() not in message.body


def test_a_static_qr_scan_id_gets_a_stable_hashed_event_id(client: TestClient, outbox: MemoryOutbox) -> None:
    first = scan_body("string", event_id=b64("key-1"))
    retry = scan_body("string", event_id=b64("key-1"))

    client.post(SCAN, json=first)
    client.post(SCAN, json=retry)

    event = only_auth_event(outbox)
    assert event.event_id.startswith("sha256:")
    assert len(event.event_id) == len("sha256:") + 64
    assert (event.outcome, event.shopper_id) == ("ACCEPT", "shopper-1")
