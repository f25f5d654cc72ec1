"""The fast path answers exactly as FastAPI alone does: every request below goes to an app with the fast
path and to one without it (same retailer data, same clock), and the answers and the messages they made
durable must be identical, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from tests.conftest import NOW, identity_keys_body, purchase_body, scan_body, shopper_body
from tests.unit.test_connectors_validation import INVALID, mutate

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
JSON = {"content-type": "application/json"}


class Pair:
    """The same requests sent to the app with the fast path and to the app without it."""

    def __init__(self, source: MemorySource, settings: ConnectorSettings) -> None:
        self.outboxes = (MemoryOutbox(), MemoryOutbox())
        self.clients = tuple(
            TestClient(
                create_app(ConnectorService(CachedDirectory(source), outbox, lambda: NOW), settings, fast_path=fast)
            )
            for outbox, fast in zip(self.outboxes, (True, False), strict=True)
        )

    def fast_answers(self) -> int:
        fast = self.clients[0].app.fast_path  # type: ignore[attr-defined]
        assert self.clients[1].app.fast_path is None  # type: ignore[attr-defined]
        return int(fast.answered)

    def same(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        fast, plain = (c.post(path, content=content, headers=headers) for c in self.clients)
        assert (fast.status_code, fast.content) == (plain.status_code, plain.content)
        assert fast.headers.get("content-type") == plain.headers.get("content-type")
        assert fast.headers.get("content-length") == plain.headers.get("content-length")
        assert [m.body for m in self.outboxes[0].messages] == [m.body for m in self.outboxes[1].messages]
        return fast.status_code, fast.content


@pytest.fixture
def pair(source: MemorySource) -> Pair:
    return Pair(source, ConnectorSettings())


def _bytes(body: object) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize("path", list(BODIES))
def test_valid_requests_and_their_replays_answer_alike(pair: Pair, path: str) -> None:
    body = BODIES[path]()
    first = pair.same(path, _bytes(body), JSON)
    assert first[0] in (200, 201)
    assert pair.fast_answers() == 1  # the fast path answered it (FastAPI did the other app's)
    assert pair.same(path, _bytes(body), JSON) == first  # the replay
    assert pair.same(path, _bytes(body | {"requestId": BODIES[path]()["requestId"], "extra": 1}), JSON) == first
    conflicting = body | {"storeId": "store-2"}
    assert pair.same(path, _bytes(conflicting), JSON)[0] == 400


@pytest.mark.parametrize(("path", "field", "value", "message"), INVALID)
def test_invalid_requests_get_fastapis_answer(pair: Pair, path: str, field: str, value: object, message: str) -> None:
    status, content = pair.same(path, _bytes(mutate(BODIES[path](), field, value)), JSON)
    assert (status, json.loads(content)) == (400, {"message": message})


def _odd_bodies(path: str) -> list[bytes]:
    valid = _bytes(BODIES[path]())
    text = valid.decode()
    return [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"text"',
        b"\xef\xbb\xbf" + valid,  # UTF-8 byte-order mark
        text.encode("utf-16"),
        text.encode("utf-32"),
        valid + b" trailing",
        valid + b"\n \t",
        b"  " + valid,
        text.replace('"store-1"', '"\\ud800"').encode(),  # a lone surrogate, escaped
        text.replace('"store-1"', '"st\\u006fre-1"').encode(),
        text.replace('"store-1"', '"st\xc3\xb6re"'.encode().decode("latin-1")).encode("latin-1"),
        text.replace('"store-1"', '"\xff\xfe"').encode("latin-1"),  # not UTF-8
        text.replace('"store-1"', "NaN").encode(),
        text.replace('"store-1"', "1e999").encode(),
        text.replace('"store-1"', '"store-1", "storeId": "store-2"').encode(),  # a duplicate key
        text.replace('"store-1"', '"store-1", "storeId": 7').encode(),
        text.replace("{", '{"x": {"deep": [1, 2, {"y": null}]}, ', 1).encode(),
    ]


@pytest.mark.parametrize("path", list(BODIES))
def test_odd_bodies_answer_alike(pair: Pair, path: str) -> None:
    for body in _odd_bodies(path):
        pair.same(path, body, JSON)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "Application/JSON"},
        {"content-type": "application/vnd.amazon+json"},
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"x-api-key": "unused"},
    ],
)
def test_content_types_answer_alike(pair: Pair, headers: dict[str, str] | None) -> None:
    for path, body in BODIES.items():
        pair.same(path, _bytes(body()), headers)


def test_an_api_key_and_a_body_cap_answer_alike(source: MemorySource) -> None:
    pair = Pair(source, ConnectorSettings(api_key="s3cret", max_body_bytes=2000))
    body = _bytes(purchase_body())
    assert pair.same(PURCHASES, body, {"x-api-key": "s3cret", **JSON})[0] == 201
    assert pair.same(PURCHASES, _bytes(purchase_body()), {"x-api-key": "wrong", **JSON})[0] == 401
    assert pair.same(PURCHASES, _bytes(purchase_body()), JSON)[0] == 401
    big = purchase_body()
    big["cartItems"] *= 20
    assert pair.same(PURCHASES, _bytes(big), {"x-api-key": "s3cret", **JSON})[0] == 413


def test_other_methods_and_paths_answer_alike(pair: Pair) -> None:
    for client in pair.clients:
        assert client.get(SCAN).status_code == 405
        assert client.put(SCAN, content=_bytes(scan_body()), headers=JSON).status_code == 405
    pair.same(SCAN + "/", _bytes(scan_body()), JSON)  # Starlette's trailing-slash redirect, followed
    assert pair.same("/v1/identity/nope", _bytes(scan_body()), JSON)[0] == 404
