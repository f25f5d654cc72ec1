"""`jwo consume` (consumers without connectors) serves its own /metrics: consumption, lag, dead letters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from aiobotocore.session import get_session

from jwo.runtime import running
from jwo.settings import Settings


def _metric(text: str, name: str) -> float | None:
    """The sample's value, or None while the gauge has no sample yet (before the first depth read)."""
    lines = [line for line in text.splitlines() if line.startswith(name)]
    assert len(lines) <= 1, lines
    return float(lines[0].rsplit(" ", 1)[1]) if lines else None


def test_a_consumer_only_process_reports_its_queue_and_dead_letter_depths(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, str]:
        settings = Settings(home=tmp_path / "home", aws_mode="embedded")
        settings.ingest = settings.ingest.model_copy(update={"metrics_port": 0, "depth_poll_seconds": 0.2})
        async with running(settings, connectors=False, consumers=True) as pipeline:
            assert pipeline.base_url == ""
            dlq_url = pipeline.aws.resources.events.dlq_url
            assert dlq_url is not None
            async with get_session().create_client("sqs", **pipeline.aws.endpoint.client_kwargs()) as sqs:
                await sqs.send_message(QueueUrl=dlq_url, MessageBody="a dead letter")
            async with httpx.AsyncClient() as client:
                health = (await client.get(pipeline.metrics_url.replace("/metrics", "/healthz"))).text
                for _ in range(300):
                    text = (await client.get(pipeline.metrics_url)).text
                    if _metric(text, 'jwo_queue_dead_letters{queue="jwo-events"}') == 1:
                        break
                    await asyncio.sleep(0.1)
            return health, text

    health, text = asyncio.run(scenario())
    assert health == '{"status":"ok"}'
    assert _metric(text, 'jwo_queue_dead_letters{queue="jwo-events"}') == 1
    assert _metric(text, 'jwo_queue_visible_messages{queue="jwo-events"}') == 0
    assert _metric(text, 'jwo_consumer_messages_consumed{queue="jwo-events"}') == 0
