"""Segment with fine-tuned model: a TerraTorch fine-tuned TerraMind segmentation model over rasters."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

import processing

from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.modalities import MODALITIES
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import band_count, check_input
from .planning import destination, layer_name, read_extent

RAW_INPUTS = ("S2L2A", "S2L1C", "S2RGB", "S1GRD", "S1RTC", "DEM")  # what fine-tuned backbones read
MODEL_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin", ".json", ".onnx")
MODEL_FILTER = "Fine-tuned models (*.ckpt *.pt *.pth *.safetensors *.json *.onnx);;All files (*.*)"
CLASS_FIELD, NAME_FIELD = "class", "class_name"


class ClassPolygonsStyle(QgsProcessingLayerPostProcessorInterface):
    """Colours the polygons by class (categorized on ``class``) when Processing loads them."""

    _alive: list[ClassPolygonsStyle] = []  # Processing keeps raw pointers only

    def __init__(self, classes: list[dict[str, Any]]) -> None:
        super().__init__()
        self.classes = classes
        ClassPolygonsStyle._alive.append(self)

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        if not isinstance(layer, QgsVectorLayer):
            return
        categories = []
        for c in self.classes:
            symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.GeometryType.PolygonGeometry)
            symbol.setColor(QColor(c["color"]))
            categories.append(QgsRendererCategory(c["value"], symbol, c["name"]))
        layer.setRenderer(QgsCategorizedSymbolRenderer(CLASS_FIELD, categories))
        layer.triggerRepaint()


class SegmentWithFinetunedModelAlgorithm(TerraMindAlgorithm):
    """Run a fine-tuned model (Lightning checkpoint + YAML, state dict + YAML, or model card)."""

    MODEL_FILE = "MODEL_FILE"
    CONFIG = "CONFIG"
    CLASSES = "CLASSES"
    INPUT_PARAMS = {m: f"INPUT_{m}" for m in RAW_INPUTS}
    BANDS_PARAMS = {m: f"BANDS_{m}" for m in RAW_INPUTS}
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    CLASS_SUMMARY = "CLASS_SUMMARY"

    def name(self) -> str:
        return "segmentwithfinetunedmodel"

    def displayName(self) -> str:
        return self.tr("Segment with fine-tuned model")

    def group(self) -> str:
        return self.tr("Segmentation")

    def groupId(self) -> str:
        return "segmentation"

    def shortHelpString(self) -> str:
        return self.tr(
            "Runs a TerraMind segmentation model fine-tuned with TerraTorch (e.g. the IBM Sen1Floods11 flood or "
            "burn-scar models) over your rasters, tile by tile with blended logits.\n\n"
            "<b>Model file</b>: the Lightning checkpoint (.ckpt) TerraTorch wrote, a state dict (.pt, .safetensors), "
            "a model card (.json) exported by this plugin, or an ONNX export (.onnx, run by ONNX Runtime without "
            "torch; made with <i>python -m terramind_qgis.models.backends.onnx_export</i>). <b>Config</b>: the TerraTorch YAML the model was "
            "trained with; it gives the inputs, bands, standardisation (means/stds, no_data_replace) and class names. "
            "It may be left empty for a .ckpt (its hyper-parameters are used) and is ignored for a model card or an "
            "ONNX file, which describe themselves. "
            "Anything in the config this plugin does not support is named in one message.\n"
            "<b>Inputs</b>: give a layer for every modality the model reads (e.g. S2L1C and S1GRD for Sen1Floods11), "
            "in raw units; band mappings pick the layer's bands in the model's order (e.g. the six HLS bands of a "
            "burn-scar model from a 12-band S2L2A layer: 2, 3, 4, 9, 11, 12). All inputs are aligned on the grid of "
            "the first one.\n"
            "<b>Classes</b>: names and colours, e.g. <i>0: Others #D9D9D9; 1: Flood #1F77B4</i>; empty uses the "
            "model card or config names and a default palette. <b>Seed</b>: used by TiM models, which sample tokens.\n"
            "<b>Outputs</b>: the class raster (nodata where an input has nodata), optionally per-class "
            "probabilities (softmax of the blended logits) and polygons per class (QGIS' GDAL Polygonize, with "
            "fields class and class_name)."
        )

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterFile(self.MODEL_FILE, self.tr("Fine-tuned model file"),
                                                     QgsProcessingParameterFile.Behavior.File, fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFile(self.CONFIG, self.tr("TerraTorch config (YAML)"),
                                                     QgsProcessingParameterFile.Behavior.File, optional=True,
                                                     fileFilter="TerraTorch configs (*.yaml *.yml)"))
        for modality, key in self.INPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterLayer(
                key, self.tr("Input {}").format(MODALITIES[modality].title), optional=True))
        for modality, key in self.BANDS_PARAMS.items():
            self.addParameter(p.advanced(p.band_mapping_param(
                key, self.tr("Band mapping of {} (bands in the model's order)").format(modality), self.INPUT_PARAMS[modality])))
        self.addParameter(QgsProcessingParameterString(self.CLASSES, self.tr("Class names and colours"),
                                                       optional=True, multiLine=True))
        self.addParameter(p.seed_param())
        for param in p.shared_params():
            if param.name() not in (p.WEIGHTS, p.UNTRAINED):  # the model file holds the weights
                self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Classes")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Class probabilities"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, self.tr("Polygons per class"), QgsProcessing.SourceType.TypeVectorPolygon, optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.CLASS_SUMMARY, self.tr("Classes (JSON: value, name, colour, pixels)")))

    def _file(self, parameters: dict, key: str, context: QgsProcessingContext, suffixes: tuple[str, ...]) -> str | None:
        path = self.parameterAsFile(parameters, key, context) or None
        if path is None:
            return None
        if not os.path.isfile(path):
            raise ConfigError(f"{key}: '{path}' does not exist or is not a file")
        if not path.lower().endswith(suffixes):
            raise ConfigError(f"{key}: '{os.path.basename(path)}' should be one of {', '.join(suffixes)}")
        return path

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        model_file = self._file(parameters, self.MODEL_FILE, context, MODEL_SUFFIXES)
        if model_file is None:
            raise ConfigError(f"{self.MODEL_FILE}: choose the fine-tuned model file (.ckpt, .pt, .safetensors, .json or .onnx)")
        config = self._file(parameters, self.CONFIG, context, (".yaml", ".yml"))
        inputs = []
        for modality, key in self.INPUT_PARAMS.items():
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is None:
                continue
            bands = p.read_band_mapping(self, parameters, self.BANDS_PARAMS[modality], context)
            count = len(bands) if bands else band_count(layer)
            # The model decides how many bands it reads (band subsets); the worker checks the count.
            any_count = replace(MODALITIES[modality], bands=tuple(f"band {i + 1}" for i in range(count)),
                                band_labels=tuple(f"band {i + 1}" for i in range(count)))  # fmt: skip
            item = check_input(key, layer, any_count, bands, mapping_param=self.BANDS_PARAMS[modality])
            inputs.append(replace(item, modality=MODALITIES[modality]))
        if not inputs:
            raise ConfigError(f"give an input layer for each modality the model reads ({', '.join(self.INPUT_PARAMS.values())})")
        tiling = p.read_tiling(self, parameters, context, multiple_of=16)
        extent = read_extent(self, parameters, context, inputs)
        source = inputs[0].layer.name()
        outputs = {"classes": OutputTarget(self.OUTPUT, destination(self, parameters, self.OUTPUT, context), "classes",
                                           layer_name("Segmentation", source, False))}  # fmt: skip
        prob_path = destination(self, parameters, self.OUTPUT_PROBABILITIES, context)
        if prob_path:
            outputs["probabilities"] = OutputTarget(self.OUTPUT_PROBABILITIES, prob_path, "probability",
                                                    layer_name("Class probabilities", source, False))  # fmt: skip
        return RunPlan(
            task="segment",
            inputs=inputs,
            outputs=outputs,
            model=ModelRequest(id=os.path.splitext(os.path.basename(model_file))[0], weights=model_file),
            params={"config": config, "classes": self.parameterAsString(parameters, self.CLASSES, context) or None,
                    "probabilities": bool(prob_path), "seed": self.parameterAsInt(parameters, p.SEED, context)},
            tiling=tiling, extent=extent,
            device=self.parameterAsEnumString(parameters, p.DEVICE, context) or "auto",
            precision=self.parameterAsEnumString(parameters, p.PRECISION, context) or "fp32",
        )  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_PROBABILITIES, None)
        metrics = result.get("metrics", {}) or {}
        summary = [{**c, "pixels": (metrics.get("class_pixels") or {}).get(c["name"])} for c in metrics.get("classes", [])]
        for c in summary:
            feedback.pushInfo(f"class {c['value']} {c['name']}: {c['pixels']} pixels")
        out[self.CLASS_SUMMARY] = json.dumps(summary)
        return out

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        out = super().processAlgorithm(parameters, context, feedback)
        target = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        out[self.OUTPUT_POLYGONS] = None
        if target and not feedback.isCanceled():
            classes = json.loads(out[self.CLASS_SUMMARY])
            out[self.OUTPUT_POLYGONS] = polygonize(out[self.OUTPUT], target, classes, context, feedback)
            if context.willLoadLayerOnCompletion(target):
                context.layerToLoadOnCompletionDetails(target).setPostProcessor(ClassPolygonsStyle(classes))
        return out


def polygonize(raster: str, target: str, classes: list[dict[str, Any]], context: QgsProcessingContext,
               feedback: QgsProcessingFeedback) -> str:
    """Class raster → polygons with QGIS' GDAL Polygonize, then a ``class_name`` field; returns the file."""
    feedback.pushInfo("Polygonizing the classes (GDAL Polygonize)")
    raw = processing.run("gdal:polygonize", {"INPUT": raster, "BAND": 1, "FIELD": CLASS_FIELD, "EIGHT_CONNECTEDNESS": False,
                                             "OUTPUT": QgsProcessingUtils.generateTempFilename("polygons.gpkg")},
                         context=context, feedback=feedback, is_child_algorithm=True)["OUTPUT"]  # fmt: skip
    cases = " ".join(f"WHEN \"{CLASS_FIELD}\" = {int(c['value'])} THEN '{str(c['name']).replace(chr(39), chr(39) * 2)}'"
                     for c in classes)  # fmt: skip
    formula = f"CASE {cases} ELSE NULL END" if cases else "NULL"
    named = processing.run("native:fieldcalculator", {"INPUT": raw, "FIELD_NAME": NAME_FIELD, "FIELD_TYPE": 2,
                                                      "FIELD_LENGTH": 80, "FIELD_PRECISION": 0, "FORMULA": formula,
                                                      "OUTPUT": target},
                           context=context, feedback=feedback, is_child_algorithm=True)  # fmt: skip
    return named["OUTPUT"]
