"""Map water (zero-shot): water from the land cover TerraMind generates out of Sentinel-2 (and Sentinel-1)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core import catalogue
from ..models.core.job import ModelRequest
from ..models.core.modalities import MODALITIES
from ..models.core.params import MapWaterParams, require_weights
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import check_input
from .planning import destination, layer_name, read_extent


class MapWaterZeroShotAlgorithm(TerraMindAlgorithm):
    """Generate land cover with TerraMind and keep its Water class (optionally flooded vegetation)."""

    NAME, DISPLAY_NAME, GROUP = "mapwaterzeroshot", "Map water (zero-shot)", "segmentation"

    INPUT_S2L2A = "INPUT_S2L2A"
    BANDS_S2L2A = "BANDS_S2L2A"
    INPUT_S1GRD = "INPUT_S1GRD"
    INPUT_S1RTC = "INPUT_S1RTC"
    FLOODED_VEGETATION = "FLOODED_VEGETATION"
    TEMPERATURE, TOP_P, TOP_K = p.TEMPERATURE, p.TOP_P, p.TOP_K
    OUTPUT_WATER = "OUTPUT_WATER"
    OUTPUT_LULC = "OUTPUT_LULC"
    WATER_FRACTION = "WATER_FRACTION"
    WATER_AREA = "WATER_AREA"
    DEFAULT_MODEL = "terramind_v1_base"
    FIELDS = {"inputs.S2L2A": INPUT_S2L2A, "outputs.water": OUTPUT_WATER, "outputs.lulc": OUTPUT_LULC,
              "params.flooded_vegetation": FLOODED_VEGETATION}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        title = self.tr("Input {}").format(MODALITIES["S2L2A"].title)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_S2L2A, title))
        self.addParameter(p.advanced(p.band_mapping_param(
            self.BANDS_S2L2A, self.tr("Band mapping of S2L2A (B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12)"),
            self.INPUT_S2L2A)))
        for key, modality in ((self.INPUT_S1GRD, "S1GRD"), (self.INPUT_S1RTC, "S1RTC")):
            self.addParameter(QgsProcessingParameterRasterLayer(
                key, self.tr("Input {} (optional)").format(MODALITIES[modality].title), optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.FLOODED_VEGETATION, self.tr("Count flooded vegetation as water"), False))
        self.addParameter(p.model_param("terramind", self.tr("Model"), default=self.DEFAULT_MODEL))
        for param in p.sampling_params(as_advanced=True):
            self.addParameter(param)
        self.addParameter(p.seed_param())
        for param in p.shared_params():
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_WATER, self.tr("Water mask")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LULC, self.tr("Generated land cover"), optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber(self.WATER_FRACTION, self.tr("Water fraction of the valid pixels")))
        self.addOutput(QgsProcessingOutputNumber(self.WATER_AREA, self.tr("Water area (m²)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        bands = p.read_band_mapping(self, parameters, self.BANDS_S2L2A, context)
        inputs = [check_input(self.INPUT_S2L2A, self.parameterAsRasterLayer(parameters, self.INPUT_S2L2A, context),
                              MODALITIES["S2L2A"], bands, mapping_param=self.BANDS_S2L2A)]  # fmt: skip
        for key, modality in ((self.INPUT_S1GRD, "S1GRD"), (self.INPUT_S1RTC, "S1RTC")):
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is not None:
                inputs.append(check_input(key, layer, MODALITIES[modality]))
        spec = catalogue.get(self.parameterAsEnumString(parameters, p.MODEL, context) or self.DEFAULT_MODEL)
        params = MapWaterParams(self.parameterAsBoolean(parameters, self.FLOODED_VEGETATION, context),
                                p.read_sampling(self, parameters, context),
                                self.parameterAsInt(parameters, p.SEED, context))  # fmt: skip
        params.check(spec, [item.modality.name for item in inputs])
        shared = p.read_shared(self, parameters, context)
        require_weights(spec, shared.weights, shared.untrained)
        extent = read_extent(self, parameters, context, inputs)
        source = inputs[0].layer.name()
        outputs = {"water": OutputTarget(self.OUTPUT_WATER, destination(self, parameters, self.OUTPUT_WATER, context),
                                         "mask", layer_name("Water", source, shared.untrained))}  # fmt: skip
        lulc_path = destination(self, parameters, self.OUTPUT_LULC, context)
        if lulc_path:
            outputs["lulc"] = OutputTarget(self.OUTPUT_LULC, lulc_path, "LULC",
                                           layer_name("Generated land cover", source, shared.untrained))  # fmt: skip
        return RunPlan(
            task="map_water",
            inputs=inputs,
            outputs=outputs,
            model=ModelRequest(id=spec.id, weights=shared.weights, untrained=shared.untrained,
                               catalogue_paths=p.catalogue_paths()),
            params=params.as_params(),
            tiling=shared.tiling, extent=extent, device=shared.device, precision=shared.precision,
        )  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = super().results(plan, result, feedback)
        out.setdefault(self.OUTPUT_LULC, None)
        metrics = result.get("metrics", {}) or {}
        out[self.WATER_FRACTION] = metrics.get("water_fraction")
        out[self.WATER_AREA] = metrics.get("water_area_m2")
        if out[self.WATER_FRACTION] is not None:
            area = f", {out[self.WATER_AREA] / 1e6:.4g} km²" if out[self.WATER_AREA] is not None else ""
            feedback.pushInfo(f"Water: {100 * out[self.WATER_FRACTION]:.2f} % of the valid pixels{area}")
        return out
