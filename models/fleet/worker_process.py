"""One TerraMind worker process (``python -m <plugin>.models.worker -``) run and watched to its end.

The job goes in on stdin; the worker's JSON-line events (``models/core/job.py``) are parsed as
they come and passed to ``on_event``. The process gets its own session (a Ctrl-C in the fleet's
terminal does not reach it) and, on Linux, SIGTERM when the thread that started it dies (a Dask
worker that is killed takes its scenes down with it, and they clean up after themselves). It is
stopped (SIGTERM, then SIGKILL after ``TERM_GRACE_S``) when ``stop_reason()`` gives a reason, when
it runs past ``timeout_s`` or when its memory passes ``memory_limit``. Its peak RSS is the
kernel's (``wait4``).
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.job import parse_event

TERM_GRACE_S = 10.0
POLL_S = 0.2
PR_SET_PDEATHSIG = 1
STDERR_LINES = 20

try:  # resolved now: the child calls it between fork and exec, where nothing may be loaded
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _PRCTL = None


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def plugin_package() -> tuple[str, str]:
    """(the plugin's package name, the folder to put on PYTHONPATH so that it imports)."""
    top = __name__.split(".")[0]
    root = sys.modules[top].__path__[0]  # type: ignore[attr-defined]
    return top, os.path.dirname(os.path.abspath(root))


def worker_command(python: str | None = None) -> list[str]:
    package, _ = plugin_package()
    return [python or sys.executable, "-m", f"{package}.models.worker", "-"]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    _, path = plugin_package()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([path, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update(extra or {})
    return env


@dataclass
class WorkerRun:
    """What one worker process did."""

    exit_code: int | None = None  # negative: killed by that signal
    result: dict[str, Any] | None = None  # the result event
    error: dict[str, Any] | None = None  # the error event
    warnings: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the fleet stopped it ("cancelled", "timeout after 60 s", ...)
    peak_rss_mb: float | None = None
    seconds: float = 0.0
    pid: int | None = None

    def message(self) -> str:
        """One line saying why the run failed."""
        if self.stopped:
            return f"stopped: {self.stopped}"
        if self.error:
            return f"{self.error.get('type', 'error')}: {self.error.get('message', '')}".strip()
        code = self.exit_code
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            return f"the worker was killed by {name}{hint}"
        tail = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return f"the worker exited with code {code}" + (f": {tail.strip()}" if tail else "") + " and no result"


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def run_worker(
    job_json: str,
    on_event: Callable[[dict[str, Any]], None],
    stop_reason: Callable[[], str | None],
    *,
    python: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    memory_limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> WorkerRun:
    """Run one job to its end (or until stopped); never raises for what the worker does."""
    run = WorkerRun()
    started = time.monotonic()
    proc = subprocess.Popen(worker_command(python), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", env=worker_env(env),
                            start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip  # noqa: PLW1509
    run.pid = proc.pid
    if on_start is not None:
        on_start(proc.pid)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def read_events() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = parse_event(line)
            if ev is None:
                continue
            kind = ev.get("event")
            if kind == "result":
                run.result = ev
            elif kind == "error":
                run.error = ev
            elif kind == "warning":
                run.warnings.append(str(ev.get("message", "")))
            on_event(ev)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_events, read_stderr)]
    for t in readers:
        t.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(job_json)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    term_sent: float | None = None
    status = rusage = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if term_sent is None:
            reason = stop_reason()
            if reason is None and timeout_s and now - started > timeout_s:
                reason = f"timeout after {timeout_s:g} s"
            if reason is None and memory_limit and _rss_bytes(proc.pid) > memory_limit:
                reason = f"its memory passed the limit of {memory_limit / 2**20:.0f} MiB"
            if reason is not None:
                run.stopped = reason
                _signal(proc, signal.SIGTERM)
                term_sent = now
        elif now - term_sent > TERM_GRACE_S:
            _signal(proc, signal.SIGKILL)
        time.sleep(POLL_S)
    proc.returncode = run.exit_code = os.waitstatus_to_exitcode(status)
    run.peak_rss_mb = round(rusage.ru_maxrss / 1024.0, 1)  # KiB on Linux
    for t in readers:
        t.join(timeout=5)
    run.stderr_tail = list(tail)
    run.seconds = round(time.monotonic() - started, 3)
    return run


def _signal(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
