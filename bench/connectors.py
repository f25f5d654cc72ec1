"""Connector throughput and latency on loopback, against a bare FastAPI + pydantic baseline.

Run: `.venv/bin/python bench/connectors.py [--duration 30]` (also part of `make bench`). Prints one
`name value` line per figure on stdout; progress goes to stderr.

What runs, each in a process of its own (see `bench/harness/`), bound to 127.0.0.1 only:
- the baseline: an echo app parsing the same request models (`connectors.models`);
- ours: the connectors as `jwo serve` runs them (`jwo.runtime.running(..., connectors=True,
  consumers=False)`: embedded AWS in a child process, outbox on, relay draining to the embedded SQS)
  with a fresh JWO_HOME in a temp dir, the simulator's shoppers and catalog imported first. With no
  consumer in the process, the bench purges the embedded events queue itself (see `QueuePurger`);
- the load generator, on raw asyncio keep-alive connections (`bench/harness/loadgen.py`).

The mix: 70 % identity calls (25 % ResolveScan, 35 % VerifyIdentityKeys, 10 % GetShopper) and 30 %
CreatePurchases with 5-line carts of real catalog items; every request carries fresh idempotency keys,
so each one is a real decision and an outbox commit, never a replay. Both servers stay up and take
turns: a warm-up each, the latency at a fixed offered rate (open loop, measured from each request's
scheduled send time), then the maximum throughput (closed loop) `--repeats` times, echo and jwo
alternating, medians reported. After each jwo phase the bench waits until the relay has drained the
outbox, so every phase starts from the same state. CPU use is reported in % of one core per process
(`other`: the rest of the machine, i.e. work that is not the bench's). Goals (the performance
issue): throughput at least 0.70 of the baseline's; at 1,000 requests/s, p99 at most 25 ms, no errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path and this file would shadow the `connectors` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import base64
import contextlib
import http.client
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from bench.harness import ECHO_STATUS
from bench.harness.loadgen import PLACEHOLDER, Template, write_templates
from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.imports import import_catalog_file, import_shoppers_file
from simulator.files import write_retailer_files
from simulator.scenario import PATHS, SCAN_TYPES, CatalogItem, Endpoint, Scenario, ScenarioConfig, build_scenario

ROOT = Path(__file__).resolve().parents[1]
MIX = {"scan": 25, "identity_keys": 35, "shopper": 10, "purchases": 30}
"""Percent of requests per route."""
CART_LINES = 5
T_ENTRY, T_EXIT = "2026-11-20T11:30:00Z", "2026-11-20T11:45:00Z"
GOAL_RATIO, GOAL_P99_MS = 0.70, 25.0
READY_WITHIN = 90.0
DRAIN_WITHIN = 300.0


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def figure(name: str, value: object) -> None:
    sys.stdout.write(f"{name} {value}\n")
    sys.stdout.flush()


# --- the retailer's data and the requests ------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def load_retailer(scenario: Scenario, home: Path) -> tuple[int, int]:
    """Import the scenario's shoppers and catalog into `home`'s retailer store, as `jwo ... import` does."""
    files = write_retailer_files(scenario, home / "retailer-files")
    store = SqliteRetailerStore(home / "retailer.db")
    try:
        return import_shoppers_file(store, files.shoppers), import_catalog_file(store, files.catalog)
    finally:
        store.close()


def _template(route: str, body: dict[str, Any], jwo_status: int) -> Template:
    text = json.dumps(body, separators=(",", ":"))
    return Template(route, PATHS[cast(Endpoint, route)], text, {"jwo": jwo_status, "echo": ECHO_STATUS[route]})


def build_templates(scenario: Scenario, count: int, seed: int) -> list[Template]:
    """`count` requests in the MIX, shuffled; the status jwo must answer each with is worked out here."""
    rng = random.Random(seed)
    shoppers = list(scenario.shoppers)
    active = [s for s in shoppers if s.status == "active"]
    with_phone = [s for s in shoppers if s.phone_number]
    catalog: dict[str, list[CatalogItem]] = {}
    for item in scenario.catalog:
        catalog.setdefault(item.store_id, []).append(item)
    routes = [route for route, pct in MIX.items() for _ in range(round(count * pct / 100))]
    rng.shuffle(routes)
    out: list[Template] = []
    for route in routes:
        store = rng.choice(scenario.stores)
        body: dict[str, Any]
        if route == "scan":
            shopper = rng.choice(shoppers)
            scan = {
                "id": PLACEHOLDER,
                "timestamp": T_ENTRY,
                "location": "ENTRY",
                "value": b64(shopper.identity_key),
                "channel": "OPTICAL",
            }
            out.append(_template(route, {"requestId": PLACEHOLDER, "storeId": store, "scanEvent": scan}, 200))
        elif route == "identity_keys":
            shopper = rng.choice(shoppers)
            body = {
                "requestId": PLACEHOLDER,
                "identityKey": b64(shopper.identity_key),
                "storeId": store,
                "authEvent": {"id": PLACEHOLDER, "timestamp": T_ENTRY, "location": "ENTRY"},
                "keyChannel": "OPTICAL",
            }
            out.append(_template(route, body, 200 if shopper.status == "active" else 401))
        elif route == "shopper":
            by_phone = rng.random() < 0.5 and bool(with_phone)
            shopper = rng.choice(with_phone if by_phone else shoppers)
            key = shopper.phone_number if by_phone and shopper.phone_number else b64(shopper.identity_key)
            body = {
                "requestId": PLACEHOLDER,
                "shopperKey": key,
                "shopperKeyType": "PHONE_NUMBER" if by_phone else "QR_CODE",
                "storeId": store,
                "timestamp": T_ENTRY,
            }
            out.append(_template(route, body, 201))
        else:
            shopper = rng.choice(active)
            auth: dict[str, Any] = {"id": PLACEHOLDER, "timestamp": T_ENTRY, "location": "ENTRY"}
            if rng.random() < 0.2:
                auth["payloadType"] = "FINANCIAL"
            else:
                auth["payloadType"] = "SCAN_CODE"
                auth["scanResult"] = {"id": shopper.shopper_id, "type": SCAN_TYPES[shopper.visitor_type]}
            lines = [_cart_line(rng, item) for item in rng.sample(catalog[store], CART_LINES)]
            body = {
                "requestId": PLACEHOLDER,
                "idempotentShoppingTripId": PLACEHOLDER,
                "storeId": store,
                "shoppingTrip": {"startTime": T_ENTRY, "endTime": T_EXIT, "authEvents": [auth]},
                "cartItems": lines,
            }
            out.append(_template(route, body, 201))
    return out


def _cart_line(rng: random.Random, item: CatalogItem) -> dict[str, Any]:
    if item.sold_by_weight:
        quantity = {"value": f"{rng.randint(100, 1500) / 1000:.3f}", "unit": "KG"}
    else:
        quantity = {"value": str(rng.choice((1, 1, 1, 2, 3))), "unit": "EA"}
    line: dict[str, Any] = {"lineItemId": PLACEHOLDER, "quantity": quantity}
    if rng.random() < 0.4:
        code = rng.choice(item.barcodes)
        return line | {"id": code, "type": "SCANCODE", "externalIdentifiers": [{"id": code, "type": "UPC"}]}
    return line | {"id": item.sku, "type": "SKU"}


# --- processes ---------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    info: dict[str, Any] = field(default_factory=dict)
    """What the server said when it was ready: its port (and, for jwo, its embedded SQS)."""
    lines: queue.SimpleQueue[bytes | None] = field(default_factory=queue.SimpleQueue)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def watch(self) -> list[str]:
        """`--watch` arguments for the load generator: this server and, for jwo, its AWS and relay children
        (started in that order, so by increasing pid)."""
        out = [f"server={self.process.pid}"]
        children = sorted(p for p in _children(self.process.pid) if "resource_tracker" not in _cmdline(p))
        out += [f"{name}={pid}" for name, pid in zip(("aws", "relay"), children, strict=False)]
        return out


class Processes:
    """Every child the bench starts, each in a session of its own, all stopped on the way out."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._servers: list[Server] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self._servers):
            self.stop(server)

    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Server:
        log = self._logs / f"{name}-server.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.harness.servers", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        server = Server(name, process, log)
        self._servers.append(server)
        assert process.stdout is not None
        stdout = process.stdout

        def pump() -> None:  # keep reading so the child never blocks on a full pipe
            for line in stdout:
                server.lines.put(line)
            server.lines.put(None)

        threading.Thread(target=pump, name=f"{name}-stdout", daemon=True).start()
        deadline = time.monotonic() + READY_WITHIN
        while True:
            try:
                line = server.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(server, f"did not start within {READY_WITHIN:.0f}s")
            if line is None:
                self._fail(server, f"exited during start-up (code {process.wait()})")
            if line.startswith(b"READY "):
                server.info = json.loads(line[6:])
                return server

    def _fail(self, server: Server, why: str) -> NoReturn:
        self.stop(server)
        tail = server.log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"the {server.name} server {why}; end of its log:\n" + "\n".join(tail))

    def stop(self, server: Server, grace: float = 30.0) -> None:
        """SIGTERM (the jwo server drains its outbox and stops its AWS child), then kill the whole group."""
        if server not in self._servers:
            return
        self._servers.remove(server)
        process = server.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                say(f"{server.name} server did not stop within {grace:.0f}s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of its session (the moto child)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


class QueuePurger:
    """Empties the embedded events queue every `every` seconds, standing in for the consumers that
    `jwo serve` leaves to other processes (`jwo consume`).

    Without it the queue only grows, and moto 5's SendMessage gets slower with every message queued:
    for each message sent it builds all the queue's attributes, ApproximateNumberOfMessages among
    them, which scans every message in the queue (measured: ~100 ms per SendMessageBatch at 1,000
    queued, ~1.2 s at 5,000). The relay then falls behind for good, which says nothing about the
    connectors. PurgeQueue more often than every 60 s needs MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR
    set to false in the emulator's environment.
    """

    ENV = {"MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}

    def __init__(self, sqs: dict[str, Any], queue_url: str, every: float) -> None:
        import botocore.session

        self._client: Any = botocore.session.get_session().create_client("sqs", **sqs)
        self._queue_url = queue_url
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-purger", daemon=True)
        self.failures = 0

    def __enter__(self) -> QueuePurger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._client.purge_queue(QueueUrl=self._queue_url)
            except Exception as exc:  # the bench goes on; the figures show what a full queue costs
                self.failures += 1
                if self.failures == 1:
                    say(f"purging the events queue failed: {exc}")


def run_loadgen(server: Server, requests: Path, target: str, args: Sequence[str], budget: float) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.harness.loadgen",
        "--port",
        str(server.port),
        "--requests",
        str(requests),
        "--target",
        target,
        *(f"--watch={w}" for w in server.watch()),
        *args,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the jwo server's own view (/metrics) --------------------------------------------------------------


def metrics_text(port: int) -> str:
    """The jwo server's /metrics page, as Prometheus would scrape it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics, by name."""
    text = metrics_text(port)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def histogram(port: int, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts from /metrics, by upper bound (`+Inf` as infinity)."""
    text = metrics_text(port)
    prefix = f'{name}_bucket{{le="'
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            bound, _, value = line[len(prefix) :].partition('"} ')
            buckets[float(bound)] = float(value)
    return buckets


def commit_times(before: dict[float, float], after: dict[float, float]) -> tuple[int, float, int, float]:
    """Between two readings of `jwo_outbox_commit_seconds`: commits, the bucket bound under which 99% of them
    fell (seconds), how many took over 25 ms, and the bound of the slowest one's bucket."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    p99 = next((bound for bound, n in counts.items() if n >= 0.99 * total), float("inf"))
    under_25ms = max((n for bound, n in counts.items() if bound <= 0.025), default=0.0)
    slowest = next((bound for bound, n in counts.items() if n >= total), float("inf"))
    return int(total), p99, int(total - under_25ms), slowest


def wait_drained(server: Server) -> tuple[int, float]:
    """Outbox messages not yet on the queue now, and the seconds the relay took to send them all."""
    started = time.monotonic()
    backlog = int(metrics(server.port).get("jwo_outbox_depth", 0))
    while True:
        depth = metrics(server.port).get("jwo_outbox_depth", 0)
        if depth == 0:
            return backlog, time.monotonic() - started
        if time.monotonic() - started > DRAIN_WITHIN:
            raise RuntimeError(f"the relay did not drain the outbox within {DRAIN_WITHIN:.0f}s ({depth:.0f} left)")
        time.sleep(0.2)


# --- the phases ------------------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    rate: float
    max_duration: float
    warmup: float
    connections: int
    open_connections: int
    repeats: int
    rate_limit: float
    log_level: str
    echo_latency: bool
    purge_every: float


@dataclass
class Target:
    """A server under test and what was measured on it."""

    name: str
    server: Server
    requests: Path
    drains: bool
    """Whether to wait for its outbox to drain after each phase (jwo)."""
    latency: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    backlogs: list[int] = field(default_factory=list)
    drain_seconds: list[float] = field(default_factory=list)

    @property
    def max_rps(self) -> float:
        return float(statistics.median(r["rps"] for r in self.runs))

    @property
    def cpu_us_per_request(self) -> float:
        """CPU the server process (all its threads) spent per answer at maximum throughput: unlike
        requests/s, this hardly depends on how much of the machine other work leaves to the bench."""
        per_run = [r["cpu_pct"]["server"] * 1e4 / r["rps"] for r in self.runs if r["rps"] and "server" in r["cpu_pct"]]
        return float(statistics.median(per_run)) if per_run else 0.0

    def load(self, args: Sequence[str], budget: float) -> dict[str, Any]:
        return run_loadgen(self.server, self.requests, self.name, args, budget)

    def settle(self) -> tuple[int, float]:
        """Wait for the relay to empty the outbox: (messages pending at first, seconds it took)."""
        return wait_drained(self.server) if self.drains else (0, 0.0)


def warm_up(t: Target, opts: Options) -> None:
    say(f"{t.name}: warm-up ({opts.warmup:.0f}s closed loop)")
    args = [f"--connections={opts.connections}", "closed", "--warmup=0", f"--duration={opts.warmup}"]
    t.load(args, budget=opts.warmup + 60)
    t.settle()


def measure_latency(t: Target, opts: Options) -> None:
    say(f"{t.name}: {opts.rate:.0f} requests/s offered for {opts.duration:.0f}s (open loop)")
    args = [f"--connections={opts.open_connections}", "open", f"--rate={opts.rate}", f"--duration={opts.duration}"]
    t.latency = t.load(args, budget=opts.duration + 60)
    t.settle()


def measure_max(t: Target, opts: Options, n: int) -> None:
    say(f"{t.name}: maximum throughput {n}/{opts.repeats}: {opts.connections} connections, {opts.max_duration:.0f}s")
    args = [f"--connections={opts.connections}", "closed", "--warmup=1", f"--duration={opts.max_duration}"]
    run = t.load(args, budget=opts.max_duration + 60)
    t.runs.append(run)
    say(f"{t.name}: {run['rps']:.0f} requests/s, {run['errors']} errors, cpu % of a core {run['cpu_pct']}")
    backlog, seconds = t.settle()
    if t.drains:
        t.backlogs.append(backlog)
        t.drain_seconds.append(seconds)


def report_latency(t: Target, rate: float) -> None:
    run = t.latency
    if run is None:
        return
    at = f"at_{rate:.0f}rps"
    lat = run["latency_ms"]
    for pct in ("p50", "p90", "p99", "max"):
        figure(f"{t.name}_{pct}_ms_{at}", f"{lat[pct]:.2f}")
    figure(f"{t.name}_errors_{at}", run["errors"])
    figure(f"{t.name}_achieved_rps_{at}", f"{run['rps']:.0f}")
    figure(f"{t.name}_loadgen_own_lag_p99_ms_{at}", f"{run['timer_lag_ms']['p99']:.2f}")
    figure(f"{t.name}_loadgen_own_lag_max_ms_{at}", f"{run['timer_lag_ms']['max']:.2f}")
    figure(f"{t.name}_client_send_lag_p99_ms_{at}", f"{run['send_lag_ms']['p99']:.2f}")
    figure(f"{t.name}_client_max_waiting_for_a_connection_{at}", run["max_waiting"])
    for who, pct in sorted(run["cpu_pct"].items()):
        figure(f"{t.name}_cpu_pct_{who}_{at}", pct)
    if run["errors"]:
        detail = json.dumps(run["statuses"], separators=(",", ":"))
        figure(
            f"{t.name}_error_detail_{at}",
            f"bad_status={run['bad_status']} timeouts={run['timeouts']} lost={run['lost']} statuses={detail}",
        )


def report_max(t: Target) -> None:
    runs = t.runs
    figure(f"{t.name}_max_rps", f"{t.max_rps:.0f}")
    figure(f"{t.name}_max_rps_runs", " ".join(f"{r['rps']:.0f}" for r in runs))
    figure(f"{t.name}_p50_ms_at_max", f"{statistics.median(r['latency_ms']['p50'] for r in runs):.2f}")
    figure(f"{t.name}_p99_ms_at_max", f"{statistics.median(r['latency_ms']['p99'] for r in runs):.2f}")
    figure(f"{t.name}_errors_at_max", sum(r["errors"] for r in runs))
    for who in sorted(runs[0]["cpu_pct"]):
        figure(f"{t.name}_cpu_pct_{who}_at_max", round(statistics.median(r["cpu_pct"].get(who, 0.0) for r in runs), 1))
    if t.cpu_us_per_request:
        figure(f"{t.name}_server_cpu_us_per_request_at_max", f"{t.cpu_us_per_request:.0f}")
    failed = [r for r in runs if r["errors"]]
    if failed:
        figure(f"{t.name}_error_detail_at_max", json.dumps(failed[0]["statuses"], separators=(",", ":")))


def run_bench(opts: Options, work: Path) -> bool:
    home = work / "jwo-home"
    scenario = build_scenario(ScenarioConfig(seed=11, shoppers=2000, stores=3, skus_per_store=40))
    shoppers, items = load_retailer(scenario, home)
    requests = work / "requests.json"
    write_templates(requests, build_templates(scenario, count=4000, seed=5))
    say(f"JWO_HOME {home}: imported {shoppers} shoppers and {items} catalog items")

    figure("cpu_count", os.cpu_count())
    figure("mix_pct", " ".join(f"{route}={pct}" for route, pct in MIX.items()))
    figure("cart_lines", CART_LINES)
    figure("connections_at_max", opts.connections)
    figure("connections_open_loop", opts.open_connections)
    figure("jwo_rate_limit_per_store", f"{opts.rate_limit:.0f}")
    figure("jwo_log_level", opts.log_level)
    figure("jwo_events_queue_purged_every_s", opts.purge_every if opts.purge_every > 0 else "never")

    with Processes(work) as procs, contextlib.ExitStack() as purging:
        say("starting the echo baseline, and jwo (embedded AWS, connectors, outbox, relay)")
        echo = Target("echo", procs.start("echo", ["echo"]), requests, drains=False)
        jwo_args = [
            "jwo",
            f"--home={home}",
            f"--rate-limit-per-store={opts.rate_limit}",
            f"--log-level={opts.log_level}",
        ]
        jwo = Target("jwo", procs.start("jwo", jwo_args, env=QueuePurger.ENV), requests, drains=True)
        if opts.purge_every > 0:
            info = jwo.server.info
            purging.enter_context(QueuePurger(info["sqs"], info["events_queue_url"], opts.purge_every))
        # Both servers stay up and their runs alternate, so a machine that gets busier or quieter
        # during the bench (other work on a shared box) weighs on both alike.
        for t in (echo, jwo):
            warm_up(t, opts)
        if opts.echo_latency:
            measure_latency(echo, opts)
        commits_before = histogram(jwo.server.port, "jwo_outbox_commit_seconds")
        measure_latency(jwo, opts)
        commits = commit_times(commits_before, histogram(jwo.server.port, "jwo_outbox_commit_seconds"))
        for n in range(1, opts.repeats + 1):
            for t in (echo, jwo):
                measure_max(t, opts, n)
        final = metrics(jwo.server.port)

    report_max(echo)
    report_latency(echo, opts.rate)
    report_max(jwo)
    ratio = jwo.max_rps / echo.max_rps if echo.max_rps else 0.0
    figure("jwo_vs_echo_ratio", f"{ratio:.2f}")
    pairs = " ".join(f"{j['rps'] / e['rps']:.2f}" for e, j in zip(echo.runs, jwo.runs, strict=True) if e["rps"])
    figure("jwo_vs_echo_ratio_runs", pairs)
    if jwo.cpu_us_per_request:
        figure("jwo_vs_echo_cpu_per_request_ratio", f"{echo.cpu_us_per_request / jwo.cpu_us_per_request:.2f}")
    figure("jwo_outbox_backlog_after_max", " ".join(str(b) for b in jwo.backlogs))
    figure("jwo_outbox_drain_seconds_after_max", " ".join(f"{s:.1f}" for s in jwo.drain_seconds))
    rates = [b / s for b, s in zip(jwo.backlogs, jwo.drain_seconds, strict=True) if s > 1]
    if rates:
        figure("jwo_relay_drain_msgs_per_s", f"{statistics.median(rates):.0f}")
    report_latency(jwo, opts.rate)
    count, p99_s, over_25ms, slowest_s = commits
    at = f"at_{opts.rate:.0f}rps"
    figure(f"jwo_outbox_commits_{at}", count)  # the outbox's COMMITs (its WAL fsyncs) during that run
    figure(f"jwo_outbox_commit_p99_ms_{at}", f"<= {p99_s * 1000:g} (histogram bucket)")
    figure(f"jwo_outbox_commits_over_25ms_{at}", over_25ms)
    figure(f"jwo_outbox_commit_max_ms_{at}", f"<= {slowest_s * 1000:g} (histogram bucket)")
    figure("jwo_relay_sent", f"{final.get('jwo_relay_sent', 0):.0f}")
    figure("jwo_relay_errors", f"{final.get('jwo_relay_errors', 0):.0f}")

    assert jwo.latency is not None
    p99, errors = jwo.latency["latency_ms"]["p99"], jwo.latency["errors"]
    met = {
        f"goal_ratio_ge_{GOAL_RATIO:.2f}": ratio >= GOAL_RATIO,
        f"goal_p99_le_{GOAL_P99_MS:.0f}ms_at_{opts.rate:.0f}rps": p99 <= GOAL_P99_MS,
        f"goal_no_errors_at_{opts.rate:.0f}rps": errors == 0,
    }
    for name, ok in met.items():
        figure(name, "met" if ok else "MISSED")
    return all(met.values())


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind, so every child is stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the open-loop latency run")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s offered in the latency run")
    parser.add_argument("--max-duration", type=float, default=10.0, help="seconds of each throughput run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=64, help="connections of the throughput runs")
    parser.add_argument("--open-connections", type=int, default=64, help="connections of the latency run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per server (median reported)")
    parser.add_argument("--rate-limit-per-store", type=float, default=1_000_000.0)
    parser.add_argument("--jwo-log-level", default="INFO", help="jwo's log level (INFO, as `jwo serve` runs)")
    parser.add_argument(
        "--purge-every",
        type=float,
        default=0.25,
        help="seconds between purges of the embedded events queue (0: never; see QueuePurger)",
    )
    parser.add_argument("--no-echo-latency", action="store_true", help="skip the baseline's open-loop run")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, JWO_HOME)")
    args = parser.parse_args(argv)
    opts = Options(
        duration=args.duration,
        rate=args.rate,
        max_duration=args.max_duration,
        warmup=args.warmup,
        connections=args.connections,
        open_connections=args.open_connections,
        repeats=max(1, args.repeats),
        rate_limit=args.rate_limit_per_store,
        log_level=args.jwo_log_level.upper(),
        echo_latency=not args.no_echo_latency,
        purge_every=args.purge_every,
    )
    signal.signal(signal.SIGTERM, _terminate)
    with _workdir(args.keep) as work:
        ok = run_bench(opts, work)
    return 0 if ok or not args.check else 1


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="jwo-bench-"))
    try:
        yield work
    finally:
        if keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
