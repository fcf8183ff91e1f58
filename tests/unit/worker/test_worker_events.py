"""Event stream details: JSON lines only, NaN-safe payloads, progress throttling, cancellation."""

from __future__ import annotations

import io
import json
import os
import signal

import pytest

from terramind_qgis.models.core.errors import CancelledError
from terramind_qgis.models.worker.events import EventStream, WorkerProgress, install_signal_handlers


def test_events_are_single_json_lines_and_non_finite_numbers_become_null():
    buf = io.StringIO()
    EventStream(buf).emit("result", outputs={}, metrics={"psnr": {"B01": float("inf"), "B02": 31.5}, "x": [float("nan")]})
    line = buf.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    ev = json.loads(line)
    assert ev == {"event": "result", "outputs": {}, "metrics": {"psnr": {"B01": None, "B02": 31.5}, "x": [None]}}


def test_progress_is_throttled_monotonic_and_always_reports_100():
    buf = io.StringIO()
    p = WorkerProgress(EventStream(buf), min_interval_s=3600)
    for i in range(1000):
        p.set_progress(i / 10)
    p.set_progress(100)
    events = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [e["percent"] for e in events] == [0.0, 100.0]


def test_sigterm_sets_the_flag_and_raises_cancelled_once():
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    p = WorkerProgress(EventStream(io.StringIO()))
    try:
        install_signal_handlers(p)
        with pytest.raises(CancelledError, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
        assert p.is_canceled()
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal only keeps the flag (cleanup may run)
        assert p.is_canceled()
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
