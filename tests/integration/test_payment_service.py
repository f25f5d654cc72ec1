"""The SigV4 Payment Service client and the SQLite request outbox against the local Payment Service simulator, over
real HTTP on loopback: signatures, retries of 429/503, terminal 400s, idempotent refunds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from reconcile.adapters.amazon_payments import AmazonPaymentService
from reconcile.adapters.sqlite_requests import SqliteRequestOutbox
from reconcile.errors import PaymentRejectedError, PaymentUnavailableError
from reconcile.payments import (
    PaymentReply,
    PaymentRequest,
    Refund,
    RefundableTrip,
    check_refund,
    encode_json,
    payment_status_request,
    refund_request,
)
from reconcile.rules import Debt
from simulator.payment_service import (
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    PaymentServiceServer,
    check_signature,
    running_payment_service,
)

NOW = datetime.now(UTC)
TRIP = RefundableTrip("trip-1", "S1", "USD", NOW.date(), NOW - timedelta(hours=1), Decimal("10.00"), Decimal(0))


@pytest.fixture
def amazon() -> Iterator[PaymentServiceServer]:
    with running_payment_service() as server:
        yield server


def _refund(amount: str = "4.00") -> Refund:
    return check_refund(TRIP, "trip-1", Decimal(amount), "DAMAGED", NOW, timedelta(days=7))


def _call(url: str, request: PaymentRequest, secret: str = LOCAL_SECRET_KEY, attempts: int = 4) -> PaymentReply:
    async def go() -> PaymentReply:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            service = AmazonPaymentService(
                client, url, "us-east-1", lambda: ReadOnlyCredentials(LOCAL_ACCESS_KEY, secret, None),
                attempts=attempts, base_backoff_seconds=0.01, max_backoff_seconds=0.05,
            )  # fmt: skip
            return await service.call(request)

    return asyncio.run(go())


def test_a_signed_refund_is_accepted_and_recorded(amazon: PaymentServiceServer) -> None:
    reply = _call(amazon.url, refund_request(_refund()))
    assert reply.status_code == 200
    assert reply.body == {"refundRequestId": _refund().refund_id, "status": "APPROVED"}
    [call] = amazon.state.calls_to("/v1/refund")
    assert call.status == 200
    assert call.body["amount"] == {"amount": Decimal("4.00"), "code": "USD"}


def test_throttling_and_unavailability_are_retried_until_an_answer(amazon: PaymentServiceServer) -> None:
    amazon.state.fail_next(1, 429)
    amazon.state.fail_next(2, 503)
    assert _call(amazon.url, refund_request(_refund())).status_code == 200
    assert [c.status for c in amazon.state.calls_to("/v1/refund")] == [429, 503, 503, 200]
    assert amazon.state.refunded("trip-1") == Decimal("4.00")


def test_an_outage_longer_than_the_retries_is_unavailable_not_refused(amazon: PaymentServiceServer) -> None:
    amazon.state.fail_next(3, 503)
    with pytest.raises(PaymentUnavailableError, match="no answer after 3 tries; last: HTTP 503"):
        _call(amazon.url, refund_request(_refund()), attempts=3)
    assert amazon.state.refunds == {}


def test_a_wrong_signature_is_403_and_nothing_happens(amazon: PaymentServiceServer) -> None:
    with pytest.raises(PaymentUnavailableError, match=r"HTTP 403.*signature"):
        _call(amazon.url, refund_request(_refund()), secret="not-the-secret")
    assert amazon.state.bad_signatures == 1
    assert amazon.state.refunds == {}


def test_the_simulator_recomputes_botocores_signature_and_refuses_a_tampered_body() -> None:
    body = b'{"a":1}'
    request = AWSRequest(method="POST", url="http://127.0.0.1:9/v1/refund", data=body,
                         headers={"Content-Type": "application/json"})  # fmt: skip
    SigV4Auth(Credentials(LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY), "execute-api", "us-east-1").add_auth(request)
    headers = {k.lower(): str(v) for k, v in request.headers.items()} | {"host": "127.0.0.1:9"}
    now = datetime.now(UTC)
    assert check_signature("POST", "/v1/refund", "", headers, body, now) is None
    assert "does not match" in str(check_signature("POST", "/v1/refund", "", headers, b'{"a":2}', now))
    assert "too far" in str(check_signature("POST", "/v1/refund", "", headers, body, now + timedelta(minutes=16)))
    assert "signed for" in str(check_signature("POST", "/v1/refund", "", headers, body, now, region="eu-west-1"))


def test_an_invalid_body_is_a_terminal_400_with_amazons_message_and_is_not_retried(
    amazon: PaymentServiceServer,
) -> None:
    bad = PaymentRequest("r-1", "refund", "S1", "trip-1", encode_json({"refundRequestId": "r-1", "storeId": "S1"}))
    with pytest.raises(PaymentRejectedError, match="HTTP 400: shoppingTripId: required") as caught:
        _call(amazon.url, bad)
    assert caught.value.status_code == 400
    assert len(amazon.state.calls_to("/v1/refund")) == 1


def test_a_refund_sent_twice_refunds_once_and_a_reused_id_with_another_body_is_refused(
    amazon: PaymentServiceServer,
) -> None:
    request = refund_request(_refund())
    first, second = _call(amazon.url, request), _call(amazon.url, request)
    assert first.body == second.body
    assert len(amazon.state.refunds) == 1
    assert amazon.state.refunded("trip-1") == Decimal("4.00")
    reused = PaymentRequest(request.request_id, "refund", "S1", "trip-1", request.body.replace("4.00", "5.00"))
    with pytest.raises(PaymentRejectedError, match="already used for a different refund"):
        _call(amazon.url, reused)


def test_a_refund_beyond_what_amazon_captured_is_declined_as_data(amazon: PaymentServiceServer) -> None:
    amazon.state.captured["trip-1"] = Decimal("5.00")
    assert _call(amazon.url, refund_request(_refund("4.00"))).body["status"] == "APPROVED"
    other = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW, timedelta(days=7), key="second")
    assert _call(amazon.url, refund_request(other)).body["status"] == "DECLINED"


def test_a_payment_status_report_is_validated_and_kept_per_store_and_trip(amazon: PaymentServiceServer) -> None:
    debt = Debt("d-1", "trip-1", None, "S1", Decimal("7.50"), "USD", "declined capture", "OPEN", NOW)
    assert _call(amazon.url, payment_status_request(debt, Decimal("7.50"), NOW)).status_code == 200
    report = amazon.state.payment_status[("S1", "trip-1")]
    assert report["settledAmount"] == {"amount": Decimal("7.50"), "code": "USD"}
    bad = PaymentRequest("p", "payment_status", "S1", "trip-1", encode_json({
        "storeId": "S1", "shoppingTripId": "trip-1", "totalAmount": {"amount": Decimal("1.00"), "code": "USD"},
        "settledAmount": {"amount": Decimal("2.00"), "code": "USD"}, "paymentStatusTime": "2026-11-25T12:00:00Z",
    }))  # fmt: skip
    with pytest.raises(PaymentRejectedError, match="settledAmount: more than totalAmount"):
        _call(amazon.url, bad)


def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(PaymentUnavailableError, match="ConnectError"):
        _call("http://127.0.0.1:9", refund_request(_refund()), attempts=2)


def test_the_outbox_survives_a_reopen_and_two_senders_never_claim_the_same_request(tmp_path: Path) -> None:
    path = tmp_path / "payments.db"
    first = SqliteRequestOutbox(path)
    request = refund_request(_refund())
    assert first.enqueue(request, NOW)
    assert not first.enqueue(request, NOW)
    first.close()
    a, b = SqliteRequestOutbox(path), SqliteRequestOutbox(path)
    claims: list[int] = []

    def claim(outbox: SqliteRequestOutbox) -> None:
        claims.append(len(outbox.claim(NOW, timedelta(minutes=1))))

    threads = [threading.Thread(target=claim, args=(o,)) for o in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == [0, 0, 0, 1]
    assert b.claim(NOW + timedelta(minutes=2), timedelta(minutes=1)) != []  # the lease ended
    a.delivered(request.request_id, '{"status":"APPROVED"}', NOW)
    kept = b.get(request.request_id)
    assert kept is not None
    assert (kept.status, kept.attempts, kept.response) == ("DELIVERED", 2, '{"status":"APPROVED"}')
    assert [q.request for q in b.requests("DELIVERED")] == [request]
    assert b.claim(NOW + timedelta(days=1), timedelta(minutes=1)) == []
    a.close()
    b.close()
