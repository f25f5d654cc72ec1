"""The AWS side of the pipeline: the embedded emulator, and the queues, buckets, topic and event bus.

`provision` creates on an emulator what `infra/terraform` creates in a real account, idempotently;
`resolve` only looks those resources up (real AWS or a configured endpoint) and says what is missing.

Wiring (SPEC §1, §3):

    events queue      <- connectors publish auth events and carts          (DLQ: <queue>-dlq)
    reports topic     -> reports queue: S3 report notifications, SNS-wrapped (DLQ: <queue>-dlq)
    event bus + rule  -> eventfeed queue: CART / PAYMENT events, EventBridge envelope (DLQ: <queue>-dlq)
    reports bucket, lake bucket
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import logging
import multiprocessing
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.serving import make_server

from contracts.aws import AwsEndpoint, QueueRef

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

EMBEDDED_REGION = "us-east-1"
EMBEDDED_CREDENTIAL = "testing"
_DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the maximum, so a dead letter outlives its source message
_EVENTFEED_TARGET_ID = "eventfeed-queue"


class ResourceNames(BaseModel):
    """What our resources are called (defaults match infra/terraform/variables.tf)."""

    model_config = ConfigDict(frozen=True)

    events_queue: str = "jwo-events"
    reports_queue: str = "jwo-report-notifications"
    eventfeed_queue: str = "jwo-eventfeed"
    dlq_suffix: str = "-dlq"
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    visibility_timeout_seconds: int = Field(default=30, ge=0, le=43200)
    receive_wait_seconds: int = Field(default=20, ge=0, le=20)
    reports_bucket: str = "jwo-reports"
    lake_bucket: str = "jwo-lake"
    reports_topic: str = "jwo-report-notifications"
    event_bus: str = "jwo-eventfeed"
    event_source: str = "jwo.eventfeed"
    event_rule: str = "jwo-eventfeed-to-sqs"

    def dlq(self, queue: str) -> str:
        return f"{queue}{self.dlq_suffix}"

    def event_pattern(self) -> dict[str, list[str]]:
        """Every event of the feed's source: CART and PAYMENT, and any detail-type Amazon adds later,
        which ingest records in `unknown_events` instead of the rule dropping it (SPEC §3.2)."""
        return {"source": [self.event_source]}


class Resources(BaseModel):
    """Where the pipeline's resources are, as the stages need them."""

    model_config = ConfigDict(frozen=True)

    events: QueueRef
    reports: QueueRef
    eventfeed: QueueRef
    reports_bucket: str
    lake_bucket: str
    reports_topic_arn: str
    event_bus_name: str
    event_rule_name: str


class ResourceMissingError(Exception):
    """Terminal: resources the pipeline needs do not exist at the endpoint (nothing was created)."""

    def __init__(self, missing: list[str], endpoint: AwsEndpoint) -> None:
        self.missing = tuple(missing)
        where = endpoint.endpoint_url or f"AWS {endpoint.region}"
        super().__init__(
            f"{len(missing)} AWS resource(s) missing at {where}: {', '.join(missing)}. "
            "Create them with infra/terraform (real AWS) or provision() (an emulator)."
        )


def receive_config(wait_seconds: int) -> AioConfig:
    """Client config for a queue consumer: a long poll of `wait_seconds` must fit in the read timeout."""
    return AioConfig(connect_timeout=2, read_timeout=wait_seconds + 10, retries={"max_attempts": 3, "mode": "standard"})


# --------------------------------------------------------------------------- embedded emulator


class EmbeddedAws:
    """moto in server mode on a loopback port: in a background thread of this process, or, with
    `separate_process=True`, in a child process of its own.

    The child process is what `jwo up` and `jwo demo` use: moto parses and answers every SQS call in
    pure Python, and in our process that work would compete with the connectors for the GIL and
    push their answers from about a millisecond to tens of milliseconds. The child exits with
    `stop()`, or by itself when this process dies.

    In this process, moto keeps its state in process-global backends: every moto server and
    `mock_aws` in one process shares it. `stop()` therefore resets that state (unless
    `reset_on_stop=False`), so nothing leaks into the next user; do not run two of these at once if
    either relies on its data surviving.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = EMBEDDED_REGION,
        reset_on_stop: bool = True,
        separate_process: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        self._region = region
        self._reset_on_stop = reset_on_stop
        self._separate_process = separate_process
        self._server: _MotoServer | None = None
        self._child: _MotoChild | None = None
        self._bound: tuple[str, int] | None = None

    @property
    def endpoint(self) -> AwsEndpoint:
        host, port = self._address()
        return AwsEndpoint(
            endpoint_url=f"http://{host}:{port}",
            region=self._region,
            access_key_id=EMBEDDED_CREDENTIAL,
            secret_access_key=EMBEDDED_CREDENTIAL,
        )

    @property
    def port(self) -> int:
        return self._address()[1]

    def start(self) -> Self:
        if self._server is not None or self._child is not None:
            return self
        if self._separate_process:
            child = _MotoChild.start(self._host, self._port)
            self._child, self._bound = child, child.address
            return self
        # werkzeug logs every request at INFO (and adds a stderr handler if none is configured);
        # our server's handler does not log requests at all, and this quiets werkzeug elsewhere too.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = _MotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server, self._bound = server, (host, port)
        return self

    def reset(self) -> None:
        """Forget every resource moto holds (all moto servers in this process share them)."""
        conn = http.client.HTTPConnection(*self._address(), timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"moto reset failed: HTTP {response.status}")
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop serving, join the thread and close the listening socket. Safe to call twice."""
        child = self._child
        if child is not None:
            self._child, self._bound = None, None
            child.stop()  # moto's state goes with the process
            return
        server = self._server
        if server is None:
            return
        try:
            if self._reset_on_stop:
                self.reset()
        finally:
            self._server, self._bound = None, None
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _address(self) -> tuple[str, int]:
        if self._bound is None:
            raise RuntimeError("EmbeddedAws is not running; call start() first")
        return self._bound


_CHILD_START_SECONDS = 60.0


def _serve_moto_child(host: str, port: int, conn: Connection, parent_pid: int) -> None:
    """Child process body: serve moto until the parent says stop, closes the pipe, or dies."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    try:
        server = _MotoServer(ip_address=host, port=port, verbose=False)
        server.start()
    except BaseException as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
        raise SystemExit(1) from None
    conn.send(("ready", server.get_host_and_port()))
    try:
        while os.getppid() == parent_pid:
            if conn.poll(0.5):  # a message, or EOF when the parent closed its end
                break
    finally:
        server.stop()


class _MotoChild:
    """A moto server in a spawned child process (see `EmbeddedAws`)."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection, address: tuple[str, int]):
        self._process = process
        self._conn = conn
        self.address = address

    @classmethod
    def start(cls, host: str, port: int) -> _MotoChild:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve_moto_child, args=(host, port, theirs, os.getpid()), name="jwo-moto", daemon=True
        )
        process.start()
        theirs.close()
        try:
            if not ours.poll(_CHILD_START_SECONDS):
                raise RuntimeError(f"the moto server process did not start within {_CHILD_START_SECONDS:.0f}s")
            kind, detail = ours.recv()
        except EOFError:
            process.join()
            ours.close()
            raise RuntimeError(f"the moto server process exited during start-up (code {process.exitcode})") from None
        except BaseException:
            process.kill()
            process.join()
            ours.close()
            raise
        if kind != "ready":
            process.join()
            ours.close()
            raise RuntimeError(f"moto server failed to start on {host}:{port}: {detail}")
        bound_host, bound_port = detail
        return cls(process, ours, (str(bound_host), int(bound_port)))

    def stop(self) -> None:
        with suppress(OSError):  # already gone
            self._conn.send("stop")
        self._conn.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class _QuietRequestHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request is noise for an embedded emulator; errors are still logged."""


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher with the backend for a host name remembered: moto looks it up for every request by
    trying each service's URL patterns in turn, twice a request, a pure function of the host name."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self._backend_of: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        try:
            return self._backend_of[host]
        except KeyError:
            backend = self._backend_of[host] = super().get_backend_for_host(host)
            return backend


@functools.cache
def _speed_up_moto_sqs() -> None:
    """moto 5's SQS builds every queue attribute for each message it is sent (to read ContentBasedDeduplication):
    among them three counts that look at every message in the queue and ask each for the time twice, through
    `unix_time_millis`, which builds and subtracts datetimes (≈ 3 µs a call); and each attribute's name goes
    through `camelcase_to_underscores`, a character loop. Together about three quarters of its CPU per
    SendMessageBatch entry with ≈ 100 messages queued (py-spy). Both are replaced in moto's SQS module by
    equivalents: the current time from `time.time()` (the same clock, to the microsecond moto keeps; `unix_time`
    too, for the receives) and the name conversion cached (a pure function). What moto stores and answers does
    not change."""
    import moto.sqs.models
    from moto.core.utils import camelcase_to_underscores, unix_time, unix_time_millis

    def fast_unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else unix_time(dt)

    def fast_unix_time_millis(dt: datetime | None = None) -> float:
        return time.time() * 1000.0 if dt is None else unix_time_millis(dt)

    names = vars(moto.sqs.models)
    names["camelcase_to_underscores"] = functools.cache(camelcase_to_underscores)
    names["unix_time"] = fast_unix_time
    names["unix_time_millis"] = fast_unix_time_millis


class _MotoServer(ThreadedMotoServer):
    """moto's threaded server, with these changes to its `_server_entry` and `stop`:

    - a failed bind (port taken) is raised by `start()` instead of hanging it forever;
    - `stop()` returns within ~50 ms (moto serves with werkzeug's default 0.5 s poll interval);
    - `stop()` also closes the listening socket, so the port is released;
    - requests are not logged;
    - the backend for each host name is looked up once (`_Dispatcher`), and SQS's attribute names are
      converted once each (`_speed_up_moto_sqs`).
    """

    _POLL_SECONDS = 0.05

    def __init__(self, ip_address: str, port: int, verbose: bool) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=verbose)
        self._startup_error: BaseException | None = None

    def start(self) -> None:
        super().start()
        error = self._startup_error
        if error is not None:
            if self._thread is not None:
                self._thread.join()
            # werkzeug prints a bind failure and calls sys.exit(1); the OSError is the exit's context.
            if isinstance(error, SystemExit) and isinstance(error.__context__, OSError):
                raise error.__context__
            raise RuntimeError(f"moto server failed to start on {self._ip_address}:{self._port}") from error

    def _server_entry(self) -> None:
        try:
            _speed_up_moto_sqs()
            self._server = make_server(
                self._ip_address,
                self._port,
                _Dispatcher(),
                threaded=True,
                request_handler=_QuietRequestHandler,
            )
        except BaseException as error:
            self._startup_error = error
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=self._POLL_SECONDS)

    def stop(self) -> None:
        wsgi_server = self._server
        super().stop()
        if wsgi_server is not None:
            wsgi_server.server_close()


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class _Clients:
    sqs: SQSClient
    s3: S3Client
    sns: SNSClient
    events: EventBridgeClient


@functools.cache
def _data_loader() -> Any:
    """botocore's loader of API models, shared: each new session otherwise re-parses ~1 MB of JSON."""
    return get_session().get_component("data_loader")


def _session() -> AioSession:
    session = get_session()
    session.register_component("data_loader", _data_loader())
    return session


@asynccontextmanager
async def _clients(endpoint: AwsEndpoint) -> AsyncIterator[_Clients]:
    session = _session()
    kwargs = endpoint.client_kwargs()
    async with AsyncExitStack() as stack:
        yield _Clients(
            sqs=await stack.enter_async_context(session.create_client("sqs", **kwargs)),
            s3=await stack.enter_async_context(session.create_client("s3", **kwargs)),
            sns=await stack.enter_async_context(session.create_client("sns", **kwargs)),
            events=await stack.enter_async_context(session.create_client("events", **kwargs)),
        )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --------------------------------------------------------------------------- provision


async def provision(endpoint: AwsEndpoint, names: ResourceNames) -> Resources:
    """Create (or converge) every resource; running it again changes nothing and returns the same."""
    async with _clients(endpoint) as c:
        dlqs, topic_arn, _, _, _ = await asyncio.gather(
            asyncio.gather(
                *(
                    _ensure_queue(c.sqs, names.dlq(q), {"MessageRetentionPeriod": str(_DLQ_RETENTION_SECONDS)})
                    for q in (names.events_queue, names.reports_queue, names.eventfeed_queue)
                )
            ),
            _ensure_topic(c.sns, names.reports_topic),
            _ensure_event_bus(c.events, names.event_bus),
            _ensure_bucket(c.s3, names.reports_bucket, endpoint.region),
            _ensure_bucket(c.s3, names.lake_bucket, endpoint.region),
        )
        (events_dlq_url, events_dlq_arn), (reports_dlq_url, reports_dlq_arn), (feed_dlq_url, feed_dlq_arn) = dlqs
        rule_arn = (
            await c.events.put_rule(
                Name=names.event_rule,
                EventBusName=names.event_bus,
                EventPattern=json.dumps(names.event_pattern()),
                State="ENABLED",
                Description="Amazon JWO Event Feed (CART, PAYMENT, anything new) to the eventfeed queue",
            )
        )["RuleArn"]

        (events_url, _), (reports_url, reports_arn), (feed_url, feed_arn) = await asyncio.gather(
            _ensure_queue(c.sqs, names.events_queue, _main_queue_attributes(names, events_dlq_arn)),
            _ensure_queue(
                c.sqs,
                names.reports_queue,
                _main_queue_attributes(names, reports_dlq_arn, _send_policy("sns.amazonaws.com", topic_arn)),
            ),
            _ensure_queue(
                c.sqs,
                names.eventfeed_queue,
                _main_queue_attributes(names, feed_dlq_arn, _send_policy("events.amazonaws.com", rule_arn)),
            ),
        )
        await asyncio.gather(
            c.sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=reports_arn,
                Attributes={"RawMessageDelivery": "false"},
                ReturnSubscriptionArn=True,
            ),
            _ensure_target(c.events, names, feed_arn),
        )
    return Resources(
        events=QueueRef(name=names.events_queue, url=events_url, dlq_url=events_dlq_url),
        reports=QueueRef(name=names.reports_queue, url=reports_url, dlq_url=reports_dlq_url),
        eventfeed=QueueRef(name=names.eventfeed_queue, url=feed_url, dlq_url=feed_dlq_url),
        reports_bucket=names.reports_bucket,
        lake_bucket=names.lake_bucket,
        reports_topic_arn=topic_arn,
        event_bus_name=names.event_bus,
        event_rule_name=names.event_rule,
    )


def _main_queue_attributes(
    names: ResourceNames, dlq_arn: str, policy: dict[str, Any] | None = None
) -> dict[QueueAttributeNameType, str]:
    attributes: dict[QueueAttributeNameType, str] = {
        "VisibilityTimeout": str(names.visibility_timeout_seconds),
        "ReceiveMessageWaitTimeSeconds": str(names.receive_wait_seconds),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(names.max_receive_count)}),
    }
    if policy is not None:
        attributes["Policy"] = json.dumps(policy)
    return attributes


def _send_policy(service: str, source_arn: str) -> dict[str, Any]:
    """Queue policy letting one AWS service send, on behalf of one topic or rule only.

    `Resource` is "*": a queue policy applies to its own queue, and this keeps the policy independent
    of the queue's ARN (which we only learn after creating the queue).
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"Allow-{service.split('.')[0]}-SendMessage",
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sqs:SendMessage",
                "Resource": "*",
                "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
            }
        ],
    }


async def _ensure_queue(sqs: SQSClient, name: str, attributes: dict[QueueAttributeNameType, str]) -> tuple[str, str]:
    """(url, arn) of the queue, created with or converged to `attributes`."""
    try:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    else:
        await sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    found = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, found["Attributes"]["QueueArn"]


async def _ensure_topic(sns: SNSClient, name: str) -> str:
    return (await sns.create_topic(Name=name))["TopicArn"]  # CreateTopic is idempotent by name


async def _ensure_event_bus(events: EventBridgeClient, name: str) -> None:
    if name == "default":  # every account has it; it cannot be created
        return
    with suppress(events.exceptions.ResourceAlreadyExistsException):
        await events.create_event_bus(Name=name)


async def _ensure_target(events: EventBridgeClient, names: ResourceNames, queue_arn: str) -> None:
    result = await events.put_targets(
        Rule=names.event_rule,
        EventBusName=names.event_bus,
        Targets=[{"Id": _EVENTFEED_TARGET_ID, "Arn": queue_arn}],
    )
    if result.get("FailedEntryCount", 0):
        raise RuntimeError(f"put_targets on rule {names.event_rule} failed: {result.get('FailedEntries')}")


async def _ensure_bucket(s3: S3Client, name: str, region: str) -> None:
    if not await _bucket_exists(s3, name):
        try:
            if region == "us-east-1":
                await s3.create_bucket(Bucket=name)
            else:
                await s3.create_bucket(
                    Bucket=name,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    await asyncio.gather(
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        ),
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        ),
    )


async def _bucket_exists(s3: S3Client, name: str) -> bool:
    """True if the bucket exists, including one we may not list (403): access is checked on use."""
    try:
        await s3.head_bucket(Bucket=name)
    except ClientError as error:
        if _error_code(error) in {"404", "NoSuchBucket", "NotFound"}:
            return False
        if _error_code(error) == "403":
            return True
        raise
    return True


# --------------------------------------------------------------------------- resolve


async def resolve(endpoint: AwsEndpoint, names: ResourceNames) -> Resources:
    """Look every resource up by name; create nothing. Raises ResourceMissingError listing all gaps."""
    missing: list[str] = []
    queue_names = [
        names.events_queue,
        names.dlq(names.events_queue),
        names.reports_queue,
        names.dlq(names.reports_queue),
        names.eventfeed_queue,
        names.dlq(names.eventfeed_queue),
    ]
    async with _clients(endpoint) as c:
        queue_urls, reports_bucket, lake_bucket, topic_arn, bus, rule = await asyncio.gather(
            asyncio.gather(*(_queue_url(c.sqs, name) for name in queue_names)),
            _bucket_exists(c.s3, names.reports_bucket),
            _bucket_exists(c.s3, names.lake_bucket),
            _find_topic_arn(c.sns, names.reports_topic),
            _event_bus_exists(c.events, names.event_bus),
            _rule_exists(c.events, names.event_rule, names.event_bus),
        )
    missing += [f"SQS queue {name!r}" for name, url in zip(queue_names, queue_urls, strict=True) if url is None]
    missing += [
        f"S3 bucket {name!r}"
        for name, exists in ((names.reports_bucket, reports_bucket), (names.lake_bucket, lake_bucket))
        if not exists
    ]
    if topic_arn is None:
        missing.append(f"SNS topic {names.reports_topic!r}")
    if not bus:
        missing.append(f"EventBridge bus {names.event_bus!r}")
    if not rule:
        missing.append(f"EventBridge rule {names.event_rule!r} on bus {names.event_bus!r}")
    if missing or topic_arn is None:
        raise ResourceMissingError(missing, endpoint)

    urls = {name: url for name, url in zip(queue_names, queue_urls, strict=True) if url is not None}

    def ref(queue: str) -> QueueRef:
        return QueueRef(name=queue, url=urls[queue], dlq_url=urls[names.dlq(queue)])

    return Resources(
        events=ref(names.events_queue),
        reports=ref(names.reports_queue),
        eventfeed=ref(names.eventfeed_queue),
        reports_bucket=names.reports_bucket,
        lake_bucket=names.lake_bucket,
        reports_topic_arn=topic_arn,
        event_bus_name=names.event_bus,
        event_rule_name=names.event_rule,
    )


async def _queue_url(sqs: SQSClient, name: str) -> str | None:
    try:
        return (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return None


async def _find_topic_arn(sns: SNSClient, name: str) -> str | None:
    """SNS has no lookup by name: page through the account's topics."""
    async for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = topic.get("TopicArn", "")
            if arn.rsplit(":", 1)[-1] == name:
                return arn
    return None


async def _event_bus_exists(events: EventBridgeClient, name: str) -> bool:
    try:
        await events.describe_event_bus(Name=name)
    except events.exceptions.ResourceNotFoundException:
        return False
    return True


async def _rule_exists(events: EventBridgeClient, rule: str, bus: str) -> bool:
    try:
        await events.describe_rule(Name=rule, EventBusName=bus)
    except events.exceptions.ResourceNotFoundException:
        return False
    return True


# --------------------------------------------------------------------------- summaries


async def queue_depths(endpoint: AwsEndpoint, queue: QueueRef) -> tuple[int, int]:
    """(visible messages in the queue, visible messages in its dead-letter queue; 0 without one).

    Approximate, as SQS reports it; messages in flight are not counted.
    """
    async with _session().create_client("sqs", **endpoint.client_kwargs()) as sqs:
        urls = [queue.url] + ([queue.dlq_url] if queue.dlq_url else [])
        found = await asyncio.gather(
            *(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]) for url in urls)
        )
    counts = [int(result["Attributes"]["ApproximateNumberOfMessages"]) for result in found]
    return counts[0], (counts[1] if len(counts) > 1 else 0)
