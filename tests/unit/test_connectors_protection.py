"""The connectors' protection and operations surface: per-store rate limit (429), body cap (413),
optional api key, `/healthz` and `/metrics`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import SecretStr

from connectors import models
from connectors.app import AnswerMetrics, Metrics, RequestLog, create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.protection import StoreRateLimiter
from connectors.service import Answer, ConnectorService
from connectors.settings import ConnectorSettings
from tests.conftest import NOW, identity_keys_body, purchase_body, scan_body, shopper_body

SCAN = "/v1/identity/scan"
KEYS = "/v1/identity/identity-keys"
SHOPPER = "/v1/identity/shopper"
PURCHASES = "/v1/order/purchases"
TOO_MANY = {"message": "Too Many Requests"}

MakeClient = Callable[[ConnectorSettings], TestClient]


# --- rate limit ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = StoreRateLimiter(2.0, burst=3, clock=clock)

    burst = [limiter.allow("store-1") for _ in range(4)]
    clock.now += 0.25
    too_soon = limiter.allow("store-1")
    clock.now += 0.25
    refilled = limiter.allow("store-1")
    clock.now += 3600
    after_an_hour = [limiter.allow("store-1") for _ in range(4)]

    assert burst == [True, True, True, False]
    assert too_soon is False
    assert refilled is True
    assert after_an_hour == [True, True, True, False]  # the bucket never holds more than the burst


def test_the_default_burst_is_one_second_of_rate_and_at_least_one() -> None:
    clock = FakeClock()
    slow = StoreRateLimiter(0.5, clock=clock)
    fast = StoreRateLimiter(5.0, clock=clock)

    assert [slow.allow("s") for _ in range(2)] == [True, False]
    assert [fast.allow("s") for _ in range(6)] == [True] * 5 + [False]


def test_each_store_has_its_own_bucket() -> None:
    limiter = StoreRateLimiter(1.0, burst=1, clock=FakeClock())

    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("b"), limiter.allow("b")] == [
        True,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("path", "make_body", "ok"),
    [
        (SCAN, scan_body, 200),
        (KEYS, identity_keys_body, 200),
        (SHOPPER, shopper_body, 201),
        (PURCHASES, purchase_body, 201),
    ],
    ids=["scan", "identity-keys", "shopper", "purchases"],
)
def test_a_store_over_its_rate_gets_429_too_many_requests(
    make_client: MakeClient, outbox: MemoryOutbox, path: str, make_body: Callable[[], dict[str, Any]], ok: int
) -> None:
    client = make_client(ConnectorSettings(rate_limit_per_store=0.001, rate_limit_burst=2))

    statuses = [client.post(path, json=make_body()).status_code for _ in range(2)]
    limited = client.post(path, json=make_body())

    assert statuses == [ok, ok]
    assert limited.status_code == 429
    assert limited.json() == TOO_MANY
    assert limited.headers["content-type"] == "application/json"
    assert len(outbox.messages) == 2  # the refused request left no trace


def test_the_rate_limit_is_per_store_across_all_endpoints(make_client: MakeClient) -> None:
    client = make_client(ConnectorSettings(rate_limit_per_store=0.001, rate_limit_burst=2))
    other_store = scan_body(store_id="store-2")

    first = client.post(SCAN, json=scan_body())
    second = client.post(PURCHASES, json=purchase_body())
    third = client.post(KEYS, json=identity_keys_body())
    elsewhere = client.post(SCAN, json=other_store)

    assert (first.status_code, second.status_code) == (200, 201)
    assert (third.status_code, third.json()) == (429, TOO_MANY)
    assert elsewhere.status_code == 200


def test_an_invalid_request_is_a_400_before_any_rate_is_spent(make_client: MakeClient) -> None:
    client = make_client(ConnectorSettings(rate_limit_per_store=0.001, rate_limit_burst=1))

    invalid = client.post(SCAN, json={"storeId": "store-1"})
    valid = client.post(SCAN, json=scan_body())

    assert invalid.status_code == 400
    assert valid.status_code == 200


# --- body cap ------------------------------------------------------------------------------------

LIMIT = 2048


def _padded(size: int) -> bytes:
    """A valid purchase body of exactly `size` bytes (padded with an unknown field)."""
    body = purchase_body()
    body["padding"] = ""
    raw = json.dumps(body).encode()
    body["padding"] = "x" * (size - len(raw))
    out = json.dumps(body).encode()
    assert len(out) == size
    return out


def test_a_body_at_the_limit_is_accepted(make_client: MakeClient) -> None:
    client = make_client(ConnectorSettings(max_body_bytes=LIMIT))

    response = client.post(PURCHASES, content=_padded(LIMIT), headers={"content-type": "application/json"})

    assert response.status_code == 201


def test_a_declared_body_over_the_limit_is_a_413(make_client: MakeClient, outbox: MemoryOutbox) -> None:
    client = make_client(ConnectorSettings(max_body_bytes=LIMIT))

    response = client.post(PURCHASES, content=_padded(LIMIT + 1), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json() == {"message": "request body is larger than the limit"}
    assert outbox.messages == []


def test_a_streamed_body_over_the_limit_is_a_413(make_client: MakeClient, outbox: MemoryOutbox) -> None:
    client = make_client(ConnectorSettings(max_body_bytes=LIMIT))
    raw = _padded(LIMIT * 2)

    def chunks() -> Iterator[bytes]:  # no content-length: chunked transfer encoding
        for start in range(0, len(raw), 512):
            yield raw[start : start + 512]

    response = client.post(PURCHASES, content=chunks(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json() == {"message": "request body is larger than the limit"}
    assert outbox.messages == []


def test_a_streamed_body_under_the_limit_is_served(make_client: MakeClient) -> None:
    client = make_client(ConnectorSettings(max_body_bytes=LIMIT))
    raw = _padded(LIMIT - 10)

    response = client.post(
        PURCHASES, content=iter([raw[:700], raw[700:]]), headers={"content-type": "application/json"}
    )

    assert response.status_code == 201


# --- api key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"x-api-key": "wrong"}, 401), ({"x-api-key": "s3cret-value"}, 200)],
    ids=["missing", "wrong", "right"],
)
def test_a_configured_api_key_is_required_on_the_connector_routes(
    make_client: MakeClient, outbox: MemoryOutbox, headers: dict[str, str], status: int
) -> None:
    client = make_client(ConnectorSettings(api_key=SecretStr("s3cret-value")))

    response = client.post(SCAN, json=scan_body(), headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json() == {"message": "missing or wrong x-api-key"}
        assert outbox.messages == []
    else:
        assert response.json()["action"] == "ACCEPT"


def test_without_an_api_key_configured_no_header_is_needed(client: TestClient) -> None:
    assert client.post(SCAN, json=scan_body()).status_code == 200


def test_health_and_metrics_need_no_api_key(make_client: MakeClient) -> None:
    client = make_client(ConnectorSettings(api_key=SecretStr("s3cret-value")))

    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


# --- health and metrics --------------------------------------------------------------------------


def test_healthz_answers_ok(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_answer_metrics_read_out_as_prometheus_clients_own_counter_and_histogram() -> None:
    ours = Metrics()
    registry = CollectorRegistry()
    counter = Counter("jwo_connector_requests", "Connector requests by route and status", ["route", "status"],
                      registry=registry)  # fmt: skip
    histogram = Histogram("jwo_connector_latency_seconds", "Connector answer latency", ["route"],
                          buckets=AnswerMetrics.BUCKETS, registry=registry)  # fmt: skip
    answers = [(SCAN, 200, 0.0004), (SCAN, 200, 0.001), (SCAN, 400, 0.0011), (PURCHASES, 201, 2.0),
               (PURCHASES, 201, 7.5), (PURCHASES, 500, 0.25), (KEYS, 401, 0.0)]  # fmt: skip
    for route, status, seconds in answers:
        ours.observe(route, status, seconds)
        counter.labels(route, str(status)).inc()
        histogram.labels(route).observe(seconds)

    def connector_lines(text: bytes) -> list[str]:
        return sorted(line for line in text.decode().splitlines() if "jwo_connector" in line and "_created" not in line)

    assert connector_lines(generate_latest(ours.registry)) == connector_lines(generate_latest(registry))
    assert 'jwo_connector_latency_seconds_bucket{le="0.001",route="/v1/identity/scan"} 2.0' in connector_lines(
        generate_latest(ours.registry)
    )


def test_metrics_count_requests_by_route_and_status(service: ConnectorService) -> None:
    refreshed: list[int] = []
    metrics = Metrics()
    client = TestClient(
        create_app(service, ConnectorSettings(), metrics=metrics, refresh_metrics=lambda: refreshed.append(1))
    )
    metrics.outbox_depth.set(7)
    metrics.observe_group(12, 0.003)
    client.post(SCAN, json=scan_body())
    client.post(SCAN, json=scan_body())
    client.post(SCAN, json={})
    client.post(PURCHASES, json=purchase_body())

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'jwo_connector_requests_total{route="/v1/identity/scan",status="200"} 2.0' in text
    assert 'jwo_connector_requests_total{route="/v1/identity/scan",status="400"} 1.0' in text
    assert 'jwo_connector_requests_total{route="/v1/order/purchases",status="201"} 1.0' in text
    assert 'jwo_connector_latency_seconds_count{route="/v1/identity/scan"} 3.0' in text
    assert "jwo_outbox_depth 7.0" in text
    assert 'jwo_outbox_commit_seconds_bucket{le="0.005"} 1.0' in text
    assert 'jwo_outbox_commit_seconds_bucket{le="0.0025"} 0.0' in text
    assert "jwo_outbox_group_requests_sum 12.0" in text
    assert "/healthz" not in text
    assert refreshed == [1]


def test_the_openapi_document_publishes_the_four_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert set(schema["paths"]) == {SCAN, KEYS, SHOPPER, PURCHASES}
    assert {name: ops["post"]["summary"] for name, ops in schema["paths"].items()} == {
        SCAN: "ResolveScan",
        KEYS: "VerifyIdentityKeys",
        SHOPPER: "GetShopper",
        PURCHASES: "CreatePurchases",
    }


def test_unknown_route_and_wrong_method_answer_json_messages(client: TestClient) -> None:
    missing = client.post("/v1/identity/nope", json={})
    assert missing.status_code == 404
    assert missing.json() == {"message": "Not Found"}
    wrong = client.get("/v1/identity/scan")
    assert wrong.status_code == 405
    assert wrong.json() == {"message": "Method Not Allowed"}


def test_an_unexpected_fault_is_a_json_500_not_a_stack_trace(source: MemorySource, outbox: MemoryOutbox) -> None:
    class Broken(ConnectorService):
        async def resolve_scan(self, req: models.ResolveScanRequest) -> Answer:
            raise RuntimeError("boom")

    service = Broken(CachedDirectory(source), outbox, lambda: NOW)
    with TestClient(create_app(service, ConnectorSettings()), raise_server_exceptions=False) as broken:
        response = broken.post("/v1/identity/scan", json=scan_body())
    assert response.status_code == 500
    assert response.json() == {"message": "internal error: the request could not be recorded"}


def test_the_request_log_keeps_every_refusal_and_slow_answer_and_samples_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request_log = RequestLog(every=3, slow_seconds=0.5)
    with caplog.at_level(logging.INFO, logger="jwo.connectors.http"):
        for n in range(7):
            request_log(SCAN, 200, 0.001, f"ok-{n}")
        request_log(SCAN, 400, 0.001, "invalid")
        request_log(SCAN, 429, 0.001, "limited")
        request_log(SCAN, 200, 0.6, "slow")

    logged = [(r.request_id, r.sampled) for r in caplog.records if r.getMessage() == "request"]  # type: ignore[attr-defined]
    assert logged == [("ok-2", 3), ("ok-5", 3), ("invalid", 1), ("limited", 1), ("slow", 1)]
