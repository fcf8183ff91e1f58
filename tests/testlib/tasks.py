"""Run a worker task in this process, the way the worker's command line does (no subprocess)."""

from __future__ import annotations

from typing import Any

from terramind_qgis.models.core.job import Job
from terramind_qgis.models.core.progress import NullProgress, Progress
from terramind_qgis.models.runtime.backend import choose_backend, device_for
from terramind_qgis.models.worker.tasks import TASKS
from terramind_qgis.models.worker.tasks.context import RunContext


def validate(job: Job | dict[str, Any]) -> Any:
    """The task's request for ``job`` (its errors are what the worker reports as a bad job)."""
    job = job if isinstance(job, Job) else Job.from_dict(job)
    return TASKS[job.task].validate(job, choose_backend(job))


def run_task(job: Job | dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Validate and run ``job``: the result event's payload (``outputs``, ``metrics``, ...)."""
    job = job if isinstance(job, Job) else Job.from_dict(job)
    backend = choose_backend(job)
    request = TASKS[job.task].validate(job, backend)
    ctx = RunContext(progress or NullProgress(), device_for(backend, job.device, job.precision), backend)
    try:
        return TASKS[job.task].run(request, ctx)
    finally:
        ctx.outputs.abort()  # a no-op for committed outputs, as in the worker
