"""An HTTP/1.1 keep-alive load generator for loopback benchmarks, run as a process of its own.

It sits directly on asyncio protocols (no HTTP client library: httpx costs more CPU per request
than the server under test). Requests come from pre-encoded templates: the request line, headers
and JSON body are bytes prepared once, with `%s` slots that get fresh ids (fixed-width UUIDs, so
the Content-Length is known in advance) — every request is distinct, so the server makes a real
decision each time instead of replaying an idempotent answer. A response is read by its status
line and Content-Length; one request is in flight per connection (no pipelining).

Two ways to drive the server:

- closed loop (`closed`): N connections, each sends its next request as soon as the previous
  answer is in; reports the completions per second over the measured window (maximum throughput).
- open loop (`open`): requests are sent on a fixed timetable (`rate` per second) whatever the
  server does, over a pool of connections (a request due while every connection is busy waits in a
  queue); latency is measured from the *scheduled* send time, so a stalled server shows up in the
  figures instead of slowing the generator down (no coordinated omission).

Usage: `python -m bench.harness.loadgen --port P --requests FILE --target jwo open --rate 1000`;
prints one JSON object with the results on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

clock = time.perf_counter
"""Every time here: the event loop's clock is too coarse (uvloop's ticks in whole milliseconds)."""

PLACEHOLDER = "@ID@"
"""Where a template's body takes a fresh UUID."""

_ID_LEN = 36
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Template:
    route: str
    path: str
    body: str
    """JSON text; each PLACEHOLDER becomes a fresh UUID."""
    expect: dict[str, int]
    """The status each target (`jwo`, `echo`) must answer with."""

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "path": self.path, "body": self.body, "expect": self.expect}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Template:
        return cls(data["route"], data["path"], data["body"], {k: int(v) for k, v in data["expect"].items()})


def write_templates(path: Path, templates: Sequence[Template]) -> None:
    path.write_text(json.dumps([t.to_json() for t in templates]), encoding="utf-8")


def read_templates(path: Path) -> list[Template]:
    return [Template.from_json(d) for d in json.loads(path.read_text(encoding="utf-8"))]


class RequestFactory:
    """Cycles through the templates in order, filling each slot with a UUID never used before."""

    def __init__(self, templates: Sequence[Template], host: str, port: int, target: str) -> None:
        if not templates:
            raise ValueError("no request templates")
        self.routes = sorted({t.route for t in templates})
        route_index = {r: i for i, r in enumerate(self.routes)}
        dummy = b"0" * _ID_LEN
        self._formats: list[tuple[bytes, int, int, int]] = []
        for t in templates:
            body = t.body.replace("%", "%%").encode().replace(PLACEHOLDER.encode(), b"%s")
            slots = t.body.count(PLACEHOLDER)
            length = len(body % ((dummy,) * slots))
            head = (
                f"POST {t.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                f"content-length: {length}\r\n\r\n"
            )
            self._formats.append(
                (head.replace("%", "%%").encode() + body, slots, route_index[t.route], t.expect[target])
            )
        # A random prefix per generator (72 bits) and a counter: ids are unique across runs and processes.
        r = secrets.token_hex(9)
        self._prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-8{r[15:18]}-".encode()
        self._counter = 0
        self._next = 0

    def next(self) -> tuple[bytes, int, int]:
        """(request bytes, route index, expected status)"""
        fmt, slots, route, expect = self._formats[self._next]
        self._next = (self._next + 1) % len(self._formats)
        prefix, start = self._prefix, self._counter
        self._counter = start + slots
        ids = tuple(b"%s%012x" % (prefix, n) for n in range(start, start + slots))
        return fmt % ids, route, expect


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_response: Callable[[_Connection, int], None], on_lost: Callable[[_Connection], None]):
        self._on_response = on_response
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = -1
        self._status = 0
        self.route = 0
        self.expect = 0
        self.scheduled = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, data: bytes, route: int, expect: int, scheduled: float) -> None:
        assert self.transport is not None
        self.route, self.expect, self.scheduled, self.busy = route, expect, scheduled, True
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if not head.startswith(b"http/1.1 ") or at < 0:
                self._fail()
                return
            stop = head.find(b"\r\n", at + 2)
            self._status = int(head[9:12])
            self._need = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buf) < self._need:
            return
        del buf[: self._need]
        self._need = -1
        self.busy = False
        self._on_response(self, self._status)

    def _fail(self) -> None:
        """An answer we cannot read (no Content-Length): count it as lost and drop the connection."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost(self)


@dataclass
class _Stats:
    routes: list[str]
    timeout: float
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[tuple[int, int]] = field(default_factory=collections.Counter)
    bad_status: int = 0
    timeouts: int = 0
    lost: int = 0

    def record(self, route: int, status: int, expect: int, latency: float) -> None:
        self.latencies.append(latency)
        self.statuses[(route, status)] += 1
        if status != expect:
            self.bad_status += 1
        if latency > self.timeout:
            self.timeouts += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "completed": len(ordered),
            "seconds": round(seconds, 3),
            "rps": round(len(ordered) / seconds, 1) if seconds > 0 else 0.0,
            "latency_ms": {
                "p50": _ms(_percentile(ordered, 50)),
                "p90": _ms(_percentile(ordered, 90)),
                "p99": _ms(_percentile(ordered, 99)),
                "p999": _ms(_percentile(ordered, 99.9)),
                "max": _ms(ordered[-1] if ordered else 0.0),
                "mean": _ms(sum(ordered) / len(ordered) if ordered else 0.0),
            },
            "errors": self.bad_status + self.timeouts + self.lost,
            "bad_status": self.bad_status,
            "timeouts": self.timeouts,
            "lost": self.lost,
            "statuses": {f"{self.routes[r]} {s}": n for (r, s), n in sorted(self.statuses.items())},
        }


def _percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _machine_cpu() -> float | None:
    """CPU seconds all cores of the machine have been busy so far (Linux)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / _CLK_TCK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _CpuWindow:
    """CPU used by this process and by the watched ones over the measured window, in % of one core;
    `other` is what the rest of the machine used meanwhile (other work on a shared box)."""

    def __init__(self, watch: dict[str, int]) -> None:
        self._watch = watch
        self._start: dict[str, float | None] = {}
        self._wall = 0.0

    def start(self, now: float) -> None:
        self._wall = now
        self._start = {name: _proc_cpu(pid) for name, pid in self._watch.items()}
        self._start["loadgen"] = _own_cpu()
        self._start["machine"] = _machine_cpu()

    def stop(self, now: float) -> dict[str, float]:
        wall = max(now - self._wall, 1e-9)
        out: dict[str, float] = {}
        ends: dict[str, float | None] = {name: _proc_cpu(pid) for name, pid in self._watch.items()}
        ends["loadgen"] = _own_cpu()
        ends["machine"] = _machine_cpu()
        for name, end in ends.items():
            begin = self._start.get(name)
            if begin is not None and end is not None:
                out[name] = round(100 * (end - begin) / wall, 1)
        if "machine" in out:
            out["other"] = round(max(0.0, out.pop("machine") - sum(out.values())), 1)
        return out


async def _connect(
    host: str,
    port: int,
    count: int,
    on_response: Callable[[_Connection, int], None],
    on_lost: Callable[[_Connection], None],
) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    conns: list[_Connection] = []
    for _ in range(count):
        _, proto = await loop.create_connection(lambda: _Connection(on_response, on_lost), host, port)
        conns.append(proto)
    return conns


async def closed_loop(
    host: str,
    port: int,
    factory: RequestFactory,
    *,
    connections: int,
    warmup: float,
    duration: float,
    answer_within: float = 2.0,
    watch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Every connection sends again as soon as it has its answer; only the window after `warmup` counts."""
    stats = _Stats(factory.routes, answer_within)
    cpu = _CpuWindow(watch or {})
    window = [float("inf"), float("inf")]
    stop_sending = float("inf")
    idle = asyncio.Event()
    active = 0

    def issue(conn: _Connection) -> None:
        nonlocal active
        now = clock()
        if now >= stop_sending or conn.transport is None:
            active -= 1
            if active == 0:
                idle.set()
            return
        data, route, expect = factory.next()
        conn.send(data, route, expect, now)

    def on_response(conn: _Connection, status: int) -> None:
        now = clock()
        if window[0] <= conn.scheduled and now <= window[1]:
            stats.record(conn.route, status, conn.expect, now - conn.scheduled)
        issue(conn)

    def on_lost(conn: _Connection) -> None:
        nonlocal active
        if conn.busy:
            conn.busy = False
            stats.lost += 1
            active -= 1
            if active == 0:
                idle.set()

    conns = await _connect(host, port, connections, on_response, on_lost)
    started = clock()
    window[0], window[1] = started + warmup, started + warmup + duration
    stop_sending = window[1]
    active = len(conns)
    for conn in conns:
        issue(conn)
    await asyncio.sleep(max(0.0, window[0] - clock()))
    cpu.start(clock())
    await asyncio.sleep(max(0.0, window[1] - clock()))
    cpu_pct = cpu.stop(clock())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(idle.wait(), answer_within)
    stats.timeouts += sum(1 for c in conns if c.busy)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    result = stats.summary(duration)
    result.update(mode="closed", connections=connections, cpu_pct=cpu_pct)
    return result


async def open_loop(
    host: str,
    port: int,
    factory: RequestFactory,
    *,
    rate: float,
    duration: float,
    connections: int,
    answer_within: float = 2.0,
    watch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Send `rate` requests per second on a fixed timetable; latency counts from the scheduled time."""
    stats = _Stats(factory.routes, answer_within)
    cpu = _CpuWindow(watch or {})
    free: collections.deque[_Connection] = collections.deque()
    waiting: collections.deque[tuple[bytes, int, int, float]] = collections.deque()
    send_lag: list[float] = []
    """Scheduled time to the write: the generator's own lateness plus any wait for a free connection."""
    timer_lag: list[float] = []
    """Scheduled time to when the generator got to that request: its own lateness only (its loop woke
    late, or it was busy or descheduled), whatever the server does."""
    max_waiting = 0
    total = round(rate * duration)
    sent = answered = 0
    all_answered = asyncio.Event()

    def on_response(conn: _Connection, status: int) -> None:
        nonlocal answered
        now = clock()
        stats.record(conn.route, status, conn.expect, now - conn.scheduled)
        answered += 1
        if answered == total:
            all_answered.set()
        if waiting:
            data, route, expect, scheduled = waiting.popleft()
            send_lag.append(now - scheduled)
            conn.send(data, route, expect, scheduled)
        else:
            free.append(conn)

    def on_lost(conn: _Connection) -> None:
        nonlocal answered
        if conn.busy:
            conn.busy = False
            stats.lost += 1
            answered += 1
            if answered == total:
                all_answered.set()
        with contextlib.suppress(ValueError):
            free.remove(conn)

    conns = await _connect(host, port, connections, on_response, on_lost)
    free.extend(conns)
    interval = 1.0 / rate
    start = clock() + 0.05
    cpu.start(start)
    while sent < total:
        now = clock()
        while sent < total and start + sent * interval <= now:
            scheduled = start + sent * interval
            timer_lag.append(now - scheduled)
            data, route, expect = factory.next()
            if free:
                send_lag.append(now - scheduled)
                free.popleft().send(data, route, expect, scheduled)
            else:
                waiting.append((data, route, expect, scheduled))
                max_waiting = max(max_waiting, len(waiting))
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent * interval - clock()))
    end = start + total * interval
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_answered.wait(), answer_within)
    cpu_pct = cpu.stop(clock())
    stats.timeouts += len(waiting) + sum(1 for c in conns if c.busy)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    result = stats.summary(end - start)
    lag = sorted(send_lag)
    own = sorted(timer_lag)
    result.update(
        mode="open",
        offered_rps=rate,
        scheduled=total,
        connections=connections,
        send_lag_ms={
            "p50": _ms(_percentile(lag, 50)),
            "p99": _ms(_percentile(lag, 99)),
            "max": _ms(lag[-1] if lag else 0),
        },
        timer_lag_ms={
            "p50": _ms(_percentile(own, 50)),
            "p99": _ms(_percentile(own, 99)),
            "max": _ms(own[-1] if own else 0),
        },
        max_waiting=max_waiting,
        cpu_pct=cpu_pct,
    )
    return result


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True, help="JSON file of request templates")
    parser.add_argument("--target", required=True, help="which expected status of a template applies")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=2.0, help="an answer later than this is an error")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="also report the CPU this process used over the measured window",
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    closed = modes.add_parser("closed", help="maximum throughput")
    closed.add_argument("--warmup", type=float, default=2.0)
    closed.add_argument("--duration", type=float, default=10.0)
    opened = modes.add_parser("open", help="latency at a fixed offered rate")
    opened.add_argument("--rate", type=float, default=1000.0)
    opened.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args(argv)

    watch = {name: int(pid) for name, _, pid in (w.partition("=") for w in args.watch)}
    factory = RequestFactory(read_templates(args.requests), args.host, args.port, args.target)
    if args.mode == "closed":
        run = closed_loop(
            args.host,
            args.port,
            factory,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            answer_within=args.timeout,
            watch=watch,
        )
    else:
        run = open_loop(
            args.host,
            args.port,
            factory,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            answer_within=args.timeout,
            watch=watch,
        )
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        result = runner.run(run)
    result["loop"] = args.loop
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
