import asyncio
import base64
import binascii
import json
import re
from collections import Counter

import httpx
import pytest

from simulator.driver import RunReport, run_scenario
from simulator.scenario import Scenario, ScenarioConfig, Shopper, build_scenario
from simulator.truth import build_answer_key, idempotency_key


class FakeConnector:
    """Just enough of SPEC §2.1-2.4 to answer a scenario; the flags make it answer wrongly."""

    def __init__(self, scenario: Scenario, *, admit_blocked: bool = False, idempotent: bool = True) -> None:
        self.by_key = {s.identity_key: s for s in scenario.shoppers}
        self.by_phone = {re.sub(r"\D", "", s.phone_number): s for s in scenario.shoppers if s.phone_number}
        self.admit_blocked = admit_blocked
        self.idempotent = idempotent
        self.purchases: dict[str, str] = {}
        self.paths: Counter[str] = Counter()

    def shopper(self, encoded: str) -> Shopper | None:
        try:
            return self.by_key.get(base64.b64decode(encoded, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            return None

    def admitted(self, encoded: str) -> Shopper | None:
        shopper = self.shopper(encoded)
        if shopper and (shopper.status == "active" or self.admit_blocked):
            return shopper
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.paths[request.url.path] += 1
        match request.url.path:
            case "/v1/identity/identity-keys":
                shopper = self.admitted(body["identityKey"])
                if shopper is None:
                    return httpx.Response(401, json={"message": "identityKey: not admitted"})
                details = {"id": shopper.shopper_id, "type": shopper.visitor_type}
                return httpx.Response(200, json={"visitorDetails": details})
            case "/v1/identity/scan":
                shopper = self.admitted(body["scanEvent"]["value"])
                if shopper is None:
                    return httpx.Response(200, json={"id": "none", "type": "SHOPPER", "action": "REJECT"})
                answer = {"id": shopper.shopper_id, "type": shopper.visitor_type, "action": "ACCEPT"}
                return httpx.Response(200, json=answer)
            case "/v1/identity/shopper":
                if body["shopperKeyType"] == "PHONE_NUMBER":
                    shopper = self.by_phone.get(re.sub(r"\D", "", body["shopperKey"]))
                else:
                    shopper = self.shopper(body["shopperKey"])
                if shopper is None:
                    return httpx.Response(404, json={"message": "no such shopper"})
                return httpx.Response(201, json={"shopperId": shopper.shopper_id})
            case "/v1/order/purchases":
                trip = body["idempotentShoppingTripId"]
                purchase_id = f"P-{len(self.purchases) + 1}" if body["cartItems"] else ""
                if self.idempotent:
                    purchase_id = self.purchases.setdefault(trip, purchase_id)
                else:
                    self.purchases[f"{trip}-{len(self.purchases)}"] = purchase_id
                return httpx.Response(201, json={"purchaseId": purchase_id})
        return httpx.Response(404, json={"message": "no such path"})


def play(scenario: Scenario, fake: FakeConnector, progress: list[int] | None = None) -> RunReport:
    async def run() -> RunReport:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
            return await run_scenario(
                "http://connector.test/",
                scenario,
                concurrency=8,
                progress=None if progress is None else progress.append,
                client=client,
            )

    return asyncio.run(run())


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(ScenarioConfig(shoppers=80, retry_share=0.3))


def test_a_correct_connector_gets_every_request_and_no_mismatch(scenario: Scenario) -> None:
    fake = FakeConnector(scenario)
    progress: list[int] = []
    report = play(scenario, fake, progress)

    key = build_answer_key(scenario)
    gate = {g.key: g.http_status for g in key.gate}
    expected_statuses = Counter(
        201 if r.endpoint == "purchases" else gate[idempotency_key(r)] for r in scenario.requests
    )
    assert report.mismatches == []
    assert report.sent == len(scenario.requests) == sum(fake.paths.values())
    assert report.by_endpoint == Counter(r.endpoint for r in scenario.requests)
    assert report.statuses == expected_statuses
    assert set(report.statuses) == {200, 201, 401, 404}
    assert progress == list(range(1, len(scenario.requests) + 1))
    assert len(report.latencies) == report.sent
    assert 0 < report.latency_ms(50) <= report.latency_ms(99)
    assert len(fake.purchases) == key.tables.purchases


def test_admitting_a_blocked_shopper_is_a_mismatch(scenario: Scenario) -> None:
    blocked = {s.shopper_id for s in scenario.shoppers if s.status == "blocked"}
    blocked_calls = [r for r in scenario.requests if r.lane in blocked]
    assert blocked_calls

    report = play(scenario, FakeConnector(scenario, admit_blocked=True))

    assert len(report.mismatches) == len(blocked_calls)
    for request in blocked_calls:
        assert any(request.request_id in line for line in report.mismatches)


def test_a_retried_cart_that_gets_a_new_purchase_id_is_a_mismatch(scenario: Scenario) -> None:
    retried_carts = [r for r in scenario.requests if r.endpoint == "purchases" and r.retry_of and r.body["cartItems"]]
    assert retried_carts

    report = play(scenario, FakeConnector(scenario, idempotent=False))

    assert len(report.mismatches) == len(retried_carts)
    assert all("the original" in line for line in report.mismatches)


def test_an_unreachable_connector_is_reported_not_raised() -> None:
    scenario = build_scenario(ScenarioConfig(shoppers=5, unknown_key_attempts=0, get_shopper_calls=0))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def run() -> RunReport:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            return await run_scenario("http://connector.test", scenario, client=client)

    report = asyncio.run(run())
    assert report.sent == len(scenario.requests) > 0
    assert report.statuses == Counter()
    assert len(report.mismatches) == report.sent
    assert all("no answer" in line for line in report.mismatches)
    assert report.latency_ms(99) == 0.0
