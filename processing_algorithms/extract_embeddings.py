"""Extract embeddings: TerraMind's encoder features as a raster, one pixel per 16 x 16 patch."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterDestination,
)

from ..models.core.embedding_params import DATA_TYPES, check_token_tiling
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.params import require_weights
from . import embedding_inputs
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import destination, layer_name, read_extent


class ExtractEmbeddingsAlgorithm(TerraMindAlgorithm):
    """Any input set the backbone accepts → a GeoTIFF of D bands on the 16x coarser token grid."""

    NAME, DISPLAY_NAME, GROUP = "extractembeddings", "Extract embeddings", "embeddings"
    DATA_TYPE = "DATA_TYPE"
    OUTPUT = "OUTPUT"
    OUTPUT_PCA = "OUTPUT_PCA"
    DIMENSIONS = "DIMENSIONS"
    FIELDS = {**embedding_inputs.FIELDS, "params.dtype": DATA_TYPE, "outputs.embeddings": OUTPUT, "outputs.pca": OUTPUT_PCA}

    def initAlgorithm(self, config: dict | None = None) -> None:
        embedding_inputs.add_parameters(self)
        self.addParameter(p.enum_param(self.DATA_TYPE, self.tr("Data type of the embeddings"), list(DATA_TYPES), "float32"))
        for param in p.shared_params():
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Embeddings")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PCA, self.tr("False-colour view (PCA, 3 bands)"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.DIMENSIONS, self.tr("Dimensions (bands) of the embeddings")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        pca_path = destination(self, parameters, self.OUTPUT_PCA, context)
        choice = embedding_inputs.read(self, parameters, context, dtype=self.parameterAsEnumString(
            parameters, self.DATA_TYPE, context) or "float32", pca=bool(pca_path))  # fmt: skip
        if choice is None:
            raise ConfigError(f"give at least one input layer ({', '.join(embedding_inputs.INPUT_PARAMS.values())})",
                              field="inputs")  # fmt: skip
        shared = p.read_shared(self, parameters, context)
        check_token_tiling(shared.tiling)
        require_weights(choice.spec, shared.weights, shared.untrained)
        extent = read_extent(self, parameters, context, choice.inputs)
        source = choice.inputs[0].layer.name()
        outputs = {"embeddings": OutputTarget(self.OUTPUT, destination(self, parameters, self.OUTPUT, context),
                                              "embeddings", layer_name("Embeddings", source, shared.untrained))}  # fmt: skip
        if pca_path:
            outputs["pca"] = OutputTarget(self.OUTPUT_PCA, pca_path, "embeddings",
                                          layer_name("Embeddings PCA", source, shared.untrained))  # fmt: skip
        return RunPlan(
            task="embed", inputs=choice.inputs, outputs=outputs,
            model=ModelRequest(id=choice.spec.id, weights=shared.weights, untrained=shared.untrained,
                               catalogue_paths=p.catalogue_paths()),
            params=choice.params.as_params(), tiling=shared.tiling, extent=extent, device=shared.device,
            precision=shared.precision,
        )  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_PCA, None)
        metrics = result.get("metrics") or {}
        out[self.DIMENSIONS] = metrics.get("dim")
        grid = metrics.get("token_grid") or ["?", "?"]
        feedback.pushInfo(f"Embeddings: {metrics.get('dim')} dimensions on a {grid[0]} x {grid[1]} grid of "
                          f"{metrics.get('pixel_size', 160):g} m pixels")  # fmt: skip
        if metrics.get("explained_variance"):
            feedback.pushInfo("PCA view: the three components explain "
                              + ", ".join(f"{100 * v:.1f} %" for v in metrics["explained_variance"]) + " of the variance")
        return out
