"""Play a scenario against a running connector over HTTP and check every answer (SPEC §2.1-2.4).

One lane (a shopper, a stray key, an associate) sends its requests in order, one at a time: the
gate call, its retry, then the cart at exit. Up to `concurrency` lanes run at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from simulator.scenario import SCAN_TYPES, PlannedRequest, Scenario
from simulator.truth import AnswerKey, GateOutcome, build_answer_key, idempotency_key

ANSWER_WITHIN_SECONDS = 2.0
"""SPEC §2: answer well inside 2 seconds, always."""


class _AnyText:
    """Matches any non-empty string."""

    def __repr__(self) -> str:
        return "<non-empty text>"


_TEXT = _AnyText()


@dataclass
class RunReport:
    sent: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    """Seconds, one per answered request."""

    def latency_ms(self, percentile: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds (0 when nothing was answered)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(percentile / 100 * len(ordered)))
        return ordered[rank - 1] * 1000


async def run_scenario(
    base_url: str,
    scenario: Scenario,
    *,
    concurrency: int = 16,
    progress: Callable[[int], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> RunReport:
    """Send every planned request, retries included; `progress(n)` gets the number answered so far."""
    if client is None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as own:
            return await run_scenario(base_url, scenario, concurrency=concurrency, progress=progress, client=own)
    run = _Run(base_url.rstrip("/"), client, build_answer_key(scenario), progress)
    lanes: dict[str, list[PlannedRequest]] = {}
    for request in scenario.requests:
        lanes.setdefault(request.lane, []).append(request)
    pending = deque(lanes.values())

    async def worker() -> None:
        while pending:
            for request in pending.popleft():
                await run.send(request)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, len(pending)))):
            group.create_task(worker())
    return run.report


class _Run:
    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        key: AnswerKey,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.base_url = base_url
        self.client = client
        self.progress = progress
        self.gate = {outcome.key: outcome for outcome in key.gate}
        self.empty_trips = {trip.shopping_trip_id for trip in key.trips if trip.line_count == 0}
        self.answers: dict[str, tuple[int, Any]] = {}
        self.report = RunReport()

    async def send(self, request: PlannedRequest) -> None:
        report = self.report
        started = time.perf_counter()
        try:
            response = await self.client.post(self.base_url + request.path, json=request.body)
        except httpx.HTTPError as exc:
            report.mismatches.append(f"{_label(request)}: no answer ({exc!r})")
        else:
            elapsed = time.perf_counter() - started
            report.latencies.append(elapsed)
            report.statuses[response.status_code] += 1
            self.check(request, response, elapsed)
        report.sent += 1
        report.by_endpoint[request.endpoint] += 1
        if self.progress is not None:
            self.progress(report.sent)

    def check(self, request: PlannedRequest, response: httpx.Response, elapsed: float) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        answer = (response.status_code, body)
        self.answers[request.request_id] = answer
        status, fields = self.expected(request)
        if response.status_code != status or not _matches(body, fields):
            self.report.mismatches.append(
                f"{_label(request)}: expected {status} {fields}, got {response.status_code} {body!r}"
            )
        if request.retry_of is not None:
            original = self.answers.get(request.retry_of)
            if original != answer:
                self.report.mismatches.append(f"{_label(request)}: answered {answer!r}, the original {original!r}")
        if elapsed > ANSWER_WITHIN_SECONDS:
            self.report.mismatches.append(f"{_label(request)}: answered in {elapsed:.3f} s")

    def expected(self, request: PlannedRequest) -> tuple[int, dict[str, Any]]:
        """The status and the body fields the connector must answer this request with."""
        key = idempotency_key(request)
        if request.endpoint == "purchases":
            return 201, {"purchaseId": "" if key in self.empty_trips else _TEXT}
        gate = self.gate[key]
        if gate.outcome != "ACCEPT":
            return gate.http_status, {"action": "REJECT"} if request.endpoint == "scan" else {"message": _TEXT}
        return gate.http_status, _accepted(gate)


def _accepted(gate: GateOutcome) -> dict[str, Any]:
    assert gate.visitor_type is not None
    match gate.endpoint:
        case "scan":
            return {"id": gate.shopper_id, "type": SCAN_TYPES[gate.visitor_type], "action": "ACCEPT"}
        case "identity_keys":
            return {"visitorDetails": {"id": gate.shopper_id, "type": gate.visitor_type}}
        case _:
            return {"shopperId": gate.shopper_id}


def _matches(body: Any, fields: dict[str, Any]) -> bool:
    """Whether a JSON body holds these fields (nested dicts field by field); other fields may vary."""
    if not isinstance(body, dict):
        return False
    for name, want in fields.items():
        got = body.get(name)
        if want is _TEXT:
            ok = isinstance(got, str) and got != ""
        elif isinstance(want, dict):
            ok = _matches(got, want)
        else:
            ok = got == want
        if not ok:
            return False
    return True


def _label(request: PlannedRequest) -> str:
    retry = f" (retry of {request.retry_of})" if request.retry_of else ""
    return f"{request.endpoint} {request.request_id}{retry} lane {request.lane}"
