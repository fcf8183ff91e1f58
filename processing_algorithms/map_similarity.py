"""Map similarity: every place's cosine similarity to reference points or polygons, from the embeddings."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsRectangle,
)

from ..models.core.embedding_params import AGGREGATES, SimilarityParams, check_token_tiling
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.params import require_weights
from . import embedding_inputs as e
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import destination, layer_name, read_extent
from .vector_features import extent_bounds, read_features


class MapSimilarityAlgorithm(TerraMindAlgorithm):
    """Cosine similarity of every embedding pixel to the references (their mean, or the most similar one)."""

    NAME, DISPLAY_NAME, GROUP = "mapsimilarity", "Map similarity", "embeddings"
    EMBEDDINGS = e.EMBEDDINGS
    REFERENCES = "REFERENCES"
    AGGREGATE = "AGGREGATE"
    OUTPUT = "OUTPUT"
    FIELDS = {**e.FIELDS, "inputs.EMBEDDINGS": EMBEDDINGS, "params.references": REFERENCES,
              "params.aggregate": AGGREGATE, "outputs.similarity": OUTPUT}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.EMBEDDINGS, self.tr("Embeddings (from Extract embeddings; or give input layers below)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.REFERENCES, self.tr("Reference points or polygons"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        self.addParameter(p.enum_param(self.AGGREGATE, self.tr("Several references: similarity to their mean, or the "
                                                               "highest (max)"), list(AGGREGATES), "mean"))  # fmt: skip
        e.add_parameters(self, inputs_optional_note=" (instead of embeddings)")
        for param in p.shared_params():
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Similarity")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        item = e.embeddings_layer(self, parameters, context, required=False)
        choice = e.read(self, parameters, context)
        if item is not None and choice is not None:
            raise ConfigError("give either the embedding raster or input layers to embed, not both", field="inputs.EMBEDDINGS")
        if item is None and choice is None:
            raise ConfigError("give the embedding raster (from 'Extract embeddings') or the input layers to embed",
                              field="inputs.EMBEDDINGS")  # fmt: skip
        aggregate = self.parameterAsEnumString(parameters, self.AGGREGATE, context) or "mean"
        path = destination(self, parameters, self.OUTPUT, context)
        if item is not None:
            layer = item.layer
            refs = read_features(self, parameters, self.REFERENCES, context, layer.crs(), field="params.references")
            refs.require_inside(extent_bounds(layer.extent()), "params.references",
                                f"the embedding raster layer '{layer.name()}'")
            outputs = {"similarity": OutputTarget(self.OUTPUT, path, "similarity", f"Similarity ({layer.name()})")}
            return e.derived_plan("similarity", item, outputs, SimilarityParams(refs, aggregate).as_params())
        assert choice is not None
        shared = p.read_shared(self, parameters, context)
        check_token_tiling(shared.tiling)
        require_weights(choice.spec, shared.weights, shared.untrained)
        extent = read_extent(self, parameters, context, choice.inputs)
        first = choice.inputs[0].layer
        refs = read_features(self, parameters, self.REFERENCES, context, first.crs(), field="params.references")
        area = QgsRectangle(first.extent()) if extent is None else extent.intersect(first.extent())
        refs.require_inside(extent_bounds(area), "params.references", f"the area of layer '{first.name()}'")
        outputs = {"similarity": OutputTarget(self.OUTPUT, path, "similarity",
                                              layer_name("Similarity", first.name(), shared.untrained))}  # fmt: skip
        return RunPlan(
            task="similarity", inputs=choice.inputs, outputs=outputs,
            model=ModelRequest(id=choice.spec.id, weights=shared.weights, untrained=shared.untrained,
                               catalogue_paths=p.catalogue_paths()),
            params={**choice.params.as_params(), **SimilarityParams(refs, aggregate).as_params()},
            tiling=shared.tiling, extent=extent, device=shared.device, precision=shared.precision,
        )  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        m = result.get("metrics") or {}
        if m.get("similarity_mean") is not None:
            feedback.pushInfo(f"{m['references']} reference(s); similarity {m['similarity_min']:.3f} to "
                              f"{m['similarity_max']:.3f} (mean {m['similarity_mean']:.3f})")  # fmt: skip
        return out
