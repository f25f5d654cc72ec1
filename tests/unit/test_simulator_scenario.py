import json
import re
from collections import Counter
from decimal import Decimal

import pytest

from simulator.scenario import PATHS, PlannedRequest, Scenario, ScenarioConfig, b64, build_scenario

WIRE_TIME = re.compile(r"^2026-11-20T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(ScenarioConfig())


def by_lane(scenario: Scenario) -> dict[str, list[PlannedRequest]]:
    lanes: dict[str, list[PlannedRequest]] = {}
    for request in scenario.requests:
        lanes.setdefault(request.lane, []).append(request)
    return lanes


def originals(scenario: Scenario, endpoint: str) -> list[PlannedRequest]:
    return [r for r in scenario.requests if r.endpoint == endpoint and r.retry_of is None]


def test_the_same_seed_gives_the_same_scenario(scenario: Scenario) -> None:
    again = build_scenario(ScenarioConfig())
    assert again == scenario
    assert again.model_dump_json() == scenario.model_dump_json()


def test_a_different_seed_gives_a_different_scenario(scenario: Scenario) -> None:
    other = build_scenario(ScenarioConfig(seed=8))
    assert other.shoppers != scenario.shoppers
    assert other.requests != scenario.requests


def test_the_defaults_plan_every_case(scenario: Scenario) -> None:
    assert len(scenario.shoppers) == 200
    assert scenario.stores == ("store-001", "store-002", "store-003")
    assert len(scenario.catalog) == 3 * 40
    assert Counter(s.status for s in scenario.shoppers)["blocked"] == 6
    assert Counter(s.visitor_type for s in scenario.shoppers)["ASSOCIATE"] == 10
    assert set(Counter(r.endpoint for r in scenario.requests)) == set(PATHS)
    key_types = {r.body["shopperKeyType"] for r in originals(scenario, "shopper")}
    assert key_types == {"QR_CODE", "PHONE_NUMBER"}
    carts = [r.body["cartItems"] for r in originals(scenario, "purchases")]
    assert sum(not cart for cart in carts) == round(0.05 * 194)
    assert any(r.retry_of for r in scenario.requests)


def test_requests_are_in_time_order_within_the_business_day(scenario: Scenario) -> None:
    times = [r.at for r in scenario.requests]
    assert times == sorted(times)
    assert all(t.date().isoformat() == "2026-11-20" for t in times)


def test_every_body_uses_wire_timestamps_and_uuid_request_ids(scenario: Scenario) -> None:
    for request in scenario.requests:
        assert UUID.match(request.request_id)
        stamps = re.findall(r'"(?:timestamp|startTime|endTime)": "([^"]*)"', json.dumps(request.body))
        assert stamps
        assert all(WIRE_TIME.match(stamp) for stamp in stamps)


def test_blocked_shoppers_and_unknown_keys_are_stopped_at_the_gate(scenario: Scenario) -> None:
    lanes = by_lane(scenario)
    blocked = [s.shopper_id for s in scenario.shoppers if s.status == "blocked"]
    strangers = [lane for lane in lanes if lane.startswith("stranger-")]
    assert len(strangers) == 4
    for lane in blocked + strangers:
        assert {r.endpoint for r in lanes[lane]} <= {"scan", "identity_keys"}


def test_app_entry_carts_carry_the_gate_event_and_our_shopper_id(scenario: Scenario) -> None:
    shoppers = {s.shopper_id: s for s in scenario.shoppers}
    lanes = by_lane(scenario)
    app_trips = 0
    for cart in originals(scenario, "purchases"):
        entry = cart.body["shoppingTrip"]["authEvents"][0]
        gate = [r for r in lanes[cart.lane] if r.endpoint != "purchases"]
        if entry["payloadType"] == "FINANCIAL":
            assert gate == []
            assert "scanResult" not in entry
            continue
        app_trips += 1
        shopper = shoppers[cart.lane]
        event = gate[0].body.get("authEvent") or gate[0].body["scanEvent"]
        assert entry["id"] == event["id"]
        assert entry["payloadType"] == "SCAN_CODE"
        assert entry["scanResult"] == {"id": shopper.shopper_id, "type": shopper.visitor_type}
        assert gate[0].body.get("identityKey", event.get("value")) == b64(shopper.identity_key)
    assert app_trips == 194 - round(0.2 * 194)


def test_about_a_third_of_app_entries_use_resolve_scan(scenario: Scenario) -> None:
    app_lanes = {
        r.lane
        for r in originals(scenario, "purchases")
        if r.body["shoppingTrip"]["authEvents"][0]["payloadType"] == "SCAN_CODE"
    }
    scans = [r for r in originals(scenario, "scan") if r.lane in app_lanes]
    assert len(scans) == round(0.3 * len(app_lanes))
    assert all(r.body["scanEvent"]["channel"] == "OPTICAL" for r in scans)


def test_retries_repeat_the_body_with_a_new_request_id(scenario: Scenario) -> None:
    sent = {r.request_id: r for r in scenario.requests}
    retries = [r for r in scenario.requests if r.retry_of]
    assert 0.05 < len(retries) / len(sent) < 0.15
    for retry in retries:
        original = sent[retry.retry_of or ""]
        assert retry.request_id != original.request_id
        assert retry.body | {"requestId": original.request_id} == original.body
        assert retry.lane == original.lane
        assert retry.at > original.at


def test_carts_hold_known_and_unknown_items_with_well_formed_quantities(scenario: Scenario) -> None:
    skus = {item.sku for item in scenario.catalog}
    barcodes = {code for item in scenario.catalog for code in item.barcodes}
    units: Counter[str] = Counter()
    unknown = 0
    for cart in originals(scenario, "purchases"):
        items = cart.body["cartItems"]
        assert len(items) <= 8
        assert len({item["lineItemId"] for item in items}) == len(items)
        for item in items:
            quantity = item["quantity"]
            units[quantity["unit"]] += 1
            pattern = r"^[1-3]$" if quantity["unit"] == "EA" else r"^\d\.\d{3}$"
            assert re.match(pattern, quantity["value"])
            assert Decimal(quantity["value"]) > 0
            unknown += item["id"] not in (skus if item["type"] == "SKU" else barcodes)
    assert units["EA"] > 0
    assert units["KG"] > 0
    assert unknown > 0


def test_catalog_barcodes_are_upc_codes_shared_by_the_stores(scenario: Scenario) -> None:
    for item in scenario.catalog:
        assert 1 <= len(item.barcodes) <= 2
        for code in item.barcodes:
            digits = [int(d) for d in code]
            assert len(digits) == 12
            assert (3 * sum(digits[0::2]) + sum(digits[1::2])) % 10 == 0
    same_sku = [item for item in scenario.catalog if item.sku == "SKU-00001"]
    assert len({item.store_id for item in same_sku}) == 3
    assert len({item.barcodes for item in same_sku}) == 1


def test_phone_numbers_are_e123_and_distinct_by_digits(scenario: Scenario) -> None:
    phones = [s.phone_number for s in scenario.shoppers if s.phone_number]
    assert len(phones) > 150
    assert all(re.match(r"^\+1 \d{3} 555 \d{4}$", phone) for phone in phones)
    assert len({re.sub(r"\D", "", phone) for phone in phones}) == len(phones)


def test_an_empty_store_day_is_possible() -> None:
    empty = build_scenario(ScenarioConfig(shoppers=0, unknown_key_attempts=0, get_shopper_calls=0))
    assert empty.requests == ()
    assert empty.shoppers == ()
