"""What the fleet command shows: a progress bar on stderr and, with ``--events``, JSON-line events on stdout.

Events are the worker's protocol (``models/core/job.py``), one JSON object per line, so a QGIS
algorithm can run the fleet command as it runs the worker and relay them:

- ``{"event": "progress", "percent": P}``: over all scenes of this run (a running scene counts
  with its own percent), only forward;
- ``{"event": "info", "message": ...}``: the Dask dashboard, scenes skipped as complete, each scene
  started (with its Dask worker) and finished (with its time);
- ``{"event": "warning", "message": ...}``: each failed attempt and each failed scene;
- last, ``{"event": "result", "outputs": {"manifest": PATH, "folder": DIR},
  "metrics": {"scenes", "skipped", "succeeded", "failed", "cancelled", "seconds"},
  "failures": {scene: error}}`` when the fleet ran to its end (exit 0, or 3 with failed scenes),
  or ``{"event": "error", "type": ..., "message": ...}`` (exit 1, 2, or 130 when cancelled; then
  with the same ``metrics``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import IO, Any

from ..core.job import event

BAR_WIDTH = 28
REDRAW_S = 0.2


def claim_stdout() -> IO[str]:
    """The real stdout, for events only; file descriptor 1 and ``sys.stdout`` then point at stderr, so
    nothing a library prints can corrupt the event stream (as the worker does)."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


class CliProgress:
    """The ``Progress`` the fleet reports to from the command line; ``cancelled`` is set by signals."""

    def __init__(self, events: IO[str] | None, bar: bool, stderr: IO[str] | None = None) -> None:
        self.events = events
        self.bar = bar
        self.stderr = stderr or sys.stderr
        self.cancelled = False
        self.kill = False
        self._percent = 0.0
        self._last_event = -1.0
        self._status = ""
        self._drawn = 0.0
        self._bar_shown = False

    # -- Progress --------------------------------------------------------------------------------
    def set_progress(self, percent: float) -> None:
        percent = max(self._percent, min(100.0, float(percent)))  # only forward
        self._percent = percent
        if round(percent, 1) != round(self._last_event, 1):
            self._last_event = percent
            self.emit("progress", percent=round(percent, 1))
        self._draw()

    def info(self, message: str) -> None:
        self.emit("info", message=message)
        self._status = message
        self._draw()

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)
        self.line(f"warning: {message}")

    def is_canceled(self) -> bool:
        return self.cancelled

    # -- output ----------------------------------------------------------------------------------
    def emit(self, kind: str, **payload: Any) -> None:
        if self.events is not None:
            try:
                self.events.write(event(kind, **payload) + "\n")
                self.events.flush()
            except (BrokenPipeError, ValueError):
                pass

    def line(self, text: str) -> None:
        """One line on stderr (above the bar)."""
        self._clear()
        self.stderr.write(text + "\n")
        self.stderr.flush()
        self._draw(force=True)

    def _clear(self) -> None:
        if self.bar and self._bar_shown:
            self.stderr.write("\r\033[K")
            self._bar_shown = False

    def _draw(self, force: bool = False) -> None:
        if not self.bar:
            return
        now = time.monotonic()
        if not force and now - self._drawn < REDRAW_S and self._percent < 100.0:
            return
        self._drawn = now
        filled = int(BAR_WIDTH * self._percent / 100.0)
        head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self._percent:5.1f} % "
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = (head + self._status)[:width]
        self.stderr.write("\r\033[K" + text)
        self.stderr.flush()
        self._bar_shown = True

    def close(self) -> None:
        if self.bar and self._bar_shown:
            self.stderr.write("\n")
            self.stderr.flush()
            self._bar_shown = False
