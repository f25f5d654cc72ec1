"""`jwo outbox status|parked|requeue` as on-call runs them: messages SQS refused for good are parked by the relay,
listed with their reason, and once the cause is fixed put back and sent, with the same message ids, nothing lost or
doubled. The outbox is the real SQLite file of `JWO_HOME`; the relay sends to an in-memory queue."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryPublisher, MemorySource
from connectors.ports import OutboxRecord, StoredResponse
from connectors.relay import Relay
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.messages import decode_envelope
from jwo.cli import app
from tests.conftest import NOW, purchase_body

ANSWER = StoredResponse("fp-1", 201, b'{"purchaseId":"p-1"}')


def jwo(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def said(result: Result) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JWO_HOME", str(tmp_path))
    monkeypatch.setenv("JWO_LOG_LEVEL", "WARNING")
    return tmp_path


@pytest.fixture
def outbox(home: Path) -> Iterator[SqliteOutbox]:
    box = SqliteOutbox(home / "outbox.db", commit_timeout=2.0)
    yield box
    box.close()


def park_some(outbox: SqliteOutbox) -> tuple[list[OutboxRecord], list[OutboxRecord]]:
    """Three messages SQS refuses and two it takes, committed and relayed: the three are parked."""
    poison = [OutboxRecord(f"poison-{n}", b'{"poison":%d}' % n) for n in range(3)]
    good = [OutboxRecord(f"good-{n}", b'{"good":%d}' % n) for n in range(2)]
    asyncio.run(outbox.commit("purchases", "trip-1", ANSWER, [*poison, *good]))
    assert asyncio.run(Relay(outbox, MemoryPublisher(refuse=b"poison")).drain(within=5)) is True
    assert outbox.parked() == 3
    return poison, good


def test_status_and_parked_list_what_sqs_refused_with_its_reason(home: Path, outbox: SqliteOutbox) -> None:
    poison, _ = park_some(outbox)

    status = jwo("outbox", "status")
    assert status.exit_code == 0, status.output
    assert "pending 0 (oldest 0.0 s), parked 3" in said(status)
    assert "jwo outbox requeue --all" in said(status)

    listed = jwo("outbox", "parked", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["message_id"] for r in rows] == [p.message_id for p in poison]
    assert {r["reason"] for r in rows} == {"InvalidMessageContents: refused"}
    assert "InvalidMessageContents" in said(jwo("outbox", "parked"))


def test_requeued_messages_are_sent_once_with_their_ids_and_leave_the_parked_list(
    home: Path, outbox: SqliteOutbox
) -> None:
    poison, _ = park_some(outbox)
    seqs = [p.seq for p in outbox.parked_messages(10)]

    one = jwo("outbox", "requeue", str(seqs[0]))
    assert one.exit_code == 0, one.output
    assert "1 message(s) requeued" in said(one)
    assert [m.message_id for m in outbox.pending(10)] == [poison[0].message_id]
    assert outbox.stats(datetime.now(UTC))[0] == 1

    rest = jwo("outbox", "requeue", "--all")
    assert rest.exit_code == 0, rest.output
    assert "2 message(s) requeued" in said(rest)
    assert outbox.parked() == 0
    pending = outbox.pending(10)
    assert [m.seq for m in pending] == seqs  # their own sequence numbers: sent first, in their order
    assert [m.body for m in pending] == [p.body for p in poison]

    fixed = MemoryPublisher()  # the cause is fixed: the queue takes them now
    assert asyncio.run(Relay(outbox, fixed).drain(within=5)) is True
    assert fixed.bodies == [p.body for p in poison]
    assert outbox.pending(10) == []
    assert outbox.parked() == 0
    assert "pending 0 (oldest 0.0 s), parked 0" in said(jwo("outbox", "status"))


def test_requeue_says_which_numbers_were_not_parked_and_changes_nothing_for_them(
    home: Path, outbox: SqliteOutbox
) -> None:
    park_some(outbox)
    first = outbox.parked_messages(10)[0].seq

    result = jwo("outbox", "requeue", str(first), "999999")

    assert result.exit_code == 1
    assert "1 message(s) requeued; not parked: [999999]" in said(result)
    assert outbox.parked() == 2
    assert len(outbox.pending(10)) == 1


@pytest.mark.parametrize("args", [(), ("1", "--all")])
def test_requeue_needs_either_numbers_or_all(home: Path, outbox: SqliteOutbox, args: tuple[str, ...]) -> None:
    park_some(outbox)

    result = jwo("outbox", "requeue", *args)

    assert result.exit_code == 1
    assert "name the sequence numbers to requeue, or --all" in said(result)
    assert outbox.parked() == 3


def test_without_an_outbox_file_the_commands_say_so_and_create_nothing(home: Path) -> None:
    for command in (("status",), ("parked",), ("requeue", "--all")):
        result = jwo("outbox", *command)
        assert result.exit_code == 1
        assert "no outbox at" in said(result)
    assert not (home / "outbox.db").exists()


def test_a_requeued_message_is_the_envelope_it_was(home: Path, outbox: SqliteOutbox, source: MemorySource) -> None:
    """A connector's own message (an envelope) survives parking and requeueing byte for byte."""
    service = ConnectorService(CachedDirectory(source), outbox, lambda: NOW)
    client = TestClient(create_app(service, ConnectorSettings()))
    assert client.post("/v1/order/purchases", json=purchase_body(trip_id="trip-9")).status_code == 201
    assert asyncio.run(Relay(outbox, MemoryPublisher(refuse=b"trip-9")).drain(within=5)) is True
    [parked] = outbox.parked_messages(10)
    with sqlite3.connect(home / "outbox.db") as conn:
        [(parked_body,)] = conn.execute("SELECT body FROM outbox_parked WHERE seq = ?", (parked.seq,)).fetchall()

    assert jwo("outbox", "requeue", "--all").exit_code == 0
    fixed = MemoryPublisher()
    assert asyncio.run(Relay(outbox, fixed).drain(within=5)) is True

    [body] = fixed.bodies
    assert body == parked_body
    envelope = decode_envelope(body)
    assert envelope.message_id == parked.message_id
    assert envelope.payload["shopping_trip_id"] == "trip-9"
