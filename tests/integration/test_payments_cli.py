"""`jwo debts settle|write-off`, `jwo refunds issue|list` and `jwo payments list|send` as an operator runs them, against
a reconciled lake and the local Payment Service simulator over HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from contracts.tables import TABLES
from jwo.cli import app
from jwo.payments import credentials, run_sender
from jwo.reconcile_facts import build_job
from jwo.settings import Settings
from reconcile.settings import ReconcileSettings
from simulator.payment_service import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, PaymentServiceServer, running_payment_service
from simulator.settlement import ExpectedTrip, SettlementDayConfig, SettlementKey, build_settlement_day
from warehouse.lake import LakeWriter
from warehouse.query import run_query

PAYMENT_STATUS = "/v1/feedback/payment-status"


def said(result: Result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@dataclass
class World:
    home: Path
    key: SettlementKey
    amazon: PaymentServiceServer
    monkeypatch: pytest.MonkeyPatch

    def jwo(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    def trip(self, state: str, *, debt: bool | None = None, store: str = "S1") -> ExpectedTrip:
        return next(
            t for t in self.key.trips if t.state == state and t.store_id == store and (debt is None or t.debt == debt)
        )

    def sql(self, query: str) -> list[tuple[object, ...]]:
        return run_query(self.home / "lake", query).rows


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A settlement day four days ago, reconciled (debts open), and Amazon's Payment Service on loopback."""
    day = build_settlement_day(
        SettlementDayConfig(per_anomaly=1, business_date=(datetime.now(UTC) - timedelta(days=4)).date())
    )
    assert day.key is not None
    home = tmp_path / "home"
    LakeWriter(home / "lake").write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts")
    store = SqliteRetailerStore(home / "retailer.db")
    try:
        key = day.key
        build_job(home / "lake", store, ReconcileSettings(), clock=lambda: key.as_of).run(day=key.business_date)
    finally:
        store.close()
    with running_payment_service() as amazon:
        for name, value in {
            "JWO_HOME": str(home),
            "JWO_LOG_LEVEL": "WARNING",
            "JWO_PAYMENTS__ENDPOINT_URL": amazon.url,
            "JWO_PAYMENTS__CALL_ATTEMPTS": "2",
            "JWO_PAYMENTS__CALL_MAX_BACKOFF_SECONDS": "0.05",
            "JWO_PAYMENTS__RETRY_BASE_BACKOFF_SECONDS": "0.2",
            "JWO_PAYMENTS__SENDER_INTERVAL_SECONDS": "0.1",
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        }.items():
            monkeypatch.setenv(name, value)
        yield World(home, key, amazon, monkeypatch)


def _run_sender_until(check: object, within: float = 10.0) -> None:
    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sender(Settings(), stop))
        try:
            for _ in range(int(within / 0.1)):
                if check():  # type: ignore[operator]
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the sender did not deliver in time")
        finally:
            stop.set()
            await task

    asyncio.run(go())


def test_settling_a_debt_reports_the_payoff_to_amazon_and_shows_it_delivered(world: World) -> None:
    owed = world.trip("declined", debt=True)
    settled = world.jwo("debts", "settle", owed.shopping_trip_id)
    assert settled.exit_code == 0, settled.output
    assert "debt SETTLED" in said(settled)
    assert "payment-status report delivered to Amazon" in said(settled)
    report = world.amazon.state.payment_status[("S1", owed.shopping_trip_id)]
    assert report["totalAmount"] == {"amount": owed.outstanding, "code": "USD"}
    assert report["settledAmount"] == {"amount": owed.outstanding, "code": "USD"}
    listed = world.jwo("payments", "list")
    assert listed.exit_code == 0, listed.output
    assert "DELIVERED" in said(listed)
    assert "payment_status" in said(listed)
    [(status,)] = world.sql(f"select status from bad_debts where shopping_trip_id = '{owed.shopping_trip_id}'")
    assert status == "SETTLED"


def test_a_payoff_while_amazon_is_down_stays_queued_and_the_sender_delivers_it_exactly_once(world: World) -> None:
    owed = world.trip("partially_captured", debt=True)
    world.amazon.state.fail_next(2, 503)
    settled = world.jwo("debts", "settle", owed.shopping_trip_id)
    assert settled.exit_code == 0, settled.output
    assert "queued" in said(settled)
    assert "Amazon not reachable" in said(settled)
    assert "QUEUED" in said(world.jwo("payments", "list", "--status", "QUEUED"))
    assert world.amazon.state.payment_status == {}

    _run_sender_until(lambda: world.amazon.state.payment_status)
    assert len(world.amazon.state.calls_to(PAYMENT_STATUS, status=200)) == 1
    sent_again = world.jwo("payments", "send")
    assert sent_again.exit_code == 0, sent_again.output
    assert "nothing was due" in said(sent_again)
    assert len(world.amazon.state.calls_to(PAYMENT_STATUS, status=200)) == 1
    assert "DELIVERED" in said(world.jwo("payments", "list", "--status", "DELIVERED"))


def test_a_partial_payoff_is_reported_against_the_balance_and_bad_amounts_are_refused(world: World) -> None:
    owed = world.trip("missing_capture", debt=True)
    for bad, problem in (("-1", "positive"), ("1.001", "in cents"), (str(owed.outstanding + 1), "more than it")):
        refused = world.jwo("debts", "settle", owed.shopping_trip_id, "--amount", bad)
        assert refused.exit_code == 1
        assert problem in said(refused)
    paid = world.jwo("debts", "settle", owed.shopping_trip_id, "--amount", "1.00")
    assert paid.exit_code == 0, paid.output
    assert f"debt OPEN (remaining {owed.outstanding - 1}" in said(paid)
    report = world.amazon.state.payment_status[("S1", owed.shopping_trip_id)]
    assert report["totalAmount"]["amount"] == owed.outstanding
    assert report["settledAmount"]["amount"] == Decimal("1.00")


def test_partial_payoffs_survive_a_reconcile_each_is_reported_and_paying_the_rest_opens_the_gate(
    world: World,
) -> None:
    owed = world.trip("missing_capture", debt=True)
    assert owed.shopper_id is not None
    assert owed.outstanding > 2
    trip = owed.shopping_trip_id

    def gate_closed() -> bool:
        store = SqliteRetailerStore(world.home / "retailer.db")
        try:
            return any(d.status == "OPEN" for d in store.debts(owed.shopper_id))
        finally:
            store.close()

    def reconcile() -> None:
        store = SqliteRetailerStore(world.home / "retailer.db")
        try:  # the real clock: a run after the payoffs, as `jwo up` would run it
            build_job(world.home / "lake", store, ReconcileSettings()).run(day=world.key.business_date)
        finally:
            store.close()

    def debt() -> tuple[object, ...]:
        [row] = world.sql(f"select status, amount, paid from bad_debts where shopping_trip_id = '{trip}'")
        return row

    for n in (1, 2):  # two payoffs of the same amount, each followed by a reconcile run
        paid = world.jwo("debts", "settle", trip, "--amount", "1.00")
        assert paid.exit_code == 0, paid.output
        reconcile()
        assert debt() == ("OPEN", owed.outstanding - n, Decimal(n))
        assert gate_closed()
    reports = world.amazon.state.calls_to(PAYMENT_STATUS, status=200)
    assert [(r.body["totalAmount"]["amount"], r.body["settledAmount"]["amount"]) for r in reports] == [
        (owed.outstanding, Decimal("1.00")),
        (owed.outstanding - 1, Decimal("1.00")),
    ]

    rest = world.jwo("debts", "settle", trip)
    assert rest.exit_code == 0, rest.output
    assert "debt SETTLED" in said(rest)
    reconcile()
    assert debt() == ("SETTLED", owed.outstanding - 2, owed.outstanding)
    assert not gate_closed()
    assert len(world.amazon.state.calls_to(PAYMENT_STATUS, status=200)) == 3


def test_a_write_off_or_a_store_amazon_does_not_police_reports_nothing(world: World) -> None:
    owed = world.trip("declined", debt=True)
    written_off = world.jwo("debts", "write-off", owed.shopping_trip_id)
    assert written_off.exit_code == 0, written_off.output
    assert "not reported to Amazon" in said(written_off)
    world.monkeypatch.setenv("JWO_PAYMENTS__FRAUD_ABUSE_STORES", '["S2"]')
    other = world.trip("declined", debt=True, store="S1")
    assert world.jwo("debts", "settle", other.shopping_trip_id).exit_code == 1  # already closed above
    s1_debt = world.trip("missing_capture", debt=True, store="S1")
    settled = world.jwo("debts", "settle", s1_debt.shopping_trip_id)
    assert settled.exit_code == 0, settled.output
    assert "nothing reported to Amazon" in said(settled)
    assert world.amazon.state.calls == []


def test_a_refund_is_sent_once_lands_in_refunds_and_in_the_days_settlement(world: World) -> None:
    trip = world.trip("matched")
    before = world.sql("select refunded, captured from daily_settlement where store_id = 'S1'")
    assert before[0][0] == 0
    issued = world.jwo("refunds", "issue", trip.shopping_trip_id, "--amount", "1.25", "--reason", "DAMAGED_ITEM")
    assert issued.exit_code == 0, issued.output
    assert "refund delivered to Amazon" in said(issued)
    assert "is REFUNDED" in said(issued)
    again = world.jwo("refunds", "issue", trip.shopping_trip_id, "--amount", "1.25", "--reason", "DAMAGED_ITEM")
    assert again.exit_code == 0, again.output
    assert "was issued before (status REFUNDED)" in said(again)
    assert len(world.amazon.state.refunds) == 1
    assert world.amazon.state.refunded(trip.shopping_trip_id) == Decimal("1.25")
    [(status, amount, day)] = world.sql("select status, amount, business_date from refunds")
    assert (status, amount, day) == ("REFUNDED", Decimal("1.25"), world.key.business_date)
    [(refunded, captured)] = world.sql("select refunded, captured from daily_settlement where store_id = 'S1'")
    assert refunded == Decimal("1.25")
    assert captured == before[0][1]
    listed = world.jwo("refunds", "list")
    assert listed.exit_code == 0, listed.output
    assert "REFUNDED" in said(listed)
    # A later reconcile run of the day keeps the refund in the settlement.
    store = SqliteRetailerStore(world.home / "retailer.db")
    try:
        key = world.key
        build_job(world.home / "lake", store, ReconcileSettings(), clock=lambda: key.as_of).run(day=key.business_date)
    finally:
        store.close()
    assert world.sql("select refunded from daily_settlement where store_id = 'S1'") == [(Decimal("1.25"),)]


@pytest.mark.parametrize(
    ("trip_id", "amount", "env", "problem"),
    [
        ("no-such-trip", "1.00", {}, "unknown trip"),
        ("MATCHED", "OVER", {}, "more than can be refunded"),
        ("MATCHED", "1.00", {"JWO_PAYMENTS__REFUND_WINDOW_DAYS": "3"}, "outside the refund window"),
        ("DECLINED", "1.00", {}, "captured 0"),
    ],
)
def test_a_refund_is_refused_with_a_clear_message_and_nothing_is_sent(
    world: World, trip_id: str, amount: str, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        world.monkeypatch.setenv(name, value)
    if trip_id in ("MATCHED", "DECLINED"):
        trip = world.trip(trip_id.lower())
        trip_id = trip.shopping_trip_id
        amount = str(trip.captured + Decimal("0.01")) if amount == "OVER" else amount
    refused = world.jwo("refunds", "issue", trip_id, "--amount", amount, "--reason", "DAMAGED_ITEM")
    assert refused.exit_code == 1
    assert "refund refused" in said(refused)
    assert problem in said(refused)
    assert world.amazon.state.calls == []
    assert world.sql("select count(*) from refunds") == [(0,)]


def test_a_refund_while_amazon_is_down_is_requested_then_refunded_by_the_sender(world: World) -> None:
    trip = world.trip("matched", store="S2")
    world.amazon.state.fail_next(2, 429)
    issued = world.jwo("refunds", "issue", trip.shopping_trip_id, "--amount", "2.00", "--reason", "DAMAGED_ITEM")
    assert issued.exit_code == 0, issued.output
    assert "Amazon not reachable" in said(issued)
    assert world.sql("select status from refunds") == [("REQUESTED",)]
    assert world.sql("select refunded from daily_settlement where store_id = 'S2'") == [(Decimal("0.0000"),)]
    _run_sender_until(lambda: world.sql("select status from refunds") == [("REFUNDED",)])
    assert world.sql("select refunded from daily_settlement where store_id = 'S2'") == [(Decimal("2.00"),)]
    assert len(world.amazon.state.calls_to("/v1/refund", status=200)) == 1


def test_credentials_come_from_the_settings_or_else_the_normal_aws_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from_chain = credentials(Settings(home=tmp_path))()
    assert from_chain is not None
    assert (from_chain.access_key, from_chain.secret_key) == ("AKIDFROMPROFILE", "profile-secret")
    fixed = credentials(Settings(home=tmp_path, aws_access_key_id="AKIDSET", aws_secret_access_key="set-secret"))()
    assert fixed is not None
    assert fixed.access_key == "AKIDSET"
