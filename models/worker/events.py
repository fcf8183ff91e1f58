"""The worker's side of the protocol: JSON-line events on a protected stdout, and cancellation.

stdout belongs to the protocol alone: ``EventStream.claim_stdout`` duplicates the real stdout for
events and points file descriptor 1 (and ``sys.stdout``) at stderr, so a library that prints
cannot corrupt the event stream. ``capture_library_warnings`` turns Python warnings and log records of
libraries (rasterio's ``NotGeoreferencedWarning``, GDAL messages rasterio logs) into ``warning`` events,
each distinct message once, so stderr holds nothing but the one-line error. ``WorkerProgress`` is
the ``Progress`` the engine and the models report to; SIGTERM/SIGINT set its cancel flag
(``install_signal_handlers``) and, outside cleanup, raise ``CancelledError`` at once so a long batch
does not have to finish first.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from typing import IO, Any

from ..core.errors import CancelledError
from ..core.job import event


class EventStream:
    """Writes protocol events, one JSON object per line, flushed immediately."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    @classmethod
    def claim_stdout(cls) -> EventStream:
        """Keep the real stdout for events; everything else printed to stdout goes to stderr."""
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(os.fdopen(fd, "w", encoding="utf-8", buffering=1))

    def emit(self, kind: str, **payload: Any) -> None:
        try:
            try:
                line = event(kind, **payload)
            except ValueError:  # NaN/inf somewhere in a payload: JSON has no such numbers -> null
                line = event(kind, **_json_safe(payload))
            self._stream.write(line + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away; nothing left to tell
            pass


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class WorkerProgress:
    """``Progress`` implementation that emits events and knows whether a stop was requested."""

    def __init__(self, events: EventStream, min_interval_s: float = 0.2) -> None:
        self.events = events
        self.cancelled = False
        self.cleaning_up = False  # while True, signals only set the flag
        self._last_percent = -1.0
        self._last_time = float("-inf")
        self._min_interval = min_interval_s

    def set_progress(self, percent: float) -> None:
        percent = max(0.0, min(100.0, float(percent)))
        now = time.monotonic()
        if percent >= 100.0 or (percent - self._last_percent >= 0.1 and now - self._last_time >= self._min_interval):
            if round(percent, 1) != round(self._last_percent, 1):
                self.events.emit("progress", percent=round(percent, 1))
            self._last_percent, self._last_time = percent, now

    def info(self, message: str) -> None:
        self.events.emit("info", message=message)

    def warn(self, message: str) -> None:
        self.events.emit("warning", message=message)

    def is_canceled(self) -> bool:
        return self.cancelled

    def shield(self) -> None:
        """From here on a cancel signal only sets the flag (outputs are being renamed, errors reported)."""
        self.cleaning_up = True


class _WarningEvents(logging.Handler):
    def __init__(self, report) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._report(f"{record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log record must never break the run
            pass


def capture_library_warnings(progress: WorkerProgress) -> Callable[[], None]:
    """Python warnings and WARNING+ log records become ``warning`` events (each distinct text once);
    returns what undoes it (for a process that runs jobs in-process: tests)."""
    seen: set[str] = set()

    def report(text: str) -> None:
        text = " ".join(text.split())
        if text not in seen:
            seen.add(text)
            progress.warn(text)

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' API
        report(f"{category.__name__}: {message}")

    saved_show, root = warnings.showwarning, logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    warnings.showwarning = show
    for handler in saved_handlers:  # nothing else may print log lines on stderr
        root.removeHandler(handler)
    ours = _WarningEvents(report)
    root.addHandler(ours)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)

    def restore() -> None:
        warnings.showwarning = saved_show
        root.removeHandler(ours)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)

    return restore


def install_signal_handlers(progress: WorkerProgress) -> None:
    """SIGTERM and SIGINT cancel the run (QGIS sends SIGTERM, then SIGKILL after about a second)."""

    def handler(signum: int, frame: object) -> None:
        already = progress.cancelled
        progress.cancelled = True
        if not already and not progress.cleaning_up:
            raise CancelledError(f"cancelled ({signal.Signals(signum).name})")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
