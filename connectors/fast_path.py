"""The four connector routes without FastAPI's per-request machinery, for requests that are plainly valid.

FastAPI stays the definition of the API (routes, models, `/openapi.json`) and answers everything else.
Its routing, dependency solving and middleware layers cost several times what validating the body does,
so a POST to one of the four routes is first tried here: with an `application/json` content type, a declared length
within the cap and the right API key, its body is validated by the route's own pydantic model straight
from the bytes (`model_validate_json`). Anything else (a missing or unusual header, a chunked or
oversized body, a body that does not validate) goes to the FastAPI app unchanged, with the body messages
already read replayed to it: every refusal (400, 401, 413, 404/405) is FastAPI's own answer, byte for
byte. A body accepted here is one the FastAPI route would have accepted as the same model (both parse
JSON into the same pydantic model, JSON mode being no more lenient than Python mode for these fields).
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.errors import OutboxUnavailableError
from connectors.service import Answer

log = logging.getLogger("jwo.connectors.http")

_JSON = b"application/json"
TOO_MANY = b'{"message":"Too Many Requests"}'
INTERNAL = b'{"message":"internal error: the request could not be recorded"}'

Observe = Callable[[str, int, float, str | None], None]
"""Record one answered request: (route, status, seconds, request id)."""


@dataclass(frozen=True)
class HotRoute:
    model: type[BaseModel]
    run: Callable[[Any], Awaitable[Answer]]
    """The service call for a validated request of `model`."""


class FastPath:
    def __init__(
        self,
        routes: dict[str, HotRoute],
        *,
        allow: Callable[[str], bool],
        observe: Observe,
        max_body_bytes: int,
        api_key: str | None,
    ) -> None:
        self.routes = routes
        self._allow = allow
        self._observe = observe
        self._max = max_body_bytes
        self._api_key = api_key.encode() if api_key else None
        self.answered = 0
        """Requests answered here rather than by FastAPI."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        """Answer `scope` (a request to one of `routes`) here, or hand it to `fallback` as it came."""
        started = time.perf_counter()
        if scope["method"] != "POST" or not self._plain(scope["headers"]):
            await fallback(scope, receive, send)
            return
        first = await receive()
        if first["type"] != "http.request":
            await fallback(scope, _replay([first], receive), send)
            return
        body: bytes = first.get("body", b"")
        read = [first]
        while read[-1].get("more_body", False):
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                await fallback(scope, _replay(read, receive), send)
                return
            body += message.get("body", b"")
        route = self.routes[scope["path"]]
        try:
            if len(body) > self._max:
                raise ValueError("over the cap")
            request: Any = route.model.model_validate_json(body)
        except (ValidationError, ValueError):
            await fallback(scope, _replay(read, receive), send)
            return
        request_id: str = request.requestId
        self.answered += 1
        status, answer = 500, INTERNAL
        try:
            if self._allow(request.storeId):
                result = await route.run(request)
                status, answer = result.status, result.body
            else:
                status, answer = 429, TOO_MANY
        except OutboxUnavailableError as exc:
            log.error("outbox unavailable: %s", exc)
        except Exception:
            log.exception("unexpected fault on %s", scope["path"])
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", _JSON)],
                }
            )
            await send({"type": "http.response.body", "body": answer})
        finally:
            self._observe(scope["path"], status, time.perf_counter() - started, request_id)

    def _plain(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A declared length within the cap, a JSON content type, the right key: one of each."""
        length = kind = key = None
        for name, value in headers:
            if name == b"content-length":
                if length is not None:
                    return False
                length = value
            elif name == b"content-type":
                if kind is not None:
                    return False
                kind = value
            elif name == b"x-api-key":
                if key is not None:
                    return False
                key = value
        if length is None or not length.isdigit() or int(length) > self._max:
            return False
        if kind is None or kind.split(b";", 1)[0].strip().lower() != _JSON:
            return False  # FastAPI reads a body without a content type as not JSON (strict_content_type)
        return self._api_key is None or (key is not None and secrets.compare_digest(key, self._api_key))


def _replay(read: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives back the messages already read, then reads on."""
    pending = collections.deque(read)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed
