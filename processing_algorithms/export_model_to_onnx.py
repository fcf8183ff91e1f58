"""Export model to ONNX: a fine-tuned segmentation model or a tokenizer as ``.onnx`` (worker task ``export_onnx``)."""

from __future__ import annotations

import json
import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest, TilingSpec, onnx_decoder_path
from ..models.core.outputs import check_output_path
from ..models.core.params import decoder_tile_multiple, require_weights
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import input_file

MODEL_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin", ".json")
MODEL_FILTER = "Fine-tuned models (*.ckpt *.pt *.pth *.safetensors *.json);;All files (*.*)"


class ExportModelToOnnxAlgorithm(TerraMindAlgorithm):
    """Write a model as a self-describing ONNX file that the plugin runs with ONNX Runtime."""

    NAME, DISPLAY_NAME, GROUP = "exportonnx", "Export model to ONNX", "environment"

    MODEL_FILE = "MODEL_FILE"
    CONFIG = "CONFIG"
    CLASSES = "CLASSES"
    OUTPUT = "OUTPUT"
    DECODER = "DECODER"
    MAX_DEVIATION = "MAX_DEVIATION"
    EXPORT_CHECK = "EXPORT_CHECK"

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterFile(self.MODEL_FILE, self.tr("Fine-tuned segmentation model file"),
                                                     optional=True, fileFilter=MODEL_FILTER))  # fmt: skip
        self.addParameter(QgsProcessingParameterFile(self.CONFIG, self.tr("TerraTorch config (YAML) of the model file"),
                                                     optional=True, fileFilter="TerraTorch configs (*.yaml *.yml)"))  # fmt: skip
        self.addParameter(QgsProcessingParameterString(self.CLASSES, self.tr("Class names and colours of the model file"),
                                                       optional=True, multiLine=True))  # fmt: skip
        self.addParameter(p.model_param("tokenizer", self.tr("Or: tokenizer"), default=None, optional=True))
        for param in p.shared_params():
            if param.name() in (p.WEIGHTS, p.UNTRAINED):  # the tokenizer's weights
                self.addParameter(param)
        self.addParameter(QgsProcessingParameterNumber(p.TILE_SIZE, self.tr("Tile size the graph serves (pixels)"),
                                                       QgsProcessingParameterNumber.Type.Integer, 224, minValue=32,
                                                       maxValue=4096))  # fmt: skip
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("ONNX file"), "ONNX models (*.onnx)"))
        self.addOutput(QgsProcessingOutputFile(self.DECODER, self.tr("Decoder graph (tokenizers)")))
        self.addOutput(QgsProcessingOutputNumber(self.MAX_DEVIATION, self.tr("Largest relative deviation from PyTorch")))
        self.addOutput(QgsProcessingOutputString(self.EXPORT_CHECK, self.tr("Deviation per graph and output (JSON)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        model_file = input_file(self, parameters, self.MODEL_FILE, context, MODEL_SUFFIXES)
        config = input_file(self, parameters, self.CONFIG, context, (".yaml", ".yml"))
        classes = self.parameterAsString(parameters, self.CLASSES, context) or None
        tokenizer = self.parameterAsEnumString(parameters, p.MODEL, context) or None
        weights = self.parameterAsFile(parameters, p.WEIGHTS, context) or None
        untrained = self.parameterAsBoolean(parameters, p.UNTRAINED, context)
        if (model_file is None) == (tokenizer is None):
            raise ConfigError(f"give either {self.MODEL_FILE} (a fine-tuned segmentation model) or {p.MODEL} (a tokenizer), "
                              f"{'not both' if model_file else 'one of them'}")  # fmt: skip
        tile = self.parameterAsInt(parameters, p.TILE_SIZE, context)
        path = check_output_path(self.OUTPUT, self.parameterAsFileOutput(parameters, self.OUTPUT, context), (".onnx",))
        spec = None
        outputs = {"model": OutputTarget(self.OUTPUT, path, "", os.path.basename(path))}
        if model_file is not None:
            if weights or untrained:
                raise ConfigError(f"{p.WEIGHTS} and {p.UNTRAINED} are for tokenizers; "
                                  "the fine-tuned model file holds its weights")
            model = ModelRequest(id=os.path.splitext(os.path.basename(model_file))[0], weights=model_file)
            params = {"kind": "segmentation", "config": config, "classes": classes}
        else:
            if config or classes:
                raise ConfigError(f"{self.CONFIG} and {self.CLASSES} describe a fine-tuned {self.MODEL_FILE}; leave them "
                                  "empty for a tokenizer")  # fmt: skip
            spec = catalogue.get(tokenizer)
            if weights and not os.path.exists(weights):
                raise ConfigError(f"{p.WEIGHTS}: '{weights}' does not exist; give the tokenizer's checkpoint or its folder")
            if weights and untrained:
                raise ConfigError(f"give either {p.WEIGHTS} or {p.UNTRAINED}, not both")
            require_weights(spec, weights, untrained)
            decoder = onnx_decoder_path(path)
            outputs["decoder"] = OutputTarget(self.DECODER, decoder, "", os.path.basename(decoder))
            model = ModelRequest(id=spec.id, weights=weights, untrained=untrained, catalogue_paths=p.catalogue_paths())
            params = {"kind": "tokenizer"}
        tiling = TilingSpec(tile_size=tile, overlap=0, batch_size=1)
        if spec is not None:
            multiple = decoder_tile_multiple(spec, [spec.modality])
            tiling.require_multiple(multiple, "the diffusion decoder works on 32-pixel multiples")
        return RunPlan(task="export_onnx", inputs=[], outputs=outputs, model=model, params=params, tiling=tiling,
                       extent=None, device="cpu", precision="fp32")  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.DECODER, None)
        metrics = result.get("metrics") or {}
        out[self.MAX_DEVIATION] = metrics.get("max_relative_deviation")
        out[self.EXPORT_CHECK] = json.dumps(metrics.get("export_check") or {})
        if out[self.MAX_DEVIATION] is not None:
            feedback.pushInfo(f"Largest relative deviation of ONNX Runtime from PyTorch: {out[self.MAX_DEVIATION]:.2e}")
        return out
