"""Segment with fine-tuned model: a TerraTorch fine-tuned TerraMind segmentation model over rasters.

The model is a catalogue id (MODEL: IBM and ESA's ImpactMesh flood and wildfire models) or a file
(MODEL_FILE; with MODEL it is that model's weights). A multi-temporal model reads each modality over
its dates: DATES_<M> takes one layer per date, in date order (INPUT_<M>, one layer, stays for a single
date: a single-date model, or a DEM that is used for every date).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import processing
from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsRasterLayer,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.modalities import MODALITIES
from ..models.core.params import FINETUNED_INPUTS, MAX_CHIP, MIN_CHIP, ChipSettings, SegmentParams
from . import parameters as p
from . import styling
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import LayerInput, band_count, check_input
from .planning import destination, input_file, layer_name, read_extent

MODEL_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin", ".json", ".onnx")
MODEL_FILTER = "Fine-tuned models (*.ckpt *.pt *.pth *.safetensors *.json *.onnx);;All files (*.*)"
CLASS_FIELD, NAME_FIELD = "class", "class_name"


class SegmentWithFinetunedModelAlgorithm(TerraMindAlgorithm):
    """Run a fine-tuned model (Lightning checkpoint + YAML, state dict + YAML, or model card)."""

    NAME, DISPLAY_NAME, GROUP = "segmentwithfinetunedmodel", "Segment with fine-tuned model", "segmentation"

    MODEL = p.MODEL
    MODEL_FILE = "MODEL_FILE"
    CONFIG = "CONFIG"
    CLASSES = "CLASSES"
    INPUT_PARAMS = {m: f"INPUT_{m}" for m in FINETUNED_INPUTS}
    DATES_PARAMS = {m: f"DATES_{m}" for m in FINETUNED_INPUTS}
    BANDS_PARAMS = {m: f"BANDS_{m}" for m in FINETUNED_INPUTS}
    CHIP_SIZE, CHIP_STRIDE, CHIP_DELTA = "CHIP_SIZE", "CHIP_STRIDE", "CHIP_DELTA"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    CLASS_SUMMARY = "CLASS_SUMMARY"
    FIELDS = {"model.weights": MODEL_FILE, "params.config": CONFIG, "params.classes": CLASSES, "outputs.classes": OUTPUT,
              "outputs.probabilities": OUTPUT_PROBABILITIES}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(p.model_param("finetuned", self.tr("Fine-tuned model of the catalogue (or give its file)"),
                                        default=None, optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterFile(self.MODEL_FILE, self.tr("Fine-tuned model file (with a catalogue "
                                                     "model: its weights; empty: Hugging Face Hub or its cache)"),
                                                     QgsProcessingParameterFile.Behavior.File, fileFilter=MODEL_FILTER,
                                                     optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterFile(self.CONFIG, self.tr("TerraTorch config (YAML)"),
                                                     QgsProcessingParameterFile.Behavior.File, optional=True,
                                                     fileFilter="TerraTorch configs (*.yaml *.yml)"))
        for modality, key in self.INPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterLayer(
                key, self.tr("Input {}").format(MODALITIES[modality].title), optional=True))
            self.addParameter(QgsProcessingParameterMultipleLayers(
                self.DATES_PARAMS[modality], self.tr("Input {}, one layer per date in date order (multi-temporal models)")
                .format(MODALITIES[modality].title), QgsProcessing.SourceType.TypeRaster, optional=True))
        for modality, key in self.BANDS_PARAMS.items():
            self.addParameter(p.advanced(p.band_mapping_param(
                key, self.tr("Band mapping of {} (bands in the model's order)").format(modality), self.INPUT_PARAMS[modality])))
        self.addParameter(QgsProcessingParameterString(self.CLASSES, self.tr("Class names and colours"),
                                                       optional=True, multiLine=True))
        self.addParameter(p.seed_param())
        for key, what, low, high in ((self.CHIP_SIZE, "chip size (px)", MIN_CHIP, MAX_CHIP),
                                     (self.CHIP_STRIDE, "chip stride (px)", 1, MAX_CHIP),
                                     (self.CHIP_DELTA, "pixels dropped at chip borders", 0, MAX_CHIP // 2)):  # fmt: skip
            self.addParameter(p.advanced(QgsProcessingParameterNumber(
                key, self.tr("TerraTorch tiled inference: {} (empty: the model's)").format(what),
                QgsProcessingParameterNumber.Type.Integer, None, optional=True, minValue=low, maxValue=high)))
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

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        model_id = self.parameterAsEnumString(parameters, self.MODEL, context) or None
        spec = catalogue.get(model_id) if model_id else None
        model_file = input_file(self, parameters, self.MODEL_FILE, context, MODEL_SUFFIXES)
        if model_file is None and spec is None:
            raise ConfigError(f"{self.MODEL_FILE}: choose a fine-tuned model in {self.MODEL} or its file "
                              "(.ckpt, .pt, .safetensors, .json or .onnx)")  # fmt: skip
        config = input_file(self, parameters, self.CONFIG, context, (".yaml", ".yml"))
        inputs, counts = self._read_inputs(parameters, context)
        if not inputs:
            raise ConfigError(f"give an input layer for each modality the model reads "
                              f"({', '.join(self.INPUT_PARAMS.values())}, or {', '.join(self.DATES_PARAMS.values())} "
                              "for the dates of a multi-temporal model)")  # fmt: skip
        if spec is not None:  # the card says what the model reads: the worker's rule, checked now
            SegmentParams.check_catalogue_model(spec, counts)
        chips = ChipSettings(*(self._optional_int(parameters, k, context) for k in (self.CHIP_SIZE, self.CHIP_STRIDE,
                                                                                    self.CHIP_DELTA)))  # fmt: skip
        tiling = p.read_tiling(self, parameters, context)
        extent = read_extent(self, parameters, context, inputs)
        source = inputs[0].layer.name()
        outputs = {"classes": OutputTarget(self.OUTPUT, destination(self, parameters, self.OUTPUT, context), "classes",
                                           layer_name("Segmentation", source, False))}  # fmt: skip
        prob_path = destination(self, parameters, self.OUTPUT_PROBABILITIES, context)
        if prob_path:
            outputs["probabilities"] = OutputTarget(self.OUTPUT_PROBABILITIES, prob_path, "probability",
                                                    layer_name("Class probabilities", source, False))  # fmt: skip
        name = spec.id if spec is not None else os.path.splitext(os.path.basename(str(model_file)))[0]
        return RunPlan(
            task="segment",
            inputs=inputs,
            outputs=outputs,
            model=ModelRequest(id=name, weights=model_file, catalogue_paths=p.catalogue_paths()),
            params=SegmentParams(config, self.parameterAsString(parameters, self.CLASSES, context) or None,
                                 self.parameterAsInt(parameters, p.SEED, context), bool(prob_path), chips).as_params(),
            tiling=tiling, extent=extent,
            device=self.parameterAsEnumString(parameters, p.DEVICE, context) or "auto",
            precision=self.parameterAsEnumString(parameters, p.PRECISION, context) or "fp32",
        )  # fmt: skip

    def _read_inputs(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[LayerInput], dict[str, int]]:
        """The input layers, a modality's dates in order (one ``LayerInput`` each), and the dates per modality."""
        inputs, counts = [], {}
        self._input_params: dict[str, str] = {}
        for modality, key in self.INPUT_PARAMS.items():
            dates_key = self.DATES_PARAMS[modality]
            one = self.parameterAsRasterLayer(parameters, key, context)
            dates = list(self.parameterAsLayerList(parameters, dates_key, context) or [])
            if one is not None and dates:
                raise ConfigError(f"{dates_key}: give {modality} either as one layer ({key}) or as its dates "
                                  f"({dates_key}), not both")  # fmt: skip
            layers = dates or ([one] if one is not None else [])
            if not layers:
                continue
            param = dates_key if dates else key
            self._input_params[modality] = param
            bands = p.read_band_mapping(self, parameters, self.BANDS_PARAMS[modality], context)
            for i, layer in enumerate(layers):
                if not isinstance(layer, QgsRasterLayer):
                    raise ConfigError(f"{param}: '{layer.name()}' is not a raster layer")
                label = f"{param} (date {i + 1})" if dates else param
                count = len(bands) if bands else band_count(layer)
                # The model decides how many bands it reads (band subsets); the worker checks the count.
                names = tuple(f"band {b + 1}" for b in range(count))
                any_count = replace(MODALITIES[modality], bands=names, band_labels=names)
                item = check_input(label, layer, any_count, bands, mapping_param=self.BANDS_PARAMS[modality])
                inputs.append(replace(item, modality=MODALITIES[modality]))
            counts[modality] = len(layers)
        return inputs, counts

    def _optional_int(self, parameters: dict, key: str, context: QgsProcessingContext) -> int | None:
        value = parameters.get(key)
        return None if value is None or value == "" else self.parameterAsInt(parameters, key, context)

    def field_names(self) -> dict[str, str]:
        """``inputs.<M>`` is the parameter the modality came from (INPUT_<M> or DATES_<M>)."""
        used = {f"inputs.{m}": key for m, key in getattr(self, "_input_params", {}).items()}
        return {**super().field_names(), **used}

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_PROBABILITIES, None)
        metrics = result.get("metrics", {}) or {}
        summary = [{**c, "pixels": (metrics.get("class_pixels") or {}).get(c["name"])} for c in metrics.get("classes", [])]
        for c in summary:
            feedback.pushInfo(f"class {c['value']} {c['name']}: {c['pixels']} pixels")
        out[self.CLASS_SUMMARY] = json.dumps(summary)
        return out

    def after_run(self, plan: RunPlan, outputs: dict[str, Any], result: dict[str, Any], parameters: dict,
                  context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        """Polygons per class from the written class raster (QGIS's own GDAL Polygonize), styled by class."""
        target = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        outputs[self.OUTPUT_POLYGONS] = None
        if target and not feedback.isCanceled():
            classes = (result.get("metrics") or {}).get("classes", [])
            outputs[self.OUTPUT_POLYGONS] = polygonize(outputs[self.OUTPUT], target, classes, context, feedback)
            styling.attach_class_polygons_style(context, target, classes, CLASS_FIELD)
        return outputs


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
