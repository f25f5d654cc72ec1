"""`AlertSink` over a webhook: each alert is one JSON POST (`reconcile.alerts.alert_payload`).

Each attempt has the client's timeout; a transport error, a timeout, a 429 or a 5xx is retried up to `attempts`
times with exponential backoff (so one `send` takes at most about attempts * timeout + the backoffs); any other 4xx
is terminal. What is still not accepted raises AlertDeliveryError for the caller to retry later.
"""

from __future__ import annotations

import asyncio

import httpx

from reconcile.alerts import alert_payload
from reconcile.errors import AlertDeliveryError
from reconcile.rules import Alert


class WebhookAlertSink:
    def __init__(self, client: httpx.AsyncClient, url: str, *, attempts: int = 3, backoff_seconds: float = 0.2) -> None:
        self._client, self._url = client, url
        self._attempts, self._backoff = max(1, attempts), backoff_seconds

    async def send(self, alert: Alert) -> None:
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = await self._client.post(
                    self._url, json=alert_payload(alert), headers={"Idempotency-Key": alert.alert_id}
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                raise AlertDeliveryError(f"webhook refused alert {alert.alert_id}: {problem}", transient=False)
        tries = self._attempts
        raise AlertDeliveryError(f"webhook did not accept alert {alert.alert_id} after {tries} tries: {problem}")
