"""Run on many scenes: one worker job per scene, fanned out on Dask distributed by the fleet command.

The algorithm starts ``python -m <plugin>.models.fleet TEMPLATE SCENES... -o OUT --events`` with the
worker interpreter (``models/fleet``: LocalCluster by default, or a scheduler address) and relays
its events: progress over all scenes, one message per scene started and finished, a warning per
failure. Scenes whose outputs already match the manifest are skipped, so a rerun does only what is
missing. Cancelling stops submission and the running scenes; no partial file is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..models.core.errors import ConfigError, WorkerError
from ..models.core.job import ModelRequest, TilingSpec
from . import environment, worker_client
from .base import RunPlan, TerraMindAlgorithm
from .parameters import advanced
from .planning import input_file

EXIT_SCENES_FAILED = 3  # models/fleet/cli.py: the fleet ran to its end but some scenes failed
STOP_GRACE_S = 20.0  # the fleet stops its running scenes (SIGTERM, then SIGKILL after 10 s) before it exits


class RunOnManyScenesAlgorithm(TerraMindAlgorithm):
    """The same worker job on every scene of a list, a glob or a STAC catalogue, on Dask."""

    NAME, DISPLAY_NAME, GROUP = "runonmanyscenes", "Run on many scenes", "fleet"
    TEMPLATE = "TEMPLATE"
    SCENES = "SCENES"
    SCENE_PATTERN = "SCENE_PATTERN"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    SCHEDULER = "SCHEDULER"
    WORKERS = "WORKERS"
    THREADS_PER_WORKER = "THREADS_PER_WORKER"
    RETRIES = "RETRIES"
    MANIFEST = "MANIFEST"
    SUCCEEDED, FAILED, SKIPPED = "SUCCEEDED", "FAILED", "SKIPPED"

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterFile(self.TEMPLATE, self.tr("Job template (JSON)"),
                                                     QgsProcessingParameterFile.Behavior.File,
                                                     fileFilter="Job templates (*.json)"))  # fmt: skip
        self.addParameter(QgsProcessingParameterFile(
            self.SCENES, self.tr("Scene list (STAC catalog or item collection, CSV or text file)"),
            QgsProcessingParameterFile.Behavior.File, optional=True,
            fileFilter="Scene lists (*.json *.geojson *.csv *.txt);;All files (*)"))  # fmt: skip
        self.addParameter(QgsProcessingParameterString(
            self.SCENE_PATTERN, self.tr("Scene files (glob, or MODALITY=glob; MODALITY=glob ...)"), optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addParameter(QgsProcessingParameterString(
            self.SCHEDULER, self.tr("Dask scheduler address (empty: workers on this machine)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, self.tr("Workers on this machine (0: 2, or one per GPU)"),
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0, maxValue=256))  # fmt: skip
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.THREADS_PER_WORKER, self.tr("Scenes at a time per worker"), QgsProcessingParameterNumber.Type.Integer,
            1, minValue=1, maxValue=64)))  # fmt: skip
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.RETRIES, self.tr("Extra attempts of a scene that crashed"), QgsProcessingParameterNumber.Type.Integer,
            2, minValue=0, maxValue=20)))  # fmt: skip
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, self.tr("Manifest (JSON lines, one record per scene)")))
        for key, text in ((self.SUCCEEDED, "Scenes done"), (self.FAILED, "Scenes failed"),
                          (self.SKIPPED, "Scenes already complete")):  # fmt: skip
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(text)))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        template = input_file(self, parameters, self.TEMPLATE, context, (".json",))
        if template is None:
            raise ConfigError("choose the job template (a worker job with placeholders, see the help)",
                              field=self.TEMPLATE)  # fmt: skip
        scene_list = input_file(self, parameters, self.SCENES, context, (".json", ".geojson", ".csv", ".txt"))
        patterns = (self.parameterAsString(parameters, self.SCENE_PATTERN, context) or "").replace(";", " ").split()
        if scene_list is None and not patterns:
            raise ConfigError(f"give the scenes: a scene list in {self.SCENES} or file patterns", field=self.SCENE_PATTERN)
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        if os.path.isfile(folder):
            raise ConfigError(f"'{folder}' is a file; give a folder", field=self.OUTPUT_FOLDER)
        options = {"scheduler": (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip() or None,
                   "workers": self.parameterAsInt(parameters, self.WORKERS, context) or None,
                   "threads_per_worker": self.parameterAsInt(parameters, self.THREADS_PER_WORKER, context),
                   "retries": self.parameterAsInt(parameters, self.RETRIES, context)}  # fmt: skip
        if options["scheduler"] and options["workers"]:
            raise ConfigError("give either a scheduler address or a number of local workers", field=self.WORKERS)
        return RunPlan(task="fleet", inputs=[], outputs={}, model=ModelRequest(""),
                       params={"template": os.path.abspath(template),
                               "scenes": [os.path.abspath(scene_list)] if scene_list else patterns,
                               "folder": os.path.abspath(folder), **options},
                       tiling=TilingSpec(), extent=None, device="auto", precision="fp32")  # fmt: skip

    def execute(self, plan: RunPlan, interpreter: environment.Interpreter, context: QgsProcessingContext,
            feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        p = plan.params
        os.makedirs(p["folder"], exist_ok=True)
        command = [interpreter.path, "-m", f"{environment.package_name()}.models.fleet", p["template"], *p["scenes"],
                   "-o", p["folder"], "--events", "--no-progress", "--kill-running", "--retries", str(p["retries"]),
                   "--threads-per-worker", str(p["threads_per_worker"])]  # fmt: skip
        if p["scheduler"]:
            command += ["--scheduler", p["scheduler"]]
        elif p["workers"]:
            command += ["--workers", str(p["workers"])]

        def cancel(proc: subprocess.Popen) -> None:  # the fleet stops its scenes and removes their partial files
            proc.send_signal(signal.SIGTERM)
            worker_client.stop_process(proc, STOP_GRACE_S)

        finished = worker_client.run_events(command, p["folder"], feedback, "TerraMind fleet", cancel)
        if finished.result is not None and finished.code in (0, EXIT_SCENES_FAILED):
            return finished.result
        worker_client.log_stderr(finished, "fleet", feedback)
        if finished.error is not None:
            raise worker_client.error_from_event(finished.error)
        raise WorkerError(f"the TerraMind fleet stopped unexpectedly (exit code {finished.code}); its last messages are "
                          "in the log (Log Messages panel, TerraMind tab)")  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        metrics, outputs = result.get("metrics") or {}, result.get("outputs") or {}
        for scene, error in (result.get("failures") or {}).items():
            feedback.pushWarning(f"scene {scene}: {error}")
        return {self.OUTPUT_FOLDER: outputs.get("folder", plan.params["folder"]), self.MANIFEST: outputs.get("manifest"),
                self.SUCCEEDED: metrics.get("succeeded"), self.FAILED: metrics.get("failed"),
                self.SKIPPED: metrics.get("skipped")}  # fmt: skip
