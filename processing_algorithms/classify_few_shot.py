"""Few-shot classify: a classifier from a few labelled points or polygons on the embeddings, cross-validated."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core.embedding_params import DEFAULT_FOLDS, DEFAULT_REGULARIZATION, MAX_FOLDS, ClassifyParams
from ..models.core.errors import ConfigError
from ..models.core.params import MAX_SEED
from . import embedding_inputs as e
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import destination
from .vector_features import extent_bounds, read_features

CLASSIFIER_FILTER = "Few-shot classifiers (*.json)"


def class_outputs(alg: TerraMindAlgorithm, parameters: dict, context: QgsProcessingContext, name: str) -> dict:
    """The class raster and the optional probabilities (shared with *Apply few-shot classifier*)."""
    outputs = {"classes": OutputTarget("OUTPUT", destination(alg, parameters, "OUTPUT", context), "classes",
                                       f"Classes ({name})")}  # fmt: skip
    prob = destination(alg, parameters, "OUTPUT_PROBABILITIES", context)
    if prob:
        outputs["probabilities"] = OutputTarget("OUTPUT_PROBABILITIES", prob, "probability", f"Class probabilities ({name})")
    return outputs


def summary(result: dict[str, Any]) -> str:
    m = result.get("metrics") or {}
    pixels = m.get("class_pixels") or {}
    return json.dumps([{**c, "pixels": pixels.get(c["name"])} for c in m.get("classes", [])])


class ClassifyFewShotAlgorithm(TerraMindAlgorithm):
    """Labelled features + embeddings → logistic regression, k-fold accuracy, class map, saved classifier."""

    NAME, DISPLAY_NAME, GROUP = "classifyfewshot", "Few-shot classify", "embeddings"
    EMBEDDINGS = e.EMBEDDINGS
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    FOLDS = "FOLDS"
    REGULARIZATION = "REGULARIZATION"
    UPSAMPLE = "UPSAMPLE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_CLASSIFIER = "OUTPUT_CLASSIFIER"
    CV_ACCURACY = "CV_ACCURACY"
    CV_BALANCED_ACCURACY = "CV_BALANCED_ACCURACY"
    CONFUSION_MATRIX = "CONFUSION_MATRIX"
    CLASS_SUMMARY = "CLASS_SUMMARY"
    FIELDS = {"inputs.EMBEDDINGS": EMBEDDINGS, "params.labels": LABELS, "params.labels.class": CLASS_FIELD,
              "params.folds": FOLDS, "params.regularization": REGULARIZATION, "outputs.classes": OUTPUT,
              "outputs.probabilities": OUTPUT_PROBABILITIES, "outputs.classifier": OUTPUT_CLASSIFIER}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        integer, double = QgsProcessingParameterNumber.Type.Integer, QgsProcessingParameterNumber.Type.Double
        self.addParameter(QgsProcessingParameterRasterLayer(self.EMBEDDINGS, self.tr("Embeddings (from Extract embeddings)")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, self.tr("Labelled points or polygons"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Class field"),
                                                      parentLayerParameterName=self.LABELS))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.FOLDS, self.tr("Cross-validation folds"), integer, DEFAULT_FOLDS,
                                                       minValue=2, maxValue=MAX_FOLDS))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(p.SEED, self.tr("Random seed (folds, sampling)"), integer, 0,
                                                       minValue=0, maxValue=MAX_SEED))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterNumber(
            self.REGULARIZATION, self.tr("L2 regularisation of the logistic regression"), double, DEFAULT_REGULARIZATION,
            minValue=1e-6, maxValue=1e3)))  # fmt: skip
        self.addParameter(QgsProcessingParameterBoolean(self.UPSAMPLE, self.tr("Write on the input grid (16 x finer)"), False))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Classes")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Class probabilities"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CLASSIFIER, self.tr("Fitted classifier (to apply to other embeddings)"), CLASSIFIER_FILTER,
            optional=True, createByDefault=True))  # fmt: skip
        self.addOutput(QgsProcessingOutputNumber(self.CV_ACCURACY, self.tr("Cross-validated accuracy (0-1, per pixel)")))
        self.addOutput(QgsProcessingOutputNumber(self.CV_BALANCED_ACCURACY, self.tr("Cross-validated balanced accuracy")))
        self.addOutput(QgsProcessingOutputString(self.CONFUSION_MATRIX, self.tr("Confusion matrix (JSON: classes, rows "
                                                                                "true, columns predicted)")))  # fmt: skip
        self.addOutput(QgsProcessingOutputString(self.CLASS_SUMMARY, self.tr("Classes (JSON: value, name, colour, pixels)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        item = e.embeddings_layer(self, parameters, context)
        layer = item.layer
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        if not field:
            raise ConfigError("choose the field that holds each feature's class", field="params.labels.class")
        labels = read_features(self, parameters, self.LABELS, context, layer.crs(), field="params.labels", class_field=field)
        labels.require_inside(extent_bounds(layer.extent()), "params.labels", f"the embedding raster layer '{layer.name()}'")
        outputs = class_outputs(self, parameters, context, layer.name())
        classifier = self.parameterAsFileOutput(parameters, self.OUTPUT_CLASSIFIER, context)
        if classifier:
            outputs["classifier"] = OutputTarget(self.OUTPUT_CLASSIFIER, classifier, "", "classifier")
        params = ClassifyParams(labels, None, self.parameterAsInt(parameters, self.FOLDS, context),
                                self.parameterAsInt(parameters, p.SEED, context),
                                self.parameterAsDouble(parameters, self.REGULARIZATION, context),
                                self.parameterAsBoolean(parameters, self.UPSAMPLE, context),
                                "probabilities" in outputs)  # fmt: skip
        return e.derived_plan("classify", item, outputs, params.as_params())

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        for key in (self.OUTPUT_PROBABILITIES, self.OUTPUT_CLASSIFIER):
            out.setdefault(key, None)
        m = result.get("metrics") or {}
        out[self.CV_ACCURACY] = m.get("cv_accuracy")
        out[self.CV_BALANCED_ACCURACY] = m.get("cv_balanced_accuracy")
        names = [c["name"] for c in m.get("classes", [])]
        out[self.CONFUSION_MATRIX] = json.dumps({"classes": names, "matrix": m.get("confusion_matrix")})
        out[self.CLASS_SUMMARY] = summary(result)
        if out[self.CV_ACCURACY] is not None:
            feedback.pushInfo(f"{m.get('folds')}-fold cross-validation over {m.get('features')} labelled features "
                              f"({m.get('pixels')} pixels): accuracy {100 * out[self.CV_ACCURACY]:.1f} %, balanced "
                              f"{100 * out[self.CV_BALANCED_ACCURACY]:.1f} %")  # fmt: skip
            for name, row in zip(names, m.get("confusion_matrix") or []):
                feedback.pushInfo(f"  true {name}: " + ", ".join(f"{n} as {c}" for c, n in zip(names, row)))
        return out
