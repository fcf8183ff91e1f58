"""The fleet's core: every scene of a plan as one Dask task, to the end, with retries and cancel.

``Fleet(client, plan, manifest, progress, options).run()`` works with any ``distributed.Client``
(a ``LocalCluster``, a scheduler address, a dask-jobqueue or dask-kubernetes cluster) and reports
to an injected ``Progress`` (``models/core/progress.py``): ``set_progress`` = percent over the
scenes of this run, ``info`` per scene started and finished, ``warn`` per failure;
``is_canceled()`` stops it. It never prints.

Retries are resubmissions by the fleet, not Dask's ``retries=``: a scene's task never raises for
what the scene does (it returns a record), so the fleet knows each attempt and its error, retries
only what can succeed the next time (a crash, a kill, an out-of-memory, a lost worker; not a bad
job, exit code 2), and writes the attempts to the manifest. A Dask worker that dies mid-scene is
Dask's business first: the scheduler reschedules the task elsewhere (``allowed-failures``), and a
``KilledWorker`` that ends it counts as one failed attempt.

Cancel: the first ``is_canceled()`` sets the fleet's ``stop`` Event (a queued scene that starts
after it returns ``not_started`` at once), lets running scenes end and records them; with
``kill_running`` (or ``kill_requested()`` true later) it also sets the ``kill`` Event, on which
each running scene terminates its worker process, whose partial files are removed.
"""

from __future__ import annotations

import datetime as _dt
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.progress import Progress
from .manifest import Manifest
from .plan import FleetPlan
from .scene_task import SceneTask, kill_event_name, run_scene, stop_event_name, topic_of
from .template import SceneJob

LOOP_S = 0.2


@dataclass
class FleetOptions:
    retries: int = 2  # extra attempts of a scene that failed in a way that may not fail again
    kill_running: bool = False  # on cancel, stop the running scenes too (default: let them end)
    python: str | None = None  # interpreter of the worker processes (default: the Dask worker's)
    timeout_s: float | None = None  # per scene attempt
    local_gpus_per_worker: int = 0
    scene_env: dict[str, str] = field(default_factory=dict)  # extra environment of every worker process


@dataclass
class FleetSummary:
    total: int = 0
    skipped: int = 0  # complete before this run
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0  # not started, or stopped, because of a cancel
    seconds: float = 0.0
    manifest: str = ""
    was_cancelled: bool = False
    failures: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {"scenes": self.total, "skipped": self.skipped, "succeeded": self.succeeded, "failed": self.failed,
                "cancelled": self.cancelled, "seconds": round(self.seconds, 3)}  # fmt: skip


def new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Fleet:
    def __init__(self, client: Any, plan: FleetPlan, manifest: Manifest, progress: Progress,
                 options: FleetOptions | None = None, kill_requested: Callable[[], bool] | None = None) -> None:  # fmt: skip
        self.client, self.plan, self.manifest, self.progress = client, plan, manifest, progress
        self.options = options or FleetOptions()
        self.kill_requested = kill_requested or (lambda: False)
        self.run_id = new_run_id()
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._fraction: dict[str, float] = {}
        self._errors: dict[str, list[str]] = {}
        self._stopping = self._killing = False

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> FleetSummary:
        from distributed import Event, as_completed

        started = time.monotonic()
        plan, progress = self.plan, self.progress
        summary = FleetSummary(total=plan.total, skipped=len(plan.complete), manifest=self.manifest.path)
        if plan.complete:
            progress.info(f"{len(plan.complete)} scene(s) already complete (outputs match the manifest): skipped")
        for scene, message in plan.broken.items():
            self._record_failure(summary, scene, None, message, attempts=0)
        jobs = plan.to_run
        self._fraction = {j.scene: 0.0 for j in jobs}
        self._warn_without_gpu(jobs)
        stop = Event(stop_event_name(self.run_id), client=self.client)
        kill = Event(kill_event_name(self.run_id), client=self.client)
        topic = topic_of(self.run_id)
        self.client.subscribe_topic(topic, lambda ev: self._messages.put(ev[1]))
        pending = as_completed()
        by_scene = {j.scene: j for j in jobs}
        try:
            for job in jobs:
                self._check_cancel(stop, kill)
                pending.add(self._submit(job, 1))
            self._report_progress()
            while not pending.is_empty():
                self._drain_messages()
                self._check_cancel(stop, kill)
                for future in pending.next_batch(block=False) if pending.has_ready() else []:
                    retry = self._finished(summary, future, by_scene)
                    if retry is not None:
                        pending.add(retry)
                self._report_progress()
                time.sleep(LOOP_S)
            self._drain_messages()
        finally:
            summary.seconds = time.monotonic() - started
            summary.was_cancelled = self._stopping
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:  # noqa: BLE001 - a lost scheduler: nothing left to unsubscribe from
                pass
        return summary

    def _check_cancel(self, stop: Any, kill: Any) -> None:
        if self.progress.is_canceled() and not self._stopping:
            self._stopping = True
            stop.set()
            self.progress.info("cancel: no new scene starts; " + ("running scenes are stopped" if self.options.kill_running
                               else "running scenes finish (cancel again to stop them)"))  # fmt: skip
        if self._stopping and not self._killing and (self.options.kill_running or self.kill_requested()):
            self._killing = True
            kill.set()

    def _submit(self, job: SceneJob, attempt: int) -> Any:
        task = SceneTask(job.scene, job.job["task"], job.job_json(), job.outputs, self.manifest.folder, attempt,
                         self.run_id, self.options.python, self.options.timeout_s, job.gpu,
                         self.options.local_gpus_per_worker, tuple(sorted(self.options.scene_env.items())))  # fmt: skip
        return self.client.submit(run_scene, task, key=f"terramind-scene-{job.scene}-{attempt}-{self.run_id}",
                                  pure=False, retries=0, resources={"GPU": 1} if job.gpu else None)  # fmt: skip

    def _finished(self, summary: FleetSummary, future: Any, by_scene: dict[str, SceneJob]) -> Any | None:
        """Handle one finished task; returns the future of its retry, if any."""
        scene, attempt = _scene_of(future.key, self.run_id, by_scene)
        try:
            rec = future.result()
        except Exception as e:  # noqa: BLE001 - a lost worker (KilledWorker), a task the scheduler dropped
            rec = {"scene": scene, "status": "failed", "error": f"{type(e).__name__}: {e}".strip(), "retryable": True,
                   "attempt": attempt, "worker": None}  # fmt: skip
        future.release()
        status, job = rec["status"], by_scene[scene]
        if status == "not_started":
            summary.cancelled += 1
            self._fraction[scene] = 1.0
            return None
        if status == "succeeded":
            summary.succeeded += 1
            self._fraction[scene] = 1.0
            self.manifest.append(self._record(rec, job, attempt))
            self.progress.info(f"scene {scene}: done in {rec.get('seconds', 0):.1f} s on {rec.get('worker')}"
                               + (f" (attempt {attempt})" if attempt > 1 else ""))  # fmt: skip
            return None
        message = rec.get("error") or "failed"
        self._errors.setdefault(scene, []).append(f"attempt {attempt}: {message}")
        if status == "failed" and rec.get("retryable") and attempt <= self.options.retries and not self._stopping:
            self.progress.warn(f"scene {scene} failed (attempt {attempt} of {self.options.retries + 1}): {message}; retrying")
            self._fraction[scene] = 0.0
            return self._submit(job, attempt + 1)
        self._fraction[scene] = 1.0
        if status == "cancelled":
            summary.cancelled += 1
            self.manifest.append(self._record(rec, job, attempt))
            self.progress.info(f"scene {scene}: stopped by the cancel; its partial outputs were removed")
            return None
        self._record_failure(summary, scene, job, message, attempts=attempt, rec=rec)
        return None

    def _record_failure(self, summary: FleetSummary, scene: str, job: SceneJob | None, message: str, attempts: int,
                        rec: dict[str, Any] | None = None) -> None:  # fmt: skip
        summary.failed += 1
        summary.failures[scene] = message
        base = {"scene": scene, "task": job.job["task"] if job else self.plan.task, "status": "failed", "error": message}
        self.manifest.append(self._record({**(rec or {}), **base}, job, attempts))
        self.progress.warn(f"scene {scene} failed: {message}")

    def _record(self, rec: dict[str, Any], job: SceneJob | None, attempts: int) -> dict[str, Any]:
        out = {k: v for k, v in rec.items() if k not in ("retryable", "attempt", "pid")}
        out.setdefault("outputs", {})
        out.update(attempts=attempts, errors=self._errors.get(rec["scene"], []), run=self.run_id, finished=_now(),
                   job_sha256=job.job_sha256 if job else None)  # fmt: skip
        out.setdefault("error", None)
        return out

    # -- progress --------------------------------------------------------------------------------
    def _drain_messages(self) -> None:
        while True:
            try:
                msg = self._messages.get_nowait()
            except queue.Empty:
                return
            scene = msg.get("scene")
            if scene not in self._fraction or self._fraction[scene] >= 1.0:
                continue
            if msg.get("kind") == "started":
                self._fraction[scene] = 0.0
                attempt = int(msg.get("attempt", 1))
                again = f" (attempt {attempt})" if attempt > 1 else ""
                self.progress.info(f"scene {scene}: started on {msg.get('worker')}{again}")
            elif msg.get("kind") == "progress":
                self._fraction[scene] = max(0.0, min(0.999, float(msg.get("percent", 0.0)) / 100.0))
        # (progress is reported by the loop)

    def _report_progress(self) -> None:
        self._drain_messages()
        n = len(self._fraction)
        self.progress.set_progress(100.0 * sum(self._fraction.values()) / n if n else 100.0)

    def _warn_without_gpu(self, jobs: list[SceneJob]) -> None:
        if not any(j.gpu for j in jobs):
            return
        try:
            workers = self.client.scheduler_info().get("workers", {}).values()
        except Exception:  # noqa: BLE001
            return
        if not any(w.get("resources", {}).get("GPU") for w in workers):
            self.progress.warn("the template's device is cuda but no Dask worker has the resource GPU yet; scenes wait "
                               "until one joins (start workers with --resources GPU=1, or --gpus-per-worker)")  # fmt: skip


def _scene_of(key: Any, run_id: str, by_scene: dict[str, SceneJob]) -> tuple[str, int]:
    """(scene, attempt) of a task key ``terramind-scene-<scene>-<attempt>-<run id>``."""
    text = str(key)[len("terramind-scene-"): -len(run_id) - 1]
    scene, _, attempt = text.rpartition("-")
    if scene not in by_scene:  # pragma: no cover - keys are ours
        raise KeyError(f"unknown task key {key!r}")
    return scene, int(attempt)

