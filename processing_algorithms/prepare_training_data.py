"""Prepare training data: input rasters + labels (polygons/points/lines with a class field, or a class raster)
→ a fine-tuning dataset folder in TerraTorch's GenericMultiModalDataModule layout."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRectangle,
)

from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest, TilingSpec
from ..models.core.modalities import MODALITIES
from ..models.core.params import FINETUNED_INPUTS, MAX_SEED
from ..models.core.training_params import (
    DEFAULT_CHIP_SIZE,
    DEFAULT_FRACTIONS,
    MAX_CHIP_SIZE,
    MIN_CHIP_SIZE,
    LabelRaster,
    PrepareParams,
    check_class_values,
    check_dataset_folder,
    parse_bands,
    parse_class_rules,
)
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import check_input, source_path
from .planning import read_extent
from .vector_features import extent_bounds, read_features


class PrepareTrainingDataAlgorithm(TerraMindAlgorithm):
    """Rasterize labels on the first input's grid, cut chips, split them by spatial blocks, write the dataset."""

    NAME, DISPLAY_NAME, GROUP = "preparetrainingdata", "Prepare training data", "finetuning"
    INPUT_PARAMS = {m: f"INPUT_{m}" for m in FINETUNED_INPUTS}
    BANDS_PARAMS = {m: f"BANDS_{m}" for m in FINETUNED_INPUTS}
    BAND_NAMES = "BAND_NAMES"
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    LABEL_RASTER = "LABEL_RASTER"
    LABEL_BAND = "LABEL_BAND"
    CLASSES = "CLASSES"
    BUFFER = "BUFFER"
    CHIP_SIZE = "CHIP_SIZE"
    STRIDE = "STRIDE"
    BLOCK_SIZE = "BLOCK_SIZE"
    TRAIN_FRACTION, VAL_FRACTION, TEST_FRACTION = "TRAIN_FRACTION", "VAL_FRACTION", "TEST_FRACTION"
    OVERWRITE = "OVERWRITE"
    OUTPUT = "OUTPUT"
    CHIPS = "CHIPS"
    TRAIN_CHIPS = "TRAIN_CHIPS"
    CLASS_PIXELS = "CLASS_PIXELS"
    FIELDS = {"params.labels": LABELS, "params.labels.class": CLASS_FIELD, "params.label_raster": LABEL_RASTER,
              "params.classes": CLASSES, "params.buffer": BUFFER, "params.chip_size": CHIP_SIZE, "params.stride": STRIDE,
              "params.block_size": BLOCK_SIZE, "params.fractions": TRAIN_FRACTION, "params.overwrite": OVERWRITE,
              "outputs.dataset": OUTPUT, "params.bands": BAND_NAMES, "inputs": "INPUT_S2L2A"}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        integer, double = QgsProcessingParameterNumber.Type.Integer, QgsProcessingParameterNumber.Type.Double
        for modality, key in self.INPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterLayer(key, self.tr("Input {}").format(MODALITIES[modality].title),
                                                                optional=True))  # fmt: skip
        for modality, key in self.BANDS_PARAMS.items():
            self.addParameter(p.advanced(p.band_mapping_param(
                key, self.tr("Band mapping of {} (bands in the model's order)").format(modality), self.INPUT_PARAMS[modality])))
        self.addParameter(p.advanced(QgsProcessingParameterString(
            self.BAND_NAMES, self.tr("Band subsets the inputs hold, e.g. 'S2L2A: BLUE, GREEN, RED' (with the band "
                                     "mapping in that order; empty: every band of the modality)"), optional=True)))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, self.tr("Labels: polygons, points or lines with a class field"),
            [QgsProcessing.SourceType.TypeVectorAnyGeometry], optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Class field"),
                                                      parentLayerParameterName=self.LABELS, optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABEL_RASTER, self.tr("Labels: a class raster (instead "
                                                            "of features)"), optional=True))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterBand(self.LABEL_BAND, self.tr("Band of the class raster"), 1,
                                                                self.LABEL_RASTER, optional=True)))  # fmt: skip
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, self.tr("Classes: '<values>: <name> [#RRGGBB]' per line, '*' = every other value (empty: one "
                                  "class per value)"), optional=True, multiLine=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.BUFFER, self.tr("Buffer around points and lines (map units of "
                                                       "the first input; 0: the pixels they touch)"), double, 0.0,
                                                       minValue=0.0))  # fmt: skip
        self.addParameter(QgsProcessingParameterExtent(p.EXTENT, self.tr("Area of interest (empty: the first input)"),
                                                       optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.CHIP_SIZE, self.tr("Chip size (px, multiple of 16)"), integer,
                                                       DEFAULT_CHIP_SIZE, minValue=MIN_CHIP_SIZE,
                                                       maxValue=MAX_CHIP_SIZE))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.STRIDE, self.tr("Chip stride (px; empty: the chip size)"), integer,
                                                       None, optional=True, minValue=1))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterNumber(
            self.BLOCK_SIZE, self.tr("Spatial block size of the split (px; empty: twice the chip size)"), integer, None,
            optional=True, minValue=MIN_CHIP_SIZE)))  # fmt: skip
        for key, what, default in ((self.TRAIN_FRACTION, "train", DEFAULT_FRACTIONS[0]),
                                   (self.VAL_FRACTION, "validation", DEFAULT_FRACTIONS[1]),
                                   (self.TEST_FRACTION, "test", DEFAULT_FRACTIONS[2])):  # fmt: skip
            self.addParameter(QgsProcessingParameterNumber(key, self.tr("Fraction of the chips for {} (by spatial blocks)")
                                                           .format(what), double, default, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(p.SEED, self.tr("Random seed of the split"), integer, 0, minValue=0,
                                                       maxValue=MAX_SEED))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterBoolean(
            self.OVERWRITE, self.tr("Replace an earlier dataset in the output folder"), False)))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Dataset folder")))
        self.addOutput(QgsProcessingOutputNumber(self.TRAIN_CHIPS, self.tr("Train chips")))
        self.addOutput(QgsProcessingOutputString(self.CHIPS, self.tr("Chips per split (JSON)")))
        self.addOutput(QgsProcessingOutputString(self.CLASS_PIXELS, self.tr("Pixels per class and split (JSON)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        inputs = []
        subsets = parse_bands(self.parameterAsString(parameters, self.BAND_NAMES, context))
        for modality, key in self.INPUT_PARAMS.items():
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is None:
                continue
            bands = p.read_band_mapping(self, parameters, self.BANDS_PARAMS[modality], context)
            m = MODALITIES[modality]
            names = subsets.get(modality)
            reading = m.with_bands(names) if names else m
            item = check_input(key, layer, reading, bands, mapping_param=self.BANDS_PARAMS[modality])
            inputs.append(replace(item, modality=m))
        if not inputs:
            raise ConfigError("give at least one input raster (INPUT_S2L2A, INPUT_S1RTC, ...); the first one's grid is "
                              "the dataset's grid", field="inputs")  # fmt: skip
        extent = read_extent(self, parameters, context, inputs)
        first = inputs[0].layer
        work = extent if extent is not None else QgsRectangle(first.extent())
        source = self.parameterAsSource(parameters, self.LABELS, context)
        label_layer = self.parameterAsRasterLayer(parameters, self.LABEL_RASTER, context)
        if (source is None) == (label_layer is None):
            raise ConfigError("give the labels either as features (LABELS with CLASS_FIELD) or as a class raster "
                              "(LABEL_RASTER), one of them", field="params.labels")  # fmt: skip
        labels, label_raster, buffer = None, None, self.parameterAsDouble(parameters, self.BUFFER, context)
        if source is not None:
            field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
            if not field:
                raise ConfigError("choose the field that holds each feature's class", field="params.labels.class")
            index = source.fields().lookupField(field)
            if index < 0:
                raise ConfigError(f"the layer has no field '{field}'", field="params.labels.class")
            check_class_values([v for v in source.uniqueValues(index) if isinstance(v, float)], "params.labels.class")
            labels = read_features(self, parameters, self.LABELS, context, first.crs(), field="params.labels",
                                   class_field=field)  # fmt: skip
            outside = labels.outside(extent_bounds(work))
            if len(outside) == len(labels.features):
                raise ConfigError(f"none of the {len(labels.features)} features of the class field '{field}' lies in the "
                                  f"area (the extent of {inputs[0].label}{' within EXTENT' if extent is not None else ''}); "
                                  "the labels lie outside every input", field="params.labels")  # fmt: skip
        else:
            path = source_path(label_layer)
            if path is None:
                raise ConfigError(f"'{label_layer.name()}' is not a raster file; save it as a GeoTIFF first",
                                  field="params.label_raster")  # fmt: skip
            band = self.parameterAsInt(parameters, self.LABEL_BAND, context) or 1
            label_raster = LabelRaster(os.path.abspath(path), band, None, label_layer.name())
        stride = parameters.get(self.STRIDE)
        block = parameters.get(self.BLOCK_SIZE)
        fractions = tuple(self.parameterAsDouble(parameters, k, context)
                          for k in (self.TRAIN_FRACTION, self.VAL_FRACTION, self.TEST_FRACTION))  # fmt: skip
        params = PrepareParams(
            labels, label_raster, parse_class_rules(self.parameterAsString(parameters, self.CLASSES, context) or None),
            buffer, self.parameterAsInt(parameters, self.CHIP_SIZE, context),
            None if stride in (None, "") else self.parameterAsInt(parameters, self.STRIDE, context),
            None if block in (None, "") else self.parameterAsInt(parameters, self.BLOCK_SIZE, context),
            fractions, self.parameterAsInt(parameters, p.SEED, context),
            bands=subsets, overwrite=self.parameterAsBoolean(parameters, self.OVERWRITE, context),
        )  # fmt: skip
        params.check([i.modality.name for i in inputs])
        folder = self.parameterAsString(parameters, self.OUTPUT, context)
        folder = os.path.abspath(folder) if folder else folder
        check_dataset_folder(folder, params.overwrite)
        return RunPlan(task="prepare_training_data", inputs=inputs,
                       outputs={"dataset": OutputTarget(self.OUTPUT, folder, "", "dataset")},
                       model=ModelRequest(id="-"), params=params.as_params(), tiling=TilingSpec(), extent=extent,
                       device="cpu", precision="fp32")  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        m = result.get("metrics") or {}
        chips = m.get("chips") or {}
        out[self.TRAIN_CHIPS] = chips.get("train")
        out[self.CHIPS] = json.dumps(chips)
        out[self.CLASS_PIXELS] = json.dumps(m.get("class_pixels") or {})
        for split, counts in (m.get("class_pixels") or {}).items():
            feedback.pushInfo(f"{split}: {chips.get(split)} chips; " + ", ".join(f"{k} {v} px" for k, v in counts.items()))
        return out
