"""Cluster embeddings: split a region into its natural kinds of land with k-means on the embeddings."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core.embedding_params import DEFAULT_SAMPLE_SIZE, MAX_CLUSTERS, ClusterParams
from ..models.core.params import MAX_SEED
from . import embedding_inputs as e
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import destination


class ClusterEmbeddingsAlgorithm(TerraMindAlgorithm):
    """k-means (k, seed, sample size) on an embedding raster → a class raster with a palette and the centres."""

    NAME, DISPLAY_NAME, GROUP = "clusterembeddings", "Cluster embeddings", "embeddings"
    EMBEDDINGS = e.EMBEDDINGS
    K = "K"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    MAX_ITERATIONS = "MAX_ITERATIONS"
    OUTPUT = "OUTPUT"
    OUTPUT_CENTRES = "OUTPUT_CENTRES"
    CLUSTER_SUMMARY = "CLUSTER_SUMMARY"
    FIELDS = {"inputs.EMBEDDINGS": EMBEDDINGS, "params.k": K, "params.sample_size": SAMPLE_SIZE,
              "params.max_iterations": MAX_ITERATIONS, "outputs.clusters": OUTPUT, "outputs.centres": OUTPUT_CENTRES}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        d = ClusterParams()
        integer = QgsProcessingParameterNumber.Type.Integer
        self.addParameter(QgsProcessingParameterRasterLayer(self.EMBEDDINGS, self.tr("Embeddings (from Extract embeddings)")))
        self.addParameter(QgsProcessingParameterNumber(self.K, self.tr("Number of clusters (k)"), integer, d.k, minValue=2,
                                                       maxValue=MAX_CLUSTERS))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(p.SEED, self.tr("Random seed (same seed, same clusters)"), integer,
                                                       0, minValue=0, maxValue=MAX_SEED))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.SAMPLE_SIZE, self.tr("Pixels k-means is fitted on (a random "
                                                       "sample)"), integer, DEFAULT_SAMPLE_SIZE, minValue=2))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterNumber(
            self.MAX_ITERATIONS, self.tr("Most k-means iterations"), integer, d.max_iterations, minValue=1,
            maxValue=10000)))  # fmt: skip
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Clusters")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CENTRES, self.tr("Cluster centres (CSV table)"), "CSV files (*.csv)", optional=True,
            createByDefault=False))  # fmt: skip
        self.addOutput(QgsProcessingOutputString(self.CLUSTER_SUMMARY, self.tr("Clusters (JSON: value, name, colour, pixels)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        item = e.embeddings_layer(self, parameters, context)
        params = ClusterParams(self.parameterAsInt(parameters, self.K, context), self.parameterAsInt(parameters, p.SEED, context),
                               self.parameterAsInt(parameters, self.SAMPLE_SIZE, context),
                               self.parameterAsInt(parameters, self.MAX_ITERATIONS, context))  # fmt: skip
        name = item.layer.name()
        outputs = {"clusters": OutputTarget(self.OUTPUT, destination(self, parameters, self.OUTPUT, context), "classes",
                                            f"Clusters ({name})")}  # fmt: skip
        centres = self.parameterAsFileOutput(parameters, self.OUTPUT_CENTRES, context)
        if centres:
            outputs["centres"] = OutputTarget(self.OUTPUT_CENTRES, centres, "", f"Cluster centres ({name})")
        return e.derived_plan("cluster", item, outputs, params.as_params())

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_CENTRES, None)
        m = result.get("metrics") or {}
        pixels = m.get("cluster_pixels") or {}
        summary = [{**c, "pixels": pixels.get(c["name"])} for c in m.get("classes", [])]
        out[self.CLUSTER_SUMMARY] = json.dumps(summary)
        feedback.pushInfo(f"k-means: {m.get('k')} clusters from {m.get('sample')} sampled pixels, "
                          f"{m.get('iterations')} iterations{'' if m.get('converged') else ' (not converged)'}")  # fmt: skip
        return out
