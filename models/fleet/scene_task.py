"""What one Dask task does: run one scene's worker job as a subprocess and report what it made.

``run_scene`` runs on a Dask worker. It never raises for what the scene does: a crash, an
out-of-memory kill or a CUDA fault of the worker process becomes a ``failed`` record, and no file
of a failed scene is left behind (partials of the worker process, ``partial_glob``, also after a
SIGKILL; and the scene's final outputs with their sidecars, so that nothing looks complete).
While it runs it publishes ``started`` / ``progress`` messages on the fleet's Dask event topic
(``Worker.log_event``), and it stops its worker process when the fleet's ``kill`` Event is set.
A scene that is picked up after the fleet's ``stop`` Event was set does not start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.job import EXIT_BAD_JOB, EXIT_CANCELLED, EXIT_OK, partial_glob
from .manifest import file_digest
from .worker_process import run_worker

KILLED_BY_FLEET = "the fleet was cancelled (--kill-running)"
EVENT_CHECK_S = 1.0  # how often a running scene asks the scheduler whether the fleet wants it killed
PROGRESS_STEP = 1.0  # percent between progress messages to the client


@dataclass(frozen=True)
class SceneTask:
    """Everything a Dask worker needs to run one scene (pickled to it)."""

    scene: str
    task: str
    job_json: str
    outputs: dict[str, str]  # output key -> absolute path
    out_dir: str  # the manifest's folder (output paths are recorded relative to it)
    attempt: int
    run_id: str
    python: str | None = None
    timeout_s: float | None = None
    gpu: bool = False
    local_gpus_per_worker: int = 0  # LocalCluster --gpus-per-worker: worker i owns GPUs i*g ... i*g+g-1
    env: tuple[tuple[str, str], ...] = ()  # extra environment of the worker process (e.g. OMP_NUM_THREADS)

    @property
    def topic(self) -> str:
        return topic_of(self.run_id)


def topic_of(run_id: str) -> str:
    return f"terramind-fleet-{run_id}"


def stop_event_name(run_id: str) -> str:
    return f"terramind-fleet-{run_id}-stop"


def kill_event_name(run_id: str) -> str:
    return f"terramind-fleet-{run_id}-kill"


def sidecars(path: str) -> list[str]:
    """The files the worker writes next to an output: its style and GDAL's auxiliary metadata."""
    stem = path[: -len(".tif")] if path.lower().endswith(".tif") else path
    return [stem + ".qml", path + ".aux.xml"]


def remove_partials(outputs: dict[str, str]) -> list[str]:
    """Remove every partial file and scratch folder of these outputs; returns what was removed."""
    removed = []
    for path in outputs.values():
        for p in glob.glob(partial_glob(path)):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
            removed.append(p)
    return removed


def remove_outputs(outputs: dict[str, str], out_dir: str) -> None:
    """Remove a failed scene's outputs, their sidecars and its sub-folder if that is left empty."""
    for path in outputs.values():
        for p in (path, *sidecars(path)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
        folder = os.path.dirname(path)
        if os.path.abspath(folder) != os.path.abspath(out_dir):
            with contextlib.suppress(OSError):  # not empty: not only ours
                os.rmdir(folder)


_gpu_lock = threading.Lock()
_gpus_in_use: set[int] = set()


@contextlib.contextmanager
def _gpu_slot(task: SceneTask, worker: Any) -> Iterator[dict[str, str]]:
    """CUDA_VISIBLE_DEVICES for this scene when its worker owns several GPUs (or is a LocalCluster worker
    of ``--gpus-per-worker``): each running scene gets one GPU of its own."""
    owned = int(worker.state.total_resources.get("GPU", 0)) if task.gpu else 0
    if owned < 1 or (owned == 1 and not task.local_gpus_per_worker):
        yield {}
        return
    with _gpu_lock:
        slot = next(i for i in range(owned + len(_gpus_in_use) + 1) if i not in _gpus_in_use)
        _gpus_in_use.add(slot)
    try:
        index = slot
        if task.local_gpus_per_worker and str(worker.name).isdigit():
            index += int(worker.name) * task.local_gpus_per_worker
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        yield {"CUDA_VISIBLE_DEVICES": visible[index % len(visible)] if visible else str(index)}
    finally:
        with _gpu_lock:
            _gpus_in_use.discard(slot)


def run_scene(task: SceneTask) -> dict[str, Any]:
    """Run one scene on this Dask worker; returns its record (``manifest.py``) plus ``retryable``."""
    from distributed import Event, get_worker

    worker = get_worker()
    base = {"scene": task.scene, "task": task.task, "worker": worker.address, "attempt": task.attempt}
    if Event(stop_event_name(task.run_id)).is_set():
        return {**base, "status": "not_started"}
    kill = Event(kill_event_name(task.run_id))
    worker.log_event(task.topic, {"kind": "started", **base})
    for path in task.outputs.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    remove_partials(task.outputs)  # of an earlier process of this scene that died (at most one runs at a time)
    last = {"percent": -PROGRESS_STEP, "checked": 0.0}

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("event") == "progress":
            percent = float(ev.get("percent", 0.0))
            if percent - last["percent"] >= PROGRESS_STEP or percent >= 100.0:
                last["percent"] = percent
                worker.log_event(task.topic, {"kind": "progress", "percent": percent, **base})

    def stop_reason() -> str | None:
        now = time.monotonic()
        if now - last["checked"] < EVENT_CHECK_S:
            return None
        last["checked"] = now
        try:
            return KILLED_BY_FLEET if kill.is_set() else None
        except Exception:  # noqa: BLE001 - a scheduler that cannot be asked cannot want a kill
            return None

    limit = _memory_limit(worker)
    with _gpu_slot(task, worker) as env:
        run = run_worker(task.job_json, on_event, stop_reason, python=task.python, env={**dict(task.env), **env},
                         timeout_s=task.timeout_s, memory_limit=limit)  # fmt: skip
    record = {**base, "seconds": run.seconds, "exit_code": run.exit_code, "peak_rss_mb": run.peak_rss_mb,
              "warnings": len(run.warnings), "pid": run.pid, **({"gpu": env["CUDA_VISIBLE_DEVICES"]} if env else {})}  # fmt: skip
    outputs = run.result.get("outputs", {}) if run.result else {}
    ok = run.exit_code == EXIT_OK and run.result is not None and not run.stopped
    missing = [k for k, p in task.outputs.items() if not os.path.isfile(p)]
    if ok and not missing:
        digests = {k: file_digest(p) for k, p in task.outputs.items()}
        record["outputs"] = {k: {"path": os.path.relpath(p, task.out_dir), "sha256": digests[k][0], "bytes": digests[k][1]}
                             for k, p in task.outputs.items()}  # fmt: skip
        record["metrics"] = run.result.get("metrics", {}) if run.result else {}
        record["status"] = "succeeded"
        return {**record, "error": None, "retryable": False}
    remove_partials(task.outputs)
    remove_outputs(task.outputs, task.out_dir)
    if ok:
        message = f"the worker reported success but did not write {', '.join(missing)} (it gave {sorted(outputs)})"
    else:
        message = run.message()
    # cancelled: stopped on the fleet's kill Event, or by a SIGTERM from elsewhere; a timeout or memory stop is a failure
    cancelled = run.stopped == KILLED_BY_FLEET or (run.stopped is None and run.exit_code == EXIT_CANCELLED)
    status = "cancelled" if cancelled else "failed"
    return {**record, "status": status, "error": message, "retryable": run.exit_code != EXIT_BAD_JOB and not cancelled}


def _memory_limit(worker: Any) -> int | None:
    """This scene's share of the Dask worker's memory limit (None: no limit)."""
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return None
    return int(limit // max(1, worker.state.nthreads))
