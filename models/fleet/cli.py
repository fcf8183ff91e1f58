"""``python -m <plugin>.models.fleet TEMPLATE SCENES... -o OUT``: one worker job per scene on Dask.

Exit codes: 0 every scene succeeded (or was already complete), 3 the fleet ran to its end but some
scenes failed (the manifest says why), 2 a bad command line, template or scene list (ONE line on
stderr), 1 the fleet could not run (e.g. the scheduler is unreachable), 130 cancelled (Ctrl-C or
SIGTERM: no new scene starts, running ones finish — or stop with ``--kill-running``, or at a
second signal). Events (``--events``): ``reporting.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..core.errors import CancelledError, ConfigError, TerraMindError, WorkerError
from ..core.job import EXIT_BAD_JOB, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK
from .cluster import ClusterSettings, open_client, scene_threads, visible_gpus
from .manifest import Manifest, latest_records
from .plan import FleetPlan, make_plan
from .reporting import CliProgress, claim_stdout
from .runner import Fleet, FleetOptions, FleetSummary
from .scenes import load_scenes
from .stac import parse_overrides
from .template import JobTemplate

EXIT_SCENES_FAILED = 3
PROG = "python -m terramind_qgis.models.fleet"

DESCRIPTION = """Run one TerraMind worker job per scene on Dask distributed (a LocalCluster by default, or a
scheduler): each scene is one Dask task that runs the worker as a subprocess, so a crash, an
out-of-memory or a CUDA fault takes down that scene only. Outputs go under OUT (one sub-folder or
name prefix per scene, from the template), with manifest.jsonl beside them; a rerun skips the
scenes whose outputs match the manifest."""

EPILOG = """template (a worker job with placeholders; models/fleet/template.py):
  {"protocol": 1, "task": "segment", "inputs": {"S1GRD": {"path": "{S1GRD}"}},
   "outputs": {"classes": "{scene}/flood.tif"}, "model": {"id": "flood", "weights": "flood.ckpt"},
   "params": {"config": "flood.yaml"}, "device": "cuda"}
scenes: a CSV with a header of modalities (and 'scene'), a text file of paths, a glob
  ('s1/*.tif' or S1GRD='s1/*.tif' S2L2A='s2/*.tif', paired by file name), or a STAC
  Catalog/ItemCollection JSON (assets mapped to modalities; --asset MODALITY=KEY overrides).
examples:
  %(prog)s flood.json 's1/*.tif' -o out --workers 4
  %(prog)s lulc.json items.json -o out --scheduler tcp://head:8786 --events
exit codes: 0 ok, 3 some scenes failed, 2 bad command line or input, 1 fleet error, 130 cancelled."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block
        self.exit(EXIT_BAD_JOB, f"terramind fleet: {message} (see --help)\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", help="the job template (JSON)")
    p.add_argument("scenes", nargs="+", help="scene list(s): CSV, text file, glob, MODALITY=GLOB or STAC JSON")
    p.add_argument("-o", "--output", required=True, help="output folder (manifest.jsonl goes here)")
    g = p.add_argument_group("scenes")
    g.add_argument("--modality", help="modality of a text list or plain glob (default: the template's only input)")
    g.add_argument("--asset", action="append", default=[], metavar="MODALITY=KEY",
                   help="STAC asset key of a modality (KEY1,KEY2,... one per band); repeatable")  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="print each scene's job and status as JSON lines; run nothing")
    c = p.add_argument_group("cluster")
    c.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    c.add_argument("--cluster-module", metavar="MODULE:FUNC",
                   help="module:function or file.py:function returning a Dask cluster "
                        "(SLURMCluster, ...) or address")  # fmt: skip
    c.add_argument("--workers", type=_positive, default=None,
                   help="LocalCluster worker processes (default 2; with a cuda template: one per GPU)")  # fmt: skip
    c.add_argument("--threads-per-worker", type=_positive, default=1, help="scenes at a time per worker (default 1)")
    c.add_argument("--memory-limit", default="auto", help="LocalCluster memory per worker, e.g. 8GiB (default auto)")
    c.add_argument("--gpus-per-worker", type=_count, default=None,
                   help="LocalCluster: GPUs per worker (resource GPU); default 1 when the template's device is cuda")  # fmt: skip
    c.add_argument("--dashboard-address", default=":8787", help="LocalCluster dashboard (default :8787)")
    r = p.add_argument_group("running")
    r.add_argument("--retries", type=_count, default=2, help="extra attempts of a scene that crashed (default 2)")
    r.add_argument("--kill-running", action="store_true", help="on cancel, stop running scenes too (default: let them end)")
    r.add_argument("--scene-timeout", type=float, default=None, metavar="SECONDS", help="stop an attempt after this long")
    r.add_argument("--python", help="interpreter of the worker processes (default: the Dask worker's)")
    r.add_argument("--events", action="store_true", help="JSON-line events on stdout (the worker's protocol)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _fail_line(progress: CliProgress, error: BaseException, code: int, metrics: dict[str, Any] | None = None) -> int:
    message = str(error) or type(error).__name__
    progress.close()
    sys.stderr.write(f"terramind fleet: {message}\n")
    sys.stderr.flush()
    kind = type(error).__name__ if isinstance(error, TerraMindError) else "WorkerError"
    progress.emit("error", type=kind, message=message, **({"metrics": metrics} if metrics else {}))
    return code


def _install_signals(progress: CliProgress) -> None:
    def handler(signum: int, frame: object) -> None:
        if progress.cancelled:
            progress.kill = True
        progress.cancelled = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _dry_run(plan: FleetPlan, stream: Any) -> int:
    """One JSON line per scene: its status (complete, to_run, broken) and its job or error."""
    done = set(plan.complete)
    for job in plan.jobs:
        status = "complete" if job.scene in done else "to_run"
        stream.write(json.dumps({"scene": job.scene, "status": status, "job": job.job}) + "\n")
    for scene, message in plan.broken.items():
        stream.write(json.dumps({"scene": scene, "status": "broken", "error": message}) + "\n")
    stream.flush()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    events = None
    if args.events:
        events = claim_stdout()
    progress = CliProgress(events, bar=not args.no_progress and sys.stderr.isatty())
    running = False  # before: a TerraMindError is bad input (exit 2); after: the fleet failed (exit 1)
    try:
        template = JobTemplate.from_file(args.template)
        modality = args.modality or (template.modalities()[0] if len(template.modalities()) == 1 else None)
        scenes = load_scenes(args.scenes, modality, parse_overrides(args.asset))
        out = os.path.abspath(args.output)
        if args.dry_run:
            plan = make_plan(template, scenes, out, latest_records(os.path.join(out, "manifest.jsonl")))
            return _dry_run(plan, events if events is not None else sys.stdout)
        settings, options = _settings(args, template)
        _install_signals(progress)
        with Manifest(out) as manifest:
            plan = make_plan(template, scenes, out, manifest.latest())
            if progress.cancelled:
                raise CancelledError("cancelled before any scene started")
            running = True
            summary = _run(settings, options, plan, manifest, progress)
    except CancelledError as e:
        return _fail_line(progress, e, EXIT_CANCELLED)
    except TerraMindError as e:
        return _fail_line(progress, e, EXIT_ERROR if running else EXIT_BAD_JOB)
    except Exception as e:  # noqa: BLE001 - e.g. the scheduler went away: one line, not a traceback
        return _fail_line(progress, WorkerError(f"the fleet failed: {type(e).__name__}: {e}"), EXIT_ERROR)
    progress.close()
    metrics = summary.counts()
    line = (f"terramind fleet: {summary.succeeded} succeeded, {summary.failed} failed, {summary.skipped} already complete, "
            f"{summary.cancelled} cancelled of {summary.total} scenes in {summary.seconds:.1f} s; "
            f"manifest {summary.manifest}")  # fmt: skip
    if summary.was_cancelled:
        return _fail_line(progress, CancelledError(f"cancelled: {line.split(': ', 1)[1]}"), EXIT_CANCELLED, metrics)
    sys.stderr.write(line + "\n")
    progress.emit("result", outputs={"manifest": summary.manifest, "folder": out}, metrics=metrics,
                  failures=summary.failures)  # fmt: skip
    return EXIT_SCENES_FAILED if summary.failed else EXIT_OK


def _settings(args: argparse.Namespace, template: JobTemplate) -> tuple[ClusterSettings, FleetOptions]:
    """The cluster and run options of the command line, checked (``ConfigError``)."""
    local = not (args.scheduler or args.cluster_module)
    if not local and args.gpus_per_worker:
        raise ConfigError("--gpus-per-worker is for the LocalCluster; give remote workers --resources GPU=N")
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1 if template.gpu and local else 0
    workers = args.workers or 2
    if local and gpus:
        available = visible_gpus()
        workers = args.workers or max(1, (available or gpus) // gpus)
        if available == 0:
            raise ConfigError("the template's device is cuda but this machine shows no GPU (CUDA_VISIBLE_DEVICES, "
                              "the NVIDIA driver); use \"device\": \"cpu\" or run on GPU workers (--scheduler)")  # fmt: skip
        if available is not None and workers * gpus > available:
            raise ConfigError(f"{workers} worker(s) x {gpus} GPU(s) need {workers * gpus} GPUs; this machine shows "
                              f"{available}: give --workers {max(1, available // gpus)}")  # fmt: skip
    settings = ClusterSettings(args.scheduler, args.cluster_module, workers, args.threads_per_worker,
                               args.memory_limit, gpus, args.dashboard_address)  # fmt: skip
    env = {}
    if local and not os.environ.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(scene_threads(settings))  # the scenes share the cores, not each all of them
    if args.scene_timeout is not None and args.scene_timeout <= 0:
        raise ConfigError(f"--scene-timeout must be positive, got {args.scene_timeout:g}")
    return settings, FleetOptions(args.retries, args.kill_running, args.python, args.scene_timeout,
                                  gpus if local else 0, env)  # fmt: skip


def _run(settings: ClusterSettings, options: FleetOptions, plan: FleetPlan, manifest: Manifest,
         progress: CliProgress) -> FleetSummary:  # fmt: skip
    if not plan.to_run and not plan.broken:
        progress.info(f"all {len(plan.jobs)} scene(s) already complete (outputs match the manifest): nothing to do")
        return FleetSummary(total=plan.total, skipped=len(plan.complete), manifest=manifest.path)
    with open_client(settings) as client:
        progress.info(f"Dask dashboard: {client.dashboard_link}")
        if not progress.bar:
            sys.stderr.write(f"terramind fleet: Dask dashboard {client.dashboard_link}\n")
        fleet = Fleet(client, plan, manifest, progress, options, kill_requested=lambda: progress.kill)
        return fleet.run()
