"""Reconstruct with tokenizer: encode a raster to TerraMind tokens and decode it again."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core import catalogue
from ..models.core.job import ModelRequest
from ..models.core.modalities import TOKENIZED, get_modality
from ..models.core.params import ReconstructParams, require_weights
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import check_input
from .planning import destination, layer_name, read_extent


class ReconstructWithTokenizerAlgorithm(TerraMindAlgorithm):
    """Tokenize a raster with a TerraMind tokenizer and decode the tokens back to an image."""

    NAME, DISPLAY_NAME, GROUP = "reconstructwithtokenizer", "Reconstruct with tokenizer", "tokenizers"

    INPUT = "INPUT"
    MODALITY = "MODALITY"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"
    DIFFERENCE = "DIFFERENCE"
    PSNR = "PSNR"
    MAE = "MAE"
    FIELDS = {**dict.fromkeys((f"inputs.{m}" for m in TOKENIZED), "INPUT"), "params.modality": MODALITY,
              "outputs.reconstruction": OUTPUT, "outputs.difference": DIFFERENCE}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(p.enum_param(self.MODALITY, self.tr("Modality of the input"), list(TOKENIZED), "S2L2A"))
        self.addParameter(p.band_mapping_param(self.BANDS, self.tr("Band mapping (the layer's bands in the modality's order)"),
                                               self.INPUT))
        self.addParameter(p.model_param("tokenizer", self.tr("Tokenizer (empty: the official one of the modality)"),
                                        default=None, optional=True))
        self.addParameter(p.timesteps_param())
        self.addParameter(p.seed_param())
        for param in p.shared_params():
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Reconstruction")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.DIFFERENCE, self.tr("Difference (reconstruction - input)"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("PSNR_MEAN", self.tr("PSNR, mean over bands (dB)")))
        self.addOutput(QgsProcessingOutputNumber("MAE_MEAN", self.tr("MAE, mean over bands (raw units)")))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Unchanged classes, fraction of the pixels (LULC)")))
        # PSNR and MAE per band are dictionaries {band: value} in the results (no dictionary output type in QGIS 3.22)

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        modality = get_modality(self.parameterAsEnumString(parameters, self.MODALITY, context))
        bands = p.read_band_mapping(self, parameters, self.BANDS, context)
        item = check_input(self.INPUT, self.parameterAsRasterLayer(parameters, self.INPUT, context), modality, bands,
                           mapping_param=self.BANDS)
        model_id = self.parameterAsEnumString(parameters, p.MODEL, context) or modality.tokenizer_id
        spec = catalogue.get(model_id)
        diff_path = destination(self, parameters, self.DIFFERENCE, context)
        params = ReconstructParams(modality.name, self.parameterAsInt(parameters, p.TIMESTEPS, context),
                                   self.parameterAsInt(parameters, p.SEED, context), bool(diff_path))  # fmt: skip
        params.check(spec, [modality.name])
        shared = p.read_shared(self, parameters, context)
        shared.tiling.require_multiple(params.tile_multiple(spec), "the diffusion decoder works on 32-pixel multiples")
        require_weights(spec, shared.weights, shared.untrained)
        extent = read_extent(self, parameters, context, [item])
        source = item.layer.name()
        outputs = {"reconstruction": OutputTarget(self.OUTPUT, destination(self, parameters, self.OUTPUT, context), modality.name,
                                                  layer_name(f"{modality.name} reconstruction", source, shared.untrained))}
        if diff_path:
            style = "mask" if modality.categorical else f"difference:{modality.name}"  # LULC: changed-class mask
            outputs["difference"] = OutputTarget(self.DIFFERENCE, diff_path, style,
                                                 layer_name(f"{modality.name} difference", source, shared.untrained))
        return RunPlan(
            task="reconstruct",
            inputs=[item],
            outputs=outputs,
            model=ModelRequest(id=model_id, weights=shared.weights, untrained=shared.untrained,
                               catalogue_paths=p.catalogue_paths()),
            params=params.as_params(),
            tiling=shared.tiling, extent=extent, device=shared.device, precision=shared.precision,
        )

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.DIFFERENCE, None)
        metrics = result.get("metrics", {}) or {}
        psnr, mae = per_band(metrics, "psnr"), per_band(metrics, "mae")
        out[self.PSNR], out[self.MAE] = psnr, mae
        out["ACCURACY"] = None
        if "accuracy" in metrics:  # class rasters (LULC): fraction of pixels whose class is unchanged
            out["ACCURACY"] = float(metrics["accuracy"])
            feedback.pushInfo(f"Unchanged classes: {100 * out['ACCURACY']:.2f} % of the pixels")
        out["PSNR_MEAN"] = sum(psnr.values()) / len(psnr) if psnr else None
        out["MAE_MEAN"] = sum(mae.values()) / len(mae) if mae else None
        for band in psnr:
            feedback.pushInfo(f"{band}: PSNR {psnr[band]:.2f} dB, MAE {mae.get(band, float('nan')):.4g}")
        return out


def per_band(metrics: dict[str, Any], name: str) -> dict[str, float]:
    """``{band label: value}`` of one metric from the worker's result (accepts a dict or a list per band)."""
    value = metrics.get(name, metrics.get(name.upper(), {}))
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return {f"band {i + 1}": float(v) for i, v in enumerate(value) if v is not None}
    return {}
