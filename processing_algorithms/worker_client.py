"""Run one job in the worker process and relay its events to a ``QgsProcessingFeedback``.

``run_job`` writes the job file (protocol: ``models/core/job.py``), starts
``<python> -m <plugin>.models.worker <job.json>`` in a clean environment, forwards ``progress``,
``info`` and ``warning`` events, and returns the ``result`` event. It polls
``feedback.isCanceled()`` every 0.1 s; on cancel it stops the worker (terminate, then kill after
``TERMINATE_GRACE_S``), removes every partial file and every output of this job, and raises
``CancelledError``. A worker ``error`` event becomes the matching ``TerraMindError``; a worker that
dies without one becomes ``WorkerError``. The worker's last stderr lines go to the log, not to the
message.
"""

from __future__ import annotations

import collections
import glob
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsProcessingFeedback

from ..models.core.errors import ERROR_TYPES, CancelledError, ConfigError, TerraMindError, WorkerError
from ..models.core.job import Job, parse_event, partial_glob
from . import LOG_TAG
from .environment import Interpreter, package_name, worker_environment

POLL_S = 0.1
TERMINATE_GRACE_S = 1.0
STDERR_TAIL_LINES = 30


def _sidecars(path: str) -> list[str]:
    """Files a worker may write next to an output besides the GeoTIFF itself."""
    stem, _ = os.path.splitext(path)
    return [path + ".aux.xml", stem + ".qml"]


def _snapshot(paths: list[str]) -> dict[str, float | None]:
    """Modification time of each file (None if absent), to tell later which ones this job wrote."""
    return {p: (os.path.getmtime(p) if os.path.exists(p) else None) for p in paths}


def remove_job_files(job: Job, before: dict[str, float | None]) -> list[str]:
    """Delete partial files and the outputs (with sidecars) the job created or changed; return what went.

    An output that is a folder (a dataset, a model folder) is never removed itself — it may hold the
    user's files and complete results (the best checkpoint of a cancelled fine-tuning); only the
    unfinished files inside it go."""
    removed = []
    for out in job.outputs.values():
        removed += glob.glob(partial_glob(out))
        if os.path.isdir(out):
            removed += glob.glob(partial_glob(os.path.join(glob.escape(out), "*")))
            continue
        for path in [out, *_sidecars(out)]:
            if os.path.exists(path) and before.get(path, None) != os.path.getmtime(path):
                removed.append(path)
    for path in removed:
        try:
            if os.path.isdir(path):  # the tiled engine's scratch folder (job.blend_scratch_prefix)
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError:
            pass
    return removed


def pump_lines(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


class _StderrTail:
    """Keeps the last lines the worker wrote to stderr (read on a thread so the pipe never fills)."""

    def __init__(self, stream) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip())

    def text(self) -> str:
        self._thread.join(timeout=2)
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=2)


def stop_process(proc: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate the process (a worker removes its partial files), kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def error_from_event(ev: dict[str, Any]) -> TerraMindError:
    """The worker's ``error`` event as the error it reported (a field at fault kept for the parameter name)."""
    kind = ERROR_TYPES.get(str(ev.get("type")), WorkerError)
    if ev.get("field") and issubclass(kind, ConfigError):
        return kind(str(ev.get("detail") or ev.get("message")), field=str(ev["field"]))
    return kind(str(ev.get("message", "unknown error")))


def _relay(ev: dict[str, Any], feedback: QgsProcessingFeedback) -> None:
    kind = ev.get("event")
    if kind == "progress":
        feedback.setProgress(float(ev.get("percent", 0.0)))
    elif kind == "info":
        feedback.pushInfo(str(ev.get("message", "")))
    elif kind == "warning":
        feedback.pushWarning(str(ev.get("message", "")))


@dataclass
class Finished:
    """How a process that speaks the protocol ended: its exit code, last ``result`` and ``error`` events."""

    code: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    stderr: str


def run_events(command: list[str], cwd: str, feedback: QgsProcessingFeedback, what: str,
               on_cancel: Callable[[subprocess.Popen], None]) -> Finished:  # fmt: skip
    """Start ``command`` (a process that writes protocol events on stdout: the worker, the fleet), relay
    its progress/info/warning events to ``feedback`` while polling for cancel (``on_cancel`` then stops
    it and ``CancelledError`` is raised), and return how it ended."""
    feedback.pushDebugInfo(f"{what}: " + " ".join(command))
    try:
        proc = subprocess.Popen(
            command, env=worker_environment(), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
    except OSError as e:
        raise WorkerError(f"could not start the {what} '{command[0]}': {e}") from None
    lines: queue.Queue = queue.Queue()
    pump = threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True)
    pump.start()
    stderr = _StderrTail(proc.stderr)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        while True:
            if feedback.isCanceled():
                on_cancel(proc)
                raise CancelledError(f"{what} cancelled")
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process is exiting
                break
            ev = parse_event(line)
            if ev is None:
                if line.strip():
                    feedback.pushDebugInfo(line.rstrip())
            elif ev["event"] == "result":
                result = ev
            elif ev["event"] == "error":
                error = ev
            else:
                _relay(ev, feedback)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            stop_process(proc)
        pump.join(timeout=2)
        stderr.join()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    return Finished(code, result, error, stderr.text())


def log_stderr(finished: Finished, what: str, feedback: QgsProcessingFeedback) -> None:
    if finished.stderr:
        feedback.pushDebugInfo(f"Last {what} messages:\n" + finished.stderr)
        QgsMessageLog.logMessage(f"TerraMind {what} (exit code {finished.code}), last messages:\n{finished.stderr}",
                                 LOG_TAG, Qgis.MessageLevel.Warning)  # fmt: skip


def run_job(job: Job, interpreter: Interpreter, feedback: QgsProcessingFeedback) -> dict[str, Any]:
    """Run ``job`` in a worker started with ``interpreter``; the worker's ``result`` event."""
    workdir = tempfile.mkdtemp(prefix="terramind-job-")
    job_path = os.path.join(workdir, "job.json")
    with open(job_path, "w", encoding="utf-8") as f:
        f.write(job.to_json())
    outputs = list(job.outputs.values())
    before = _snapshot([p for out in outputs for p in (out, *_sidecars(out))])

    def cancel(proc: subprocess.Popen) -> None:
        started = time.monotonic()
        stop_process(proc)
        removed = remove_job_files(job, before)
        feedback.pushInfo(f"Worker stopped {time.monotonic() - started:.1f} s after the cancel request; "
                          f"removed {len(removed)} unfinished file(s).")  # fmt: skip

    command = [interpreter.path, "-m", f"{package_name()}.models.worker", job_path]
    try:
        try:
            finished = run_events(command, workdir, feedback, "TerraMind worker", cancel)
        except CancelledError:
            raise CancelledError("TerraMind run cancelled; no output was written") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if finished.result is not None and finished.code == 0:
        return finished.result
    log_stderr(finished, "worker", feedback)
    remove_job_files(job, before)
    if finished.error is not None:
        raise error_from_event(finished.error)
    raise WorkerError(
        f"the TerraMind worker stopped unexpectedly (exit code {finished.code}) without reporting an error; "
        "its last messages are in the log (Log Messages panel, TerraMind tab)"
    )
