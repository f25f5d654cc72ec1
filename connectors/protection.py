"""Per-store rate limiting (token bucket) and the request body cap."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StoreRateLimiter:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, store_id: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(store_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[store_id] = (tokens, now)
            return False
        self._buckets[store_id] = (tokens - 1.0, now)
        return True


_TOO_LARGE = b'{"message":"request body is larger than the limit"}'


class BodyLimitMiddleware:
    """Answers 413 as soon as the declared or streamed body passes the limit, before reading it all."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _reject(send)
                return
        seen = 0
        too_large = False
        started = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            # The framework may turn the aborted read into its own error answer: drop it, send the 413.
            nonlocal started
            if too_large and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited, guarded)
        if too_large and not started:
            await _reject(send)


class _BodyTooLarge(Exception):
    pass


async def _reject(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_TOO_LARGE)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE})
