"""The worker entry point: ``python -m <plugin>.models.worker <job.json>`` (protocol: ``models/core/job.py``).

Also the headless command line (``--help``). Exit codes and what the user sees:

- 0: success; the last event is ``result``.
- 2: a bad job (unreadable file, invalid JSON, unknown task, bad parameter, unusable input
  raster, unknown model, unavailable device) — ONE line on stderr and an ``error`` event, no
  traceback.
- 1: a ``TerraMindError`` while running (e.g. a checkpoint or download problem) — one line on
  stderr and an ``error`` event; any other exception — its traceback on stderr and an ``error``
  event.
- 130: cancelled (SIGTERM/SIGINT) — an ``error`` event of type ``CancelledError``.

Library warnings (Python warnings, log records) are ``warning`` events, never lines on stderr.

Whatever happens, partial outputs of this process are removed before it exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence

from ..core.errors import CancelledError, ConfigError, TerraMindError, where
from ..core.job import EXIT_BAD_JOB, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, Job
from ..core.job import TASKS as PROTOCOL_TASKS
from .events import EventStream, WorkerProgress, capture_library_warnings, install_signal_handlers

DESCRIPTION = """Run one TerraMind job (a JSON file, protocol in models/core/job.py) and stream JSON-line
events (progress, info, warning, result, error) on stdout. Tasks: {tasks}."""

GDAL_CACHE_MB = 128  # GDAL block cache (MB) unless GDAL_CACHEMAX is set: memory must not grow with the raster

EPILOG = """example job (reconstruct a Sentinel-2 L2A raster with the official tokenizer):
  {"protocol": 1, "task": "reconstruct",
   "inputs": {"S2L2A": {"path": "s2.tif", "name": "my scene"}},
   "outputs": {"reconstruction": "rec.tif", "difference": "diff.tif"},
   "model": {"id": "terramind_v1_tokenizer_s2l2a"},
   "params": {"timesteps": 10, "seed": 0},
   "tiling": {"tile_size": 224, "overlap": 32, "batch_size": 4}, "device": "auto", "precision": "fp32"}

example job (IBM/ESA's flood model over four dates; one file per date, the DEM used for every date):
  {"protocol": 1, "task": "segment", "model": {"id": "terramind_v1_base_flood"},
   "inputs": {"S2L2A": {"dates": ["s2_t1.tif", "s2_t2.tif", "s2_t3.tif", "s2_t4.tif"]},
              "S1RTC": {"dates": ["s1_t1.tif", "s1_t2.tif", "s1_t3.tif", "s1_t4.tif"]}, "DEM": {"path": "dem.tif"}},
   "outputs": {"classes": "flood.tif"}, "device": "auto"}

exit codes: 0 ok, 1 error while running, 2 bad job, 130 cancelled."""


def _parser() -> argparse.ArgumentParser:
    from .tasks import TASKS

    p = argparse.ArgumentParser(
        prog="python -m terramind_qgis.models.worker", description=DESCRIPTION.format(tasks=", ".join(TASKS)),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("job", help="path of the job JSON file ('-' reads it from stdin)")
    return p


def _fail(progress: WorkerProgress, error: BaseException, code: int, with_traceback: bool = False) -> int:
    progress.shield()  # a second SIGTERM must not interrupt the error report and cleanup
    events = progress.events
    kind = type(error).__name__
    message = where(error)  # led by the job field at fault, where the rule knows it
    if with_traceback:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    else:
        sys.stderr.write(f"terramind worker: {message}\n")
    sys.stderr.flush()
    extra = {"field": error.field, "detail": str(error)} if isinstance(error, TerraMindError) and error.field else {}
    events.emit("error", type=kind if isinstance(error, TerraMindError) else "WorkerError", message=message, **extra)
    return code


def _read_job(path: str) -> Job:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as e:
        raise ConfigError(f"cannot read the job file '{path}': {e.strerror or e}") from None
    return Job.from_json(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job named on the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))  # bounded block cache, not 5 % of RAM
    progress = WorkerProgress(EventStream.claim_stdout())
    capture_library_warnings(progress)  # library warnings are events, never stray lines before the error
    install_signal_handlers(progress)
    return run_job_file(args.job, progress)


def run_job_file(job_path: str, progress: WorkerProgress) -> int:
    """Validate and run one job file, reporting to ``progress``; returns the exit code."""
    from .tasks.context import RunContext

    events, ctx, request = progress.events, None, None
    try:
        # -- validation: any error here is a bad job (exit 2) --
        try:
            job = _read_job(job_path)
            from ..runtime.backend import choose_backend, device_for
            from .tasks import TASKS

            if job.task not in TASKS:
                available = ", ".join(TASKS)
                raise ConfigError(
                    f"task '{job.task}' is part of protocol {job.protocol} ({', '.join(PROTOCOL_TASKS)}) "
                    f"but not available in this worker; available: {available}"
                )
            entry = TASKS[job.task]
            backend = choose_backend(job)
            request = entry.validate(job, backend)
            device = device_for(backend, job.device, job.precision)
        except CancelledError as e:
            if request is not None:
                request.close()
            return _fail(progress, e, EXIT_CANCELLED)
        except TerraMindError as e:
            if request is not None:
                request.close()
            return _fail(progress, e, EXIT_BAD_JOB)

        # -- the run --
        ctx = RunContext(progress, device, backend, on_commit=progress.shield)
        progress.info(device.description)
        started = time.monotonic()
        result = entry.run(request, ctx)
        result.setdefault("metrics", {})["seconds"] = round(time.monotonic() - started, 3)
        progress.set_progress(100.0)
        progress.shield()
        events.emit("result", **result)
        return EXIT_OK
    except CancelledError as e:
        return _fail(progress, e, EXIT_CANCELLED)
    except TerraMindError as e:
        return _fail(progress, e, EXIT_ERROR)
    except Exception as e:  # noqa: BLE001 - the protocol needs an error event for anything
        return _fail(progress, e, EXIT_ERROR, with_traceback=True)
    finally:
        progress.shield()
        if ctx is not None:
            ctx.outputs.abort()  # no-op for committed outputs
