"""The base of every TerraMind algorithm: the one error boundary and the run template.

A subclass implements ``plan(parameters, context) -> RunPlan`` (read and check every parameter; no
side effects) and ``results(plan, result) -> dict``. The base class

1. checks the plan before a run (``checkParameterValues``: the dialog shows the message at once);
2. in ``processAlgorithm``: finds the worker interpreter, exports non-file layers, writes the job,
   runs the worker (``worker_client``), and registers styles for the outputs Processing will load;
3. turns every ``TerraMindError`` into ONE ``QgsProcessingException`` (also written to the QGIS
   message log); any other exception propagates unchanged so QGIS shows its traceback.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..models.errors import CancelledError, TerraMindError
from ..models.job import InputSpec, Job, ModelRequest, TilingSpec
from . import LOG_TAG, environment, layers, styling, worker_client

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "terramind.svg")


@dataclass(frozen=True)
class OutputTarget:
    """One file the worker writes: Processing's parameter key, the file, its style and layer name
    (rasters; other files, such as ONNX graphs, have no style and are not loaded as layers)."""

    param: str
    path: str
    style: str  # a models/styles.py output name: modality or role
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


class TerraMindAlgorithm(QgsProcessingAlgorithm):
    """Template and error boundary of the provider's algorithms."""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> TerraMindAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def helpUrl(self) -> str:
        return "https://github.com/IBM/terramind"

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        raise NotImplementedError

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        return {t.param: result.get("outputs", {}).get(key, t.path) for key, t in plan.outputs.items()}

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            self.plan(parameters, context)
        except TerraMindError as e:
            return False, str(e)
        return True, ""

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        plan: RunPlan | None = None
        try:
            plan = self.plan(parameters, context)
            styling.forget_outputs(context, plan.skipped_outputs)
            interpreter = environment.find_interpreter()
            version = environment.check_interpreter(interpreter)
            feedback.pushInfo(f"Worker interpreter: {interpreter.path} (Python {version}, from the {interpreter.source})")
            if plan.model.untrained:
                feedback.pushWarning("UNTRAINED weights: deterministic test weights, not a trained model. "
                                     "Outputs are tagged UNTRAINED and are not meaningful.")
            with tempfile.TemporaryDirectory(prefix="terramind-inputs-") as tmp:
                job = self._job(plan, tmp, context, feedback)
                result = worker_client.run_job(job, interpreter, feedback)
            for target in plan.outputs.values():
                styling.attach_style(context, target.path, target.style, target.layer_name)
            return self.results(plan, result, feedback)
        except CancelledError as e:
            if plan is not None:
                styling.forget_outputs(context, [t.path for t in plan.outputs.values()])
            feedback.reportError(str(e))
            raise QgsProcessingException(str(e)) from None
        except TerraMindError as e:
            QgsMessageLog.logMessage(str(e), LOG_TAG, Qgis.MessageLevel.Warning)
            if plan is not None:
                styling.forget_outputs(context, [t.path for t in plan.outputs.values()])
            raise QgsProcessingException(str(e)) from None

    def _job(self, plan: RunPlan, tmp: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> Job:
        first_crs = plan.inputs[0].layer.crs() if plan.inputs else None  # tasks without layers: download, export
        inputs = {}
        for item in plan.inputs:
            path = layers.local_file(item.layer)
            if path is None:
                area = layers.extent_in_layer_crs(item.layer, plan.extent, first_crs, context)
                path = layers.export_layer(item, area, os.path.join(tmp, f"{item.modality.name}.tif"), context, feedback)
            provider = item.layer.dataProvider()
            band = (item.bands or (1,))[0]
            nodata = provider.sourceNoDataValue(band) if provider.sourceHasNoDataValue(band) else None
            bands = item.bands
            if item.rendered:  # exported RGBA: red, green, blue; the alpha band masks nodata
                bands, nodata = bands or layers.RENDERED_BANDS, None
            inputs[item.modality.name] = InputSpec(path=path, bands=bands, nodata=nodata, name=item.layer.name())
        for target in plan.outputs.values():
            os.makedirs(os.path.dirname(os.path.abspath(target.path)), exist_ok=True)
        extent = None
        if plan.extent is not None:
            extent = (plan.extent.xMinimum(), plan.extent.yMinimum(), plan.extent.xMaximum(), plan.extent.yMaximum())
        return Job(
            task=plan.task,
            inputs=inputs,
            outputs={key: t.path for key, t in plan.outputs.items()},
            model=plan.model,
            params=plan.params,
            tiling=plan.tiling,
            extent=extent,
            device=plan.device,
            precision=plan.precision,
        )
