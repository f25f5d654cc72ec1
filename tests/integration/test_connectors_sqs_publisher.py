"""The SQS publisher fits our messages to SQS's rules, so that none is refused on every retry and blocks the
head of the outbox: batches of large messages are split under SQS's batch limit, and the characters SQS
refuses in a body (U+FFFE, U+FFFF: valid in our JSON) travel as JSON escapes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.adapters.sqs_publisher import BATCH_BYTES, SqsPublisher, fitting_batches, sqs_body
from connectors.ports import OutboxRecord, PendingMessage, StoredResponse
from connectors.relay import Relay
from contracts.messages import MAX_MESSAGE_BYTES
from jwo.aws_resources import EmbeddedAws, ResourceNames, provision

ANSWER = StoredResponse("fp", 201, b"{}")


def message(seq: int, size: int) -> PendingMessage:
    body = json.dumps({"n": seq, "pad": "x" * max(0, size - 20)}).encode()
    return PendingMessage(seq, f"m-{seq}", body)


def test_batches_keep_the_order_and_stay_under_the_limit() -> None:
    messages = [message(n, size) for n, size in enumerate([200_000, 100_000, 30_000, 250_000, 10, 10, 262_000], 1)]

    batches = [[m.seq for m, _ in batch] for batch in fitting_batches(messages)]

    assert batches == [[1], [2, 3], [4, 5, 6], [7]]
    assert all(sum(len(m.body) for m, _ in batch) <= BATCH_BYTES for batch in fitting_batches(messages))
    assert MAX_MESSAGE_BYTES <= BATCH_BYTES  # any one message always fits a batch of its own


def test_the_characters_sqs_refuses_are_sent_as_json_escapes_of_the_same_text() -> None:
    body = json.dumps({"store_id": "store-\ufffe-\uffff", "name": "Crème brûlée 🍮"}, ensure_ascii=False).encode()

    sent = sqs_body(body)

    assert "\ufffe" not in sent
    assert "\uffff" not in sent
    assert json.loads(sent) == json.loads(body)
    assert "Crème brûlée 🍮" in sent  # everything else travels as it is


@pytest.mark.slow
def test_the_relay_delivers_large_messages_that_do_not_fit_one_batch_together(aws: EmbeddedAws, tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    big = [OutboxRecord(f"big-{n}", json.dumps({"n": n, "pad": "x" * 250_000}).encode()) for n in range(6)]
    small = [
        OutboxRecord(f"small-{n}", json.dumps({"n": n, "odd": "\uffff"}, ensure_ascii=False).encode()) for n in range(8)
    ]

    async def scenario() -> tuple[bool, list[dict[str, Any]]]:
        resources = await provision(aws.endpoint, ResourceNames())
        await outbox.commit("purchases", "trip-big", ANSWER, [*big[:3], *small[:4], *big[3:], *small[4:]])
        async with get_session().create_client("sqs", **aws.endpoint.client_kwargs()) as sqs:
            relay = Relay(outbox, SqsPublisher(sqs, resources.events.url), base_backoff=0.01, max_backoff=0.05)
            drained = await relay.drain(within=10)
            bodies: list[dict[str, Any]] = []
            while True:
                got = await sqs.receive_message(
                    QueueUrl=resources.events.url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300
                )
                if not got.get("Messages"):
                    return drained, bodies
                bodies += [json.loads(m["Body"]) for m in got["Messages"]]

    try:
        drained, received = asyncio.run(scenario())
        left = outbox.pending(100)
    finally:
        outbox.close()

    assert drained is True
    assert left == []
    assert sorted(json.dumps(b, sort_keys=True) for b in received) == sorted(
        json.dumps(json.loads(r.body), sort_keys=True) for r in [*big, *small]
    )


class _RefusingClient:
    """An SQS client whose SendMessageBatch accepts some entries and fails others, as SQS answers."""

    def __init__(self, failed: list[dict[str, Any]]) -> None:
        self.failed = failed

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        failing = {f["Id"] for f in self.failed}
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in failing], "Failed": self.failed}


def test_a_sender_fault_is_refused_for_good_and_a_service_fault_stays_pending() -> None:
    failed = [
        {"Id": "2", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "Invalid characters"},
        {"Id": "3", "SenderFault": False, "Code": "InternalError", "Message": "try again"},
    ]
    publisher = SqsPublisher(_RefusingClient(failed), "http://queue")  # type: ignore[arg-type]

    sent = asyncio.run(publisher.send_batch([message(n, 10) for n in (1, 2, 3)]))

    assert sent.accepted == [1]
    assert sent.refused == [(2, "InvalidMessageContents: Invalid characters")]  # 3: neither, so sent again
