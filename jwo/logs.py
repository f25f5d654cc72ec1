"""JSON log lines (one object per line, with the `extra` fields of the call)."""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        return json.dumps(line, default=str)


_listener: logging.handlers.QueueListener | None = None


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record over with its message and traceback rendered, its `extra` fields intact."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is written, not when logging was configured (a
    command run inside a test runner must not keep the runner's closed capture stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _stop_listener() -> None:
    """Flush and stop the current listener (at exit, or before a new configuration)."""
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()


def shutdown() -> None:
    """Flush and stop the log listener (tests that ran a CLI command restore logging with this)."""
    _stop_listener()


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr) through a queue: the thread that logs (the connectors' event loop, for a
    request line) only enqueues the record; a listener thread formats and writes it. Flushed at exit."""
    global _listener
    if _listener is None:
        atexit.register(_stop_listener)
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    _stop_listener()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    for noisy in ("werkzeug", "botocore", "aiobotocore", "urllib3", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
