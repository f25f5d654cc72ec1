"""A local Amazon Payment Service for tests and the demo: a real HTTP server (FastAPI under uvicorn, 127.0.0.1, a
free port) serving `POST /v1/refund` and `POST /v1/feedback/payment-status` (SPEC §4).

- Every request must carry a valid AWS SigV4 signature made with the local credentials below: the server
  recomputes it from the signed headers, the path and the body (its own implementation of the algorithm, written
  from AWS's description, not botocore's) and answers 403 `{"errorMsg"}` when it differs, names another key, region
  or service, or is dated more than 15 minutes away from now.
- Bodies are validated; a bad one is 400 `{"errorMsg": "<field>: <problem>"}`.
- Refunds are idempotent on `refundRequestId`: the same id with the same body gets the same answer and refunds
  once; the same id with another body is a 400. A refund is `{"refundRequestId", "status": "APPROVED"|"DECLINED"}`:
  DECLINED when the trip's refunds would exceed what `captured` says was captured, or for `decline_trips`.
- `fail_next(n, status)` makes the next n calls answer 429 or 5xx (to exercise retries); every call is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

LOCAL_ACCESS_KEY = "AKIDJWOLOCALPAYMENTS0"
LOCAL_SECRET_KEY = "jwo-local-payment-service-secret-key-0000"  # noqa: S105 (the simulator's own test key)
LOCAL_REGION = "us-east-1"
LOCAL_SERVICE = "execute-api"
CLOCK_SKEW = timedelta(minutes=15)

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class RecordedCall:
    path: str
    body: Any
    status: int
    at: datetime


@dataclass
class PaymentServiceState:
    """What the simulator was told and what it did; safe to read from the test's thread."""

    captured: dict[str, Decimal] = field(default_factory=dict)
    """Captured amount per shopping trip; a refund beyond it (with earlier refunds) is DECLINED. Unknown trips: any."""
    decline_trips: set[str] = field(default_factory=set)
    calls: list[RecordedCall] = field(default_factory=list)
    bad_signatures: int = 0
    refunds: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    """refundRequestId → (body, answer)."""
    payment_status: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(storeId, shoppingTripId) → the latest payment-status report."""
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def calls_to(self, path: str, status: int | None = None) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self.calls if c.path == path and (status is None or c.status == status)]

    def refunded(self, shopping_trip_id: str) -> Decimal:
        with self._lock:
            return sum(
                (Decimal(str(b["amount"]["amount"])) for b, a in self.refunds.values()
                 if b["shoppingTripId"] == shopping_trip_id and a["status"] == "APPROVED"),
                Decimal("0.00"),
            )  # fmt: skip


# --------------------------------------------------------------------------- SigV4, from AWS's description


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _uri_encode(text: str, *, slash: bool) -> str:
    return urllib.parse.quote(text, safe="-_.~" + ("/" if not slash else ""))


def expected_signature(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    signed: list[str],
    body: bytes,
    amz_date: str,
    scope: tuple[str, str, str],
    secret_key: str,
) -> str:
    """The SigV4 signature of a request (canonical request → string to sign → HMAC chain)."""
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{_uri_encode(k, slash=True)}={_uri_encode(v, slash=True)}" for k, v in pairs)
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed)
    canonical_path = _uri_encode(urllib.parse.unquote(path) or "/", slash=False)
    canonical = "\n".join(
        [method, canonical_path, canonical_query, canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()]
    )
    day, region, service = scope
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{day}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), service), "aws4_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def check_signature(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes, now: datetime,
    *, access_key: str = LOCAL_ACCESS_KEY, secret_key: str = LOCAL_SECRET_KEY,
    region: str = LOCAL_REGION, service: str = LOCAL_SERVICE,
) -> str | None:  # fmt: skip
    """None when the request is signed correctly, else what is wrong. `headers` has lower-case names."""
    match = _AUTH.match(headers.get("authorization", ""))
    if match is None:
        return "missing or malformed SigV4 Authorization header"
    if match["key"] != access_key:
        return f"unknown access key {match['key']}"
    if (match["region"], match["service"]) != (region, service):
        return f"signed for {match['region']}/{match['service']}, this is {region}/{service}"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return f"bad X-Amz-Date {amz_date!r}"
    if abs(when - now) > CLOCK_SKEW or match["date"] != amz_date[:8]:
        return f"request time {amz_date} is too far from now"
    want = expected_signature(
        method, path, query, headers, signed, body, amz_date, (match["date"], region, service), secret_key
    )
    if not hmac.compare_digest(want, match["signature"]):
        return "the request signature we calculated does not match the signature you provided"
    return None


# --------------------------------------------------------------------------- validation


class _Invalid(ValueError):
    pass


def _text(body: dict[str, Any], name: str, *, most: int = 255) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= most:
        raise _Invalid(f"{name}: required, a string of 1..{most} characters")
    return value


def _money(body: dict[str, Any], name: str, *, positive: bool) -> tuple[Decimal, str]:
    value = body.get(name)
    if not isinstance(value, dict):
        raise _Invalid(f'{name}: required, {{"amount": number, "code": "USD"}}')
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise _Invalid(f"{name}.amount: required, a number")
    amount = Decimal(amount)
    if amount < 0 or (positive and amount == 0) or amount != amount.quantize(Decimal("0.01")):
        raise _Invalid(f"{name}.amount: must be {'more than' if positive else 'at least'} 0, in cents")
    code = value.get("code")
    if not isinstance(code, str) or not _CURRENCY.match(code):
        raise _Invalid(f"{name}.code: required, an ISO 4217 code")
    return amount, code


def _validate_refund(body: dict[str, Any]) -> None:
    _text(body, "refundRequestId")
    _text(body, "storeId")
    _text(body, "shoppingTripId")
    _money(body, "amount", positive=True)
    _text(body, "refundReasonCode", most=64)


def _validate_payment_status(body: dict[str, Any]) -> None:
    _text(body, "storeId")
    _text(body, "shoppingTripId")
    total, code = _money(body, "totalAmount", positive=False)
    settled, settled_code = _money(body, "settledAmount", positive=True)
    if settled_code != code:
        raise _Invalid("settledAmount.code: differs from totalAmount.code")
    if settled > total:
        raise _Invalid("settledAmount: more than totalAmount")
    stamp = _text(body, "paymentStatusTime", most=64)
    try:
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise _Invalid("paymentStatusTime: not an ISO-8601 date-time") from None


# --------------------------------------------------------------------------- the app


def create_payment_service(state: PaymentServiceState, clock: Any = None) -> FastAPI:
    now = clock or (lambda: datetime.now(UTC))
    app = FastAPI(title="Amazon Payment Service (local simulator)", openapi_url=None, docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"errorMsg": message}, status_code=status)

    async def admit(request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = check_signature(request.method, request.url.path, request.url.query, headers, raw, now())
        if problem is not None:
            with state._lock:
                state.bad_signatures += 1
                state.calls.append(RecordedCall(request.url.path, None, 403, now()))
            return None, error(403, problem)
        try:
            body = json.loads(raw, parse_float=Decimal)
        except ValueError:
            body = None
        with state._lock:
            failure = state._failures.pop(0) if state._failures else None
            if failure is not None:
                state.calls.append(RecordedCall(request.url.path, body, failure, now()))
        if failure is not None:
            return None, error(failure, "Rate exceeded" if failure == 429 else "Service unavailable, try again")
        if not isinstance(body, dict):
            return None, record(request.url.path, body, error(400, "the body must be a JSON object"))
        return body, None

    def record(path: str, body: Any, response: JSONResponse) -> JSONResponse:
        with state._lock:
            state.calls.append(RecordedCall(path, body, response.status_code, now()))
        return response

    @app.post("/v1/refund")
    async def refund(request: Request) -> Response:
        body, refused = await admit(request)
        if refused is not None:
            return refused
        path = request.url.path
        try:
            _validate_refund(body)
        except _Invalid as exc:
            return record(path, body, error(400, str(exc)))
        with state._lock:
            kept = state.refunds.get(body["refundRequestId"])
        if kept is not None:
            if kept[0] != body:
                return record(path, body, error(400, "refundRequestId: already used for a different refund"))
            return record(path, body, JSONResponse(kept[1]))
        trip = body["shoppingTripId"]
        amount = Decimal(body["amount"]["amount"])
        cap = state.captured.get(trip)
        declined = trip in state.decline_trips or (cap is not None and state.refunded(trip) + amount > cap)
        answer = {"refundRequestId": body["refundRequestId"], "status": "DECLINED" if declined else "APPROVED"}
        with state._lock:
            state.refunds.setdefault(body["refundRequestId"], (body, answer))
            answer = state.refunds[body["refundRequestId"]][1]
        return record(path, body, JSONResponse(answer))

    @app.post("/v1/feedback/payment-status")
    async def payment_status(request: Request) -> Response:
        body, refused = await admit(request)
        if refused is not None:
            return refused
        path = request.url.path
        try:
            _validate_payment_status(body)
        except _Invalid as exc:
            return record(path, body, error(400, str(exc)))
        with state._lock:
            state.payment_status[(body["storeId"], body["shoppingTripId"])] = body
        return record(path, body, JSONResponse({}))

    return app


@dataclass
class PaymentServiceServer:
    """The simulator under uvicorn on 127.0.0.1 and a free port, in a thread: `with running_payment_service() as s`."""

    state: PaymentServiceState
    url: str
    server: uvicorn.Server
    thread: threading.Thread


@contextmanager
def running_payment_service(state: PaymentServiceState | None = None) -> Iterator[PaymentServiceServer]:
    state = state or PaymentServiceState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_payment_service(state), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="payment-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the local Payment Service did not start")
        time.sleep(0.01)
    try:
        yield PaymentServiceServer(state, f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
