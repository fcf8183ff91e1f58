"""Apply few-shot classifier: a classifier saved by *Few-shot classify*, applied to other embeddings."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core.embedding_params import ClassifyParams
from ..models.core.errors import ConfigError
from . import embedding_inputs as e
from .base import RunPlan, TerraMindAlgorithm
from .classify_few_shot import class_outputs, summary
from .planning import input_file


class ApplyFewShotClassifierAlgorithm(TerraMindAlgorithm):
    """A saved classifier + embeddings made the same way → class map (and probabilities)."""

    NAME, DISPLAY_NAME, GROUP = "applyfewshotclassifier", "Apply few-shot classifier", "embeddings"
    EMBEDDINGS = e.EMBEDDINGS
    CLASSIFIER = "CLASSIFIER"
    UPSAMPLE = "UPSAMPLE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    CLASS_SUMMARY = "CLASS_SUMMARY"
    FIELDS = {"inputs.EMBEDDINGS": EMBEDDINGS, "params.classifier": CLASSIFIER, "outputs.classes": OUTPUT,
              "outputs.probabilities": OUTPUT_PROBABILITIES}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.EMBEDDINGS, self.tr("Embeddings (from Extract embeddings)")))
        self.addParameter(QgsProcessingParameterFile(self.CLASSIFIER, self.tr("Classifier saved by Few-shot classify"),
                                                     QgsProcessingParameterFile.Behavior.File,
                                                     fileFilter="Few-shot classifiers (*.json)"))  # fmt: skip
        self.addParameter(QgsProcessingParameterBoolean(self.UPSAMPLE, self.tr("Write on the input grid (16 x finer)"), False))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Classes")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Class probabilities"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.CLASS_SUMMARY, self.tr("Classes (JSON: value, name, colour, pixels)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        item = e.embeddings_layer(self, parameters, context)
        classifier = input_file(self, parameters, self.CLASSIFIER, context, (".json",))
        if classifier is None:
            raise ConfigError("choose the classifier file (.json) that 'Few-shot classify' saved", field=self.CLASSIFIER)
        outputs = class_outputs(self, parameters, context, item.layer.name())
        upsample = self.parameterAsBoolean(parameters, self.UPSAMPLE, context)
        params = ClassifyParams(None, os.path.abspath(classifier), upsample=upsample, probabilities="probabilities" in outputs)
        return e.derived_plan("classify", item, outputs, params.as_params())

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_PROBABILITIES, None)
        out[self.CLASS_SUMMARY] = summary(result)
        return out
