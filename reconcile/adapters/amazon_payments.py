"""`PaymentService` over HTTP: Amazon's Payment Service API, each request signed with AWS SigV4 (botocore's
`SigV4Auth`, credentials from the normal AWS chain, resolved again for every attempt so rotating credentials work).

Per call, up to `attempts` tries, each newly signed:
    2xx                      → PaymentReply (the JSON body; an empty body is {})
    429, 5xx, transport error → retried after an exponential backoff with full jitter (a Retry-After is honoured,
                               up to the cap); still failing after the last try → PaymentUnavailableError
    401, 403                 → PaymentUnavailableError at once: the request is fine, our credentials or allowlisting
                               are not; it stays queued until they are fixed
    other 4xx (400 errorMsg) → PaymentRejectedError with Amazon's errorMsg; never retried
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from reconcile.errors import PaymentRejectedError, PaymentUnavailableError
from reconcile.payments import PaymentReply, PaymentRequest, decode_json

CredentialSource = Callable[[], ReadOnlyCredentials | None]


class AmazonPaymentService:
    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource,
        *,
        service_name: str = "execute-api",
        attempts: int = 4,
        base_backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._client, self._base = client, endpoint_url.rstrip("/")
        self._region, self._service, self._credentials = region, service_name, credentials
        self._attempts, self._base_backoff, self._max_backoff = (
            max(1, attempts),
            base_backoff_seconds,
            max_backoff_seconds,
        )
        self._rng = rng or random.Random()

    def _signed_headers(self, url: str, body: bytes) -> dict[str, str]:
        frozen = self._credentials()
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise PaymentUnavailableError("no AWS credentials found to sign the Payment Service request")
        request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(
            Credentials(frozen.access_key, frozen.secret_key, frozen.token), self._service, self._region
        ).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}

    async def call(self, request: PaymentRequest) -> PaymentReply:
        url = self._base + request.path
        body = request.body.encode()
        problem = ""
        wait = 0.0
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(wait)
            try:
                response = await self._client.post(url, content=body, headers=self._signed_headers(url, body))
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                wait = self._backoff(attempt)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return PaymentReply(status, _json_object(response.content))
            message = _error_message(response)
            if status in (401, 403):
                raise PaymentUnavailableError(f"HTTP {status} from the Payment Service (credentials?): {message}")
            if status == 429 or status >= 500:
                problem = f"HTTP {status}: {message}"
                wait = max(self._backoff(attempt), min(_retry_after(response), self._max_backoff))
                continue
            raise PaymentRejectedError(f"HTTP {status}: {message}", status_code=status)
        raise PaymentUnavailableError(f"{request.path}: no answer after {self._attempts} tries; last: {problem}")

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0, min(self._max_backoff, self._base_backoff * 2**attempt))


def _json_object(content: bytes) -> dict[str, Any]:
    if not content.strip():
        return {}
    try:
        value = decode_json(content)
    except ValueError:
        return {"raw": content.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _error_message(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        for field in ("errorMsg", "message", "Message"):
            if isinstance(body.get(field), str):
                return str(body[field])
    return response.text[:500]


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0
