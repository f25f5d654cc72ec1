"""The servers under test, each run as a process of its own (`python -m bench.harness.servers echo|jwo`).

- `echo`: the baseline. A bare FastAPI app with the four connector routes, parsing the very same
  pydantic request models (`connectors.models`) and answering a small JSON body: what any FastAPI
  service pays for HTTP, routing and validation, and nothing of ours.
- `jwo`: the full app as `jwo serve` runs it: `jwo.runtime.running(settings, connectors=True,
  consumers=False)`, i.e. embedded AWS (moto) in a child process, the connectors under uvicorn on a
  pre-bound loopback socket, the SQLite outbox and the relay draining it to the embedded SQS, and
  the JSON request log `jwo` configures (written to stderr, which the bench sends to a file).

Both are served the same way: uvicorn on the event loop `jwo serve` runs (`jwo.eventloop`: uvloop), on
a socket created with `IPPROTO_TCP` (so the loop sets TCP_NODELAY; without it every keep-alive answer
waits ~40 ms for the client's delayed ACK). Once listening, a server prints `READY {"port": ...}` on stdout (the jwo
server adds its embedded SQS endpoint and events queue); SIGTERM or SIGINT stops it (the jwo server
drains its outbox to the queue first).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Response

from bench.harness import ECHO_STATUS
from connectors import models
from connectors.settings import ConnectorSettings
from jwo import eventloop, logs
from jwo.runtime import running
from jwo.settings import Settings


def echo_app() -> FastAPI:
    app = FastAPI(title="echo baseline")

    def ok(request_id: str, status: int) -> Response:
        return Response(orjson.dumps({"requestId": request_id}), status_code=status, media_type="application/json")

    @app.post("/v1/identity/scan")
    async def resolve_scan(body: models.ResolveScanRequest) -> Response:
        return ok(body.requestId, ECHO_STATUS["scan"])

    @app.post("/v1/identity/identity-keys")
    async def verify_identity_keys(body: models.VerifyIdentityKeysRequest) -> Response:
        return ok(body.requestId, ECHO_STATUS["identity_keys"])

    @app.post("/v1/identity/shopper", status_code=201)
    async def get_shopper(body: models.GetShopperRequest) -> Response:
        return ok(body.requestId, ECHO_STATUS["shopper"])

    @app.post("/v1/order/purchases", status_code=201)
    async def create_purchases(body: models.CreatePurchasesRequest) -> Response:
        return ok(body.requestId, ECHO_STATUS["purchases"])

    return app


def listen_loopback() -> socket.socket:
    """A listening socket on a free loopback port, created as `jwo.runtime` creates its own."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _stop_requested() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _ready(info: dict[str, Any]) -> None:
    sys.stdout.write(f"READY {json.dumps(info)}\n")
    sys.stdout.flush()


async def serve_echo() -> None:
    sock = listen_loopback()
    server = uvicorn.Server(
        uvicorn.Config(echo_app(), log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the echo server stopped during start-up")
        await asyncio.sleep(0.01)
    gc.freeze()  # as `jwo serve` does once it listens
    _ready({"port": sock.getsockname()[1]})
    await _stop_requested()
    server.should_exit = True
    await task


def jwo_settings(home: Path, rate_limit_per_store: float, log_level: str) -> Settings:
    """`jwo serve`'s settings on the embedded AWS, with state under `home` and a free loopback port."""
    connectors = ConnectorSettings(host="127.0.0.1", port=0, rate_limit_per_store=rate_limit_per_store)
    return Settings(home=home, aws_mode="embedded", connectors=connectors, log_level=log_level, log_format="json")


async def serve_jwo(settings: Settings) -> None:
    async with running(settings, connectors=True, consumers=False) as pipeline:
        _ready(
            {
                "port": int(pipeline.base_url.rsplit(":", 1)[1]),
                "sqs": pipeline.aws.endpoint.client_kwargs(),
                "events_queue_url": pipeline.aws.resources.events.url,
            }
        )
        await _stop_requested()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a server under test")
    servers = parser.add_subparsers(dest="server", required=True)
    servers.add_parser("echo", help="bare FastAPI + pydantic baseline")
    jwo = servers.add_parser("jwo", help="the connectors as `jwo serve` runs them")
    jwo.add_argument("--home", type=Path, required=True, help="JWO_HOME (retailer.db already loaded)")
    jwo.add_argument("--rate-limit-per-store", type=float, required=True)
    jwo.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.server == "echo":
        eventloop.run(serve_echo())
    else:
        settings = jwo_settings(args.home, args.rate_limit_per_store, args.log_level)
        logs.configure(settings.log_level, settings.log_format)
        eventloop.run(serve_jwo(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
