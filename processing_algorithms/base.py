"""The base of every TerraMind algorithm: identity from class attributes, the run template, the one
error boundary.

A subclass sets ``NAME`` (the stable algorithm id), ``DISPLAY_NAME`` and ``GROUP`` (a key of
``GROUPS``); its help is ``resources/help/terramind.yaml`` under ``NAME``. It implements
``plan(parameters, context) -> RunPlan`` (read and check every parameter; no side effects), and may
override ``results(plan, result, feedback)`` (the worker's result → Processing outputs) and
``after_run(...)`` (QGIS-side work on the written files, e.g. polygons). The base class

1. checks the plan before a run (``checkParameterValues``: the dialog shows the message at once);
2. in ``processAlgorithm``: finds the worker interpreter, ``execute``s the plan (by default: exports
   non-file layers, writes the job, runs the worker through ``worker_client``; the fleet algorithm
   runs the fleet command instead), registers styles for the outputs Processing will load, and calls
   ``results`` and ``after_run``;
3. turns every ``TerraMindError`` raised by any of these into ONE ``QgsProcessingException`` led by
   the parameter at fault (``field_names``: job field -> parameter key); any other exception
   propagates unchanged so QGIS shows its traceback.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..models.core.errors import CancelledError, ConfigError, TerraMindError, where
from ..models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from ..models.core.outputs import check_outputs_apart
from . import LOG_TAG, environment, help, layers, styling, worker_client
from .parameters import SHARED_FIELDS

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "terramind.svg")
HELP_URL = "https://github.com/terramind-qgis/terramind-qgis/blob/main/README.md"
GROUPS = {"generation": "Generation", "segmentation": "Segmentation", "embeddings": "Embeddings",
          "tokenizers": "Tokenizers", "environment": "Environment", "fleet": "Many scenes",
          "finetuning": "Fine-tuning"}  # fmt: skip


@dataclass(frozen=True)
class OutputTarget:
    """One file the worker writes: Processing's parameter key, the file, its style and layer name
    (rasters; other files, such as ONNX graphs, have no style and are not loaded as layers)."""

    param: str
    path: str
    style: str  # a models/core/styles.py output name: modality or role
    layer_name: str


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, read from the parameters and checked."""

    task: str
    inputs: list[layers.LayerInput]  # may be empty (tasks that read no layer: download, export_onnx)
    outputs: dict[str, OutputTarget]  # worker output key -> target
    model: ModelRequest
    params: dict[str, Any]
    tiling: TilingSpec
    extent: QgsRectangle | None  # in the CRS of the first input
    device: str
    precision: str
    skipped_outputs: list[str] = field(default_factory=list)  # destinations not written (not requested)


class AlgorithmIdentity:
    """Name, group, help, icon of a provider algorithm, from its class attributes (a mixin in front of
    ``QgsProcessingAlgorithm``: sip finds these overrides by name)."""

    NAME = ""  # the algorithm id (public API: saved models and scripts use it)
    DISPLAY_NAME = ""
    GROUP = ""  # a key of GROUPS

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(GROUPS[self.GROUP])

    def groupId(self) -> str:
        return self.GROUP

    def shortHelpString(self) -> str:
        return self.tr(help.short_help(self.NAME))

    def shortDescription(self) -> str:
        return self.tr(help.description(self.NAME))

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> QgsProcessingAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def helpUrl(self) -> str:
        return HELP_URL


class TerraMindAlgorithm(AlgorithmIdentity, QgsProcessingAlgorithm):
    """Template and error boundary of the provider's algorithms that run the worker."""

    FIELDS: dict[str, str] = {}  # job fields of this algorithm's own parameters -> parameter key

    # -- what an algorithm says --------------------------------------------------------------------
    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        raise NotImplementedError

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        return {t.param: result.get("outputs", {}).get(key, t.path) for key, t in plan.outputs.items()}

    def after_run(self, plan: RunPlan, outputs: dict[str, Any], result: dict[str, Any], parameters: dict,
                  context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        """QGIS-side work on the written outputs (inside the error boundary); returns the outputs."""
        return outputs

    def execute(self, plan: RunPlan, interpreter: environment.Interpreter, context: QgsProcessingContext,
            feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        """Run the plan: by default one worker job (non-file layers exported first); its ``result`` event."""
        with tempfile.TemporaryDirectory(prefix="terramind-inputs-") as tmp:
            job = self._job(plan, tmp, context, feedback)
            return worker_client.run_job(job, interpreter, feedback)

    def field_names(self) -> dict[str, str]:
        """Job field -> parameter key, for leading messages with the parameter at fault."""
        return {**SHARED_FIELDS, **self.FIELDS}

    def parameter_for(self, job_field: str) -> str:
        names = self.field_names()
        if job_field in names:
            return names[job_field]
        kind, _, key = job_field.partition(".")
        return {"inputs": f"INPUT_{key}", "outputs": f"OUTPUT_{key.upper()}", "params": key.upper()}.get(kind, job_field)

    def message(self, error: TerraMindError) -> str:
        """``error``'s one-line message, led by the parameter key of the field at fault."""
        return where(error, {error.field: self.parameter_for(error.field)} if error.field else None)

    # -- the template ------------------------------------------------------------------------------
    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:  # an existing file QGIS cannot load is not "not found": say why
            for param in self.parameterDefinitions():
                if isinstance(param, QgsProcessingParameterRasterLayer):
                    better = layers.unreadable_file_message(param.name(), parameters.get(param.name()))
                    if better:
                        return False, better
            return ok, message
        # planning resolves destinations, and TEMPORARY_OUTPUT then registers a fresh temporary file to
        # load; processAlgorithm plans again with the same context, so these would be phantom layers
        to_load = context.layersToLoadOnCompletion()
        try:
            check_output_paths(self.plan(parameters, context))
        except TerraMindError as e:
            return False, self.message(e)
        finally:
            context.setLayersToLoadOnCompletion(to_load)
        return True, ""

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        plan: RunPlan | None = None
        try:
            plan = self.plan(parameters, context)
            check_output_paths(plan)
            styling.forget_outputs(context, plan.skipped_outputs)
            interpreter = environment.find_interpreter()
            version = environment.check_interpreter(interpreter)
            feedback.pushInfo(f"Worker interpreter: {interpreter.path} (Python {version}, from the {interpreter.source})")
            if plan.model.untrained:
                feedback.pushWarning("UNTRAINED weights: deterministic test weights, not a trained model. "
                                     "Outputs are tagged UNTRAINED and are not meaningful.")
            result = self.execute(plan, interpreter, context, feedback)
            for target in plan.outputs.values():
                styling.attach_style(context, target.path, target.style, target.layer_name)
            outputs = self.results(plan, result, feedback)
            return self.after_run(plan, outputs, result, parameters, context, feedback)
        except TerraMindError as e:
            if plan is not None:
                styling.forget_outputs(context, [t.path for t in plan.outputs.values()])
            if isinstance(e, CancelledError):
                feedback.reportError(str(e))
            else:
                QgsMessageLog.logMessage(self.message(e), LOG_TAG, Qgis.MessageLevel.Warning)
            raise QgsProcessingException(self.message(e)) from None

    def _job(self, plan: RunPlan, tmp: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> Job:
        first_crs = plan.inputs[0].layer.crs() if plan.inputs else None  # tasks without layers: download, export
        dates: dict[str, list[InputSpec]] = {}  # modality -> its layers: one, or one per date in date order
        for item in plan.inputs:
            path = layers.local_file(item.layer)
            if path is None:
                # without EXTENT the work area is the first input: a larger second layer is cut to it
                work = plan.extent if plan.extent is not None else QgsRectangle(plan.inputs[0].layer.extent())
                area = layers.extent_in_layer_crs(item.layer, work, first_crs, context)
                name = f"{item.modality.name}_{len(dates.get(item.modality.name, []))}.tif"
                path = layers.export_layer(item, area, os.path.join(tmp, name), context, feedback)
            band = (item.bands or (1,))[0]
            nodata = layers.nodata_value(item, band, feedback)
            bands = item.bands
            if item.rendered:  # exported RGBA: red, green, blue; the alpha band masks nodata
                bands, nodata = bands or layers.RENDERED_BANDS, None
            dates.setdefault(item.modality.name, []).append(InputSpec(
                path=os.path.abspath(path), bands=bands, nodata=nodata,
                file_nodata=layers.uses_file_nodata(item.layer, band), name=item.layer.name()))  # fmt: skip
        inputs = {m: replace(d[0], dates=tuple(d)) if len(d) > 1 else d[0] for m, d in dates.items()}
        for target in plan.outputs.values():
            folder = os.path.dirname(os.path.abspath(target.path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create the folder '{folder}' ({e.strerror or e}); choose a folder you can "
                                  "write to", field=f"outputs.{_key_of(plan, target)}") from None  # fmt: skip
        extent = None
        if plan.extent is not None:
            extent = (plan.extent.xMinimum(), plan.extent.yMinimum(), plan.extent.xMaximum(), plan.extent.yMaximum())
        return Job(
            task=plan.task,
            inputs=inputs,
            outputs={key: os.path.abspath(t.path) for key, t in plan.outputs.items()},
            model=_absolute_model_paths(plan.model),
            params={k: os.path.abspath(v) if k in PATH_PARAMS and isinstance(v, str) and v else v
                    for k, v in plan.params.items()},  # fmt: skip
            tiling=plan.tiling,
            extent=extent,
            device=plan.device,
            precision=plan.precision,
        )


def _key_of(plan: RunPlan, target: OutputTarget) -> str:
    return next(key for key, t in plan.outputs.items() if t is target)


def check_output_paths(plan: RunPlan) -> None:
    """The worker's output rules (models/core/outputs.py), checked early for the dialog (the folders are
    made just before the run, and the worker checks them then)."""
    sources = {item.label: layers.source_path(item.layer) or "" for item in plan.inputs}
    targets = {f"outputs.{key}": t.path for key, t in plan.outputs.items() if t.path}
    names = {f"outputs.{key}": t.param for key, t in plan.outputs.items()}
    check_outputs_apart(sources, targets, names, check_folders=False)


# Job parameters that are file or folder paths. The worker runs in a temporary folder (so that
# `python -m` does not import from the user's working directory): every path it gets is absolute,
# relative ones (qgis_process run from a shell) taken from QGIS's working directory.
PATH_PARAMS = ("config", "folder")


def _absolute_model_paths(model: ModelRequest) -> ModelRequest:
    return replace(
        model,
        weights=os.path.abspath(model.weights) if model.weights else model.weights,
        tokenizer_weights={k: os.path.abspath(v) for k, v in model.tokenizer_weights.items()},
        catalogue_paths=tuple(os.path.abspath(c) for c in model.catalogue_paths),
    )
