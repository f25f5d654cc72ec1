"""The whole flow in one process: HTTP into the connectors, through the outbox, SQS (embedded moto) and the
consumer, into the Parquet lake that `jwo sql` reads. Everything binds 127.0.0.1 on free ports under tmp_path."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.imports import import_catalog_file, import_shoppers_file
from connectors.settings import ConnectorSettings
from contracts.messages import AuthEvent, MessageType, encode_envelope, envelope_for
from ingest.decode import rows_for_message
from ingest.settings import IngestSettings
from jwo.cli import app
from jwo.runtime import LakeSink, running
from jwo.settings import Settings
from simulator.driver import run_scenario
from simulator.files import write_retailer_files
from simulator.scenario import ScenarioConfig, build_scenario
from simulator.truth import build_answer_key
from warehouse.errors import WarehouseError
from warehouse.lake import LakeWriter
from warehouse.query import run_query

SHOPPER_KEY = "6a1f3c2e-0d4b-4a8e-9c7f-2b5d8e1a4c90"
SHOPPERS_CSV = (
    "shopper_id,identity_key,visitor_type,phone_number,status\n"
    f"shopper-1,{SHOPPER_KEY},SHOPPER,+1 617 555 1234,active\n"
    "shopper-2,key-two,ASSOCIATE,,active\n"
)
CATALOG_CSV = (
    "store_id,sku,name,barcodes,unit_price,currency,tax_rate,promotion_percent\n"
    "store-001,SKU-1,Whole Milk 1gal,012345678905|012345678929,3.49,USD,0.0625,10\n"
    "store-001,SKU-2,Bananas,012345678912,0.79,USD,0,\n"
)


@pytest.fixture(autouse=True)
def no_outside_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's environment may point the pipeline at a real AWS or another home."""
    for name in list(os.environ):
        if name.startswith(("JWO_", "AWS_")):
            monkeypatch.delenv(name)


def settings_for(home: Path) -> Settings:
    return Settings(
        home=home,
        aws_mode="embedded",
        connectors=ConnectorSettings(host="127.0.0.1", port=0),
        ingest=IngestSettings(wait_seconds=1, linger_seconds=0.05),
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def load_retailer_files(home: Path, shoppers: Path, catalog: Path) -> None:
    store = SqliteRetailerStore(home / "retailer.db")
    try:
        import_shoppers_file(store, shoppers)
        import_catalog_file(store, catalog)
    finally:
        store.close()


def count(lake: Path, table: str) -> int:
    try:
        [(value,)] = run_query(lake, f"select count(*) from {table}").rows
    except WarehouseError:
        return 0
    assert isinstance(value, int)
    return value


async def wait_for_counts(lake: Path, expected: dict[str, int], within: float) -> dict[str, int]:
    """Poll the lake as an analyst would until every table holds its expected rows; returns the last counts."""
    deadline = time.monotonic() + within
    while True:
        landed = {table: await asyncio.to_thread(count, lake, table) for table in expected}
        if landed == expected or time.monotonic() > deadline:
            return landed
        await asyncio.sleep(0.1)


def the_four_requests() -> dict[str, dict[str, object]]:
    def new_id() -> str:
        return str(uuid.uuid4())

    return {
        "/v1/identity/scan": {
            "requestId": new_id(),
            "storeId": "store-001",
            "scanEvent": {
                "id": new_id(),
                "timestamp": "2026-11-20T12:00:00Z",
                "location": "ENTRY",
                "value": b64(SHOPPER_KEY),
                "channel": "OPTICAL",
            },
        },
        "/v1/identity/identity-keys": {
            "requestId": new_id(),
            "identityKey": b64(SHOPPER_KEY),
            "storeId": "store-001",
            "authEvent": {"id": new_id(), "timestamp": "2026-11-20T12:00:01Z", "location": "ENTRY"},
            "keyChannel": "OPTICAL",
        },
        "/v1/identity/shopper": {
            "requestId": new_id(),
            "shopperKey": "+1 617 555 1234",
            "shopperKeyType": "PHONE_NUMBER",
            "storeId": "store-001",
            "timestamp": "2026-11-20T12:05:00Z",
        },
        "/v1/order/purchases": {
            "requestId": new_id(),
            "idempotentShoppingTripId": "trip-e2e-1",
            "storeId": "store-001",
            "shoppingTrip": {
                "startTime": "2026-11-20T12:00:01Z",
                "endTime": "2026-11-20T12:20:00Z",
                "authEvents": [
                    {
                        "id": new_id(),
                        "timestamp": "2026-11-20T12:00:01Z",
                        "location": "ENTRY",
                        "payloadType": "SCAN_CODE",
                        "scanResult": {"id": "shopper-1", "type": "SHOPPER"},
                    }
                ],
            },
            "cartItems": [
                {"id": "SKU-1", "type": "SKU", "quantity": {"value": "2", "unit": "EA"}, "lineItemId": "li-1"},
                {"id": "012345678912", "type": "SCANCODE", "quantity": {"value": "1", "unit": "EA"}},
                {"id": "SKU-NOPE", "type": "SKU", "quantity": {"value": "1", "unit": "EA"}, "lineItemId": "li-3"},
            ],
        },
    }


def test_one_request_to_each_route_lands_in_the_warehouse(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    (tmp_path / "shoppers.csv").write_text(SHOPPERS_CSV)
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV)
    load_retailer_files(settings.home, tmp_path / "shoppers.csv", tmp_path / "catalog.csv")
    requests = the_four_requests()

    async def scenario() -> dict[str, int]:
        async with running(settings) as pipeline:
            assert pipeline.base_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(base_url=pipeline.base_url, timeout=5.0) as client:
                answers = {path: await client.post(path, json=body) for path, body in requests.items()}
                assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert answers["/v1/identity/scan"].json() == {"id": "shopper-1", "type": "SHOPPER", "action": "ACCEPT"}
            assert answers["/v1/identity/identity-keys"].json() == {
                "visitorDetails": {"id": "shopper-1", "type": "SHOPPER"}
            }
            assert answers["/v1/identity/shopper"].status_code == 201
            assert answers["/v1/identity/shopper"].json() == {"shopperId": "shopper-1"}
            assert answers["/v1/order/purchases"].status_code == 201
            assert answers["/v1/order/purchases"].json()["purchaseId"] != ""
            expected = {"auth_events": 3, "purchases": 1, "purchase_lines": 3, "bad_carts": 1, "cancel_charges": 0}
            landed = await wait_for_counts(settings.lake_dir, expected, within=20)
            depths = await pipeline.queue_depths()
        assert depths == {"events": (0, 0), "eventfeed": (0, 0), "reports": (0, 0)}
        return landed

    assert asyncio.run(scenario()) == {
        "auth_events": 3,
        "purchases": 1,
        "purchase_lines": 3,
        "bad_carts": 1,
        "cancel_charges": 0,
    }

    lake = settings.lake_dir
    auth = run_query(lake, "select endpoint, outcome, http_status, shopper_id from auth_events order by endpoint").rows
    assert auth == [
        ("identity_keys", "ACCEPT", 200, "shopper-1"),
        ("scan", "ACCEPT", 200, "shopper-1"),
        ("shopper", "ACCEPT", 201, "shopper-1"),
    ]
    # 2 x 3.49 = 6.98, 10% off 0.70, tax 6.25% of 6.28 = 0.39 -> 6.67; bananas by barcode 0.79; unknown 0
    assert run_query(
        lake, "select entry_method, shopper_id, subtotal, total, unknown_item_count from purchases"
    ).rows == [("SCAN_CODE", "shopper-1", Decimal("7.7700"), Decimal("7.4600"), 1)]
    assert run_query(lake, "select line_no, sku, line_total, known from purchase_lines order by line_no").rows == [
        (1, "SKU-1", Decimal("6.6700"), True),
        (2, "SKU-2", Decimal("0.7900"), True),
        (3, None, Decimal("0.0000"), False),
    ]
    assert run_query(lake, "select item_id from bad_carts").rows == [("SKU-NOPE",)]
    everything = str(run_query(lake, "select * from auth_events").rows)
    assert SHOPPER_KEY not in everything  # never the raw identity key
    assert b64(SHOPPER_KEY) not in everything
    assert count(lake, "unknown_events") == 0


def test_a_simulated_day_answers_every_request_right_and_lands_what_the_answer_key_says(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    scenario = build_scenario(ScenarioConfig(seed=11, shoppers=30, stores=2))
    key = build_answer_key(scenario)
    files = write_retailer_files(scenario, tmp_path / "retailer-files")
    load_retailer_files(settings.home, files.shoppers, files.catalog)
    expected = key.tables.model_dump()
    assert expected["purchases"] > 10  # a day worth checking

    async def play() -> tuple[list[str], dict[str, int], dict[str, tuple[int, int]]]:
        async with running(settings) as pipeline:
            report = await run_scenario(pipeline.base_url, scenario)
            landed = await wait_for_counts(settings.lake_dir, expected, within=30)
            depths = await pipeline.queue_depths()
        assert report.sent == len(scenario.requests)
        return report.mismatches, landed, depths

    mismatches, landed, depths = asyncio.run(play())

    assert mismatches == []
    assert landed == expected
    assert depths == {"events": (0, 0), "eventfeed": (0, 0), "reports": (0, 0)}
    totals = run_query(settings.lake_dir, "select shopping_trip_id, total from purchases").rows
    assert dict(totals) == {trip.shopping_trip_id: trip.total for trip in key.trips}
    assert count(settings.lake_dir, "unknown_events") == 0


# --- the CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def populated_home(home: Path) -> Path:
    """A JWO_HOME whose lake holds three auth events, landed through the same decode and sink as `jwo up`."""
    at = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    sink = LakeSink(LakeWriter(home / "lake"), None)
    for n in range(3):
        event = AuthEvent(
            event_id=f"event-{n}", request_id=f"request-{n}", endpoint="scan", store_id="store-001",
            occurred_at=at, received_at=at, outcome="ACCEPT", http_status=200, shopper_id=f"shopper-{n}",
        )  # fmt: skip
        envelope = envelope_for(MessageType.AUTH_EVENT, f"scan:event-{n}", event, occurred_at=at, producer="t")
        _, rows = rows_for_message("jwo-events", f"m-{n}", encode_envelope(envelope).decode(), at)
        sink.write(rows, f"batch-{n}")
    return home


def test_jwo_sql_prints_json_csv_and_a_table(runner: CliRunner, tmp_path: Path) -> None:
    env = {"JWO_HOME": str(populated_home(tmp_path / "home"))}
    query = "select count(*) from auth_events"

    as_json = runner.invoke(app, ["sql", query, "--format", "json"], env=env)
    as_csv = runner.invoke(app, ["sql", query, "--format", "csv"], env=env)
    as_table = runner.invoke(app, ["sql", query, "--format", "table"], env=env)
    default = runner.invoke(app, ["sql", query], env=env)

    assert [r.exit_code for r in (as_json, as_csv, as_table, default)] == [0, 0, 0, 0]
    assert [list(row.values()) for row in json.loads(as_json.stdout)] == [[3]]
    header, value = as_csv.stdout.splitlines()
    assert (header.startswith("count"), value) == (True, "3")
    lines = as_table.stdout.splitlines()
    assert (lines[0].startswith("count"), set(lines[1]), lines[2].strip()) == (True, {"-"}, "3")
    assert default.stdout == as_table.stdout

    rows = runner.invoke(app, ["sql", "select event_id, shopper_id from auth_events order by 1", "-f", "csv"], env=env)
    assert rows.stdout == "event_id,shopper_id\nevent-0,shopper-0\nevent-1,shopper-1\nevent-2,shopper-2\n"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("selec count(*) from auth_events", "not valid SQL"),
        ("select * from no_such_table", "no_such_table"),
        ("insert into auth_events (event_id) values ('x')", "only read queries"),
        ("drop view auth_events", "only read queries"),
        ("select 1; select 2", "one statement at a time"),
    ],
)
def test_jwo_sql_refuses_a_bad_or_writing_query_with_exit_code_1(
    runner: CliRunner, tmp_path: Path, query: str, message: str
) -> None:
    env = {"JWO_HOME": str(populated_home(tmp_path / "home"))}

    result = runner.invoke(app, ["sql", query], env=env)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error:")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert runner.invoke(app, ["sql", "select count(*) from auth_events", "-f", "csv"], env=env).stdout.endswith("3\n")


def test_jwo_sql_on_an_empty_home_sees_empty_tables(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sql", "select count(*) as n from purchases", "-f", "csv"], env={"JWO_HOME": str(tmp_path)}
    )

    assert (result.exit_code, result.stdout) == (0, "n\n0\n")


def test_jwo_shoppers_import_add_block_unblock_and_show(runner: CliRunner, tmp_path: Path) -> None:
    env = {"JWO_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    shoppers = tmp_path / "shoppers.csv"
    shoppers.write_text(SHOPPERS_CSV)

    def jwo(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.stdout, result.stderr

    def show(shopper_id: str) -> dict[str, str]:
        """`jwo shoppers show` as the key/value pairs of its table."""
        code, out, _ = jwo("shoppers", "show", shopper_id)
        assert code == 0
        cells = [[cell.strip() for cell in line.split("\u2502")[1:-1]] for line in out.splitlines() if "\u2502" in line]
        return {key: value for key, value in cells}

    code, out, _ = jwo("shoppers", "import", str(shoppers))
    assert (code, "imported 2 shopper(s)" in out) == (0, True)

    assert show("shopper-1") == {
        "shopper_id": "shopper-1",
        "visitor_type": "SHOPPER",
        "status": "active",
        "phone_number": "***********1234",  # masked
        "gate": "ACCEPT",
        "open debts": "none",
    }

    assert jwo("shoppers", "block", "shopper-1")[:2] == (
        0,
        "shopper shopper-1 is now blocked (the gate follows within seconds)\n",
    )
    assert (show("shopper-1")["status"], show("shopper-1")["gate"]) == ("blocked", "REJECT")

    assert jwo("shoppers", "unblock", "shopper-1")[0] == 0
    assert (show("shopper-1")["status"], show("shopper-1")["gate"]) == ("active", "ACCEPT")

    code, out, _ = jwo("shoppers", "add", "--shopper-id", "shopper-3", "--identity-key", "key-three",
                       "--visitor-type", "ASSOCIATE", "--phone-number", "+44 20 7946 0018")  # fmt: skip
    assert (code, out) == (0, "shopper shopper-3 saved\n")
    assert show("shopper-3") == {
        "shopper_id": "shopper-3",
        "visitor_type": "ASSOCIATE",
        "status": "active",
        "phone_number": "************0018",
        "gate": "ACCEPT",
        "open debts": "none",
    }

    store = SqliteRetailerStore(tmp_path / "home" / "retailer.db")
    try:
        snapshot = store.snapshot()
    finally:
        store.close()
    assert {s.shopper_id: s.status for s in snapshot.by_key.values()} == {
        "shopper-1": "active",
        "shopper-2": "active",
        "shopper-3": "active",
    }
    assert snapshot.by_phone["442079460018"].shopper_id == "shopper-3"


def test_jwo_shoppers_commands_fail_clearly(runner: CliRunner, tmp_path: Path) -> None:
    env = {"JWO_HOME": str(tmp_path / "home")}
    bad = tmp_path / "bad.csv"
    bad.write_text("shopper_id,identity_key,visitor_type,phone_number,status\ns-1,k-1,WIZARD,,active\n,k-2,,,\n")

    for args, message in (
        (["shoppers", "block", "nobody"], "no shopper 'nobody'"),
        (["shoppers", "unblock", "nobody"], "no shopper 'nobody'"),
        (["shoppers", "show", "nobody"], "no shopper 'nobody'"),
        (["shoppers", "add", "--shopper-id", "s-9", "--identity-key", "k-9", "--visitor-type", "ROBOT"], "ROBOT"),
        (["shoppers", "import", str(bad)], "line 2"),
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error:"), args
        assert message in result.stderr, args

    result = runner.invoke(app, ["shoppers", "import", str(bad)], env=env)
    assert "line 3" in result.stderr  # every bad row is listed, by line number
    missing = runner.invoke(app, ["shoppers", "import", str(tmp_path / "missing.csv")], env=env)
    assert missing.exit_code == 2  # click's usage error: the file does not exist


def test_jwo_catalog_import_loads_items_and_refuses_a_bad_file_whole(runner: CliRunner, tmp_path: Path) -> None:
    env = {"JWO_HOME": str(tmp_path / "home")}
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {"store_id": "store-001", "sku": "SKU-1", "name": "Milk", "barcodes": "012345678905",
                 "unit_price": "3.49", "currency": "USD", "tax_rate": "0.0625", "promotion_percent": "10"},
                {"store_id": "store-002", "sku": "SKU-1", "name": "Milk", "barcodes": "",
                 "unit_price": "3.59", "currency": "USD", "tax_rate": "0.08875"},
            ]
        )
    )  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text(CATALOG_CSV + "store-001,SKU-3,Soap,,cheap,USD,0.0625,\n")

    ok = runner.invoke(app, ["catalog", "import", str(catalog)], env=env)
    refused = runner.invoke(app, ["catalog", "import", str(bad)], env=env)

    assert ok.exit_code == 0
    assert "imported 2 catalog item(s)" in ok.stdout
    assert refused.exit_code == 1
    assert "line 4: unit_price 'cheap' is not a decimal number" in " ".join(refused.stderr.split())
    store = SqliteRetailerStore(tmp_path / "home" / "retailer.db")
    try:
        snapshot = store.snapshot()
    finally:
        store.close()
    assert sorted(snapshot.by_sku) == [("store-001", "SKU-1"), ("store-002", "SKU-1")]  # nothing of bad.csv
    assert snapshot.by_sku[("store-001", "SKU-1")].promotion_percent == Decimal("10")
    assert snapshot.by_barcode[("store-001", "012345678905")].sku == "SKU-1"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["up"],
        ["serve"],
        ["consume"],
        ["sql"],
        ["demo"],
        ["shoppers"],
        ["shoppers", "import"],
        ["shoppers", "add"],
        ["shoppers", "block"],
        ["shoppers", "unblock"],
        ["shoppers", "show"],
        ["catalog"],
        ["catalog", "import"],
    ],
    ids=lambda c: " ".join(c) or "jwo",
)
def test_every_command_has_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], prog_name="jwo")

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert f"jwo {' '.join(command)}".strip() in " ".join(result.stdout.split())


def test_jwo_without_arguments_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, [])

    for name in ("up", "serve", "consume", "sql", "demo", "shoppers", "catalog"):
        assert name in result.output


# --- `jwo up` as a real process ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def jwo_executable() -> Path:
    script = Path(sys.executable).parent / "jwo"
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    return script


@pytest.fixture
def jwo_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`jwo up` in its own process on a free loopback port; always killed at the end."""
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWO_", "AWS_"))}
    env |= {"JWO_HOME": str(home), "JWO_LOG_FORMAT": "text", "JWO_INGEST__WAIT_SECONDS": "1"}
    log = (tmp_path / "jwo-up.log").open("wb")
    process = subprocess.Popen(
        [str(jwo_executable()), "up", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, f"http://127.0.0.1:{port}", home
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def wait_healthy(process: subprocess.Popen[bytes], base_url: str, within: float, log: Path) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"jwo up exited with {process.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"jwo up did not answer /healthz within {within} s:\n{log.read_text()}")


@pytest.mark.slow
def test_jwo_up_serves_and_on_sigterm_drains_and_exits_0(
    jwo_up: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    process, base_url, home = jwo_up
    log = tmp_path / "jwo-up.log"
    wait_healthy(process, base_url, within=30, log=log)
    scan = the_four_requests()["/v1/identity/scan"]

    answer = httpx.post(f"{base_url}/v1/identity/scan", json=scan, timeout=5.0)
    assert answer.json() == {"id": "", "type": "SHOPPER", "action": "REJECT"}  # nobody is known here
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=15)

    assert code == 0, log.read_text()
    assert time.monotonic() - started < 15
    assert "stopping: draining" in log.read_text()
    # what was answered before the signal was drained to the queue and landed before the process exited
    assert run_query(home / "lake", "select outcome from auth_events").rows == [("REJECT",)]
    # and the embedded AWS went with it: nobody listens on its port any more
    moto_port = int(re.search(r"embedded AWS \(moto server\) at http://127\.0\.0\.1:(\d+)", log.read_text())[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", moto_port)) != 0
