"""Generate modalities: TerraMind any-to-any generation from one or more input rasters."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.modalities import IMAGE_OUTPUTS, INPUTS, MODALITIES
from ..models.core.params import GenerateParams, require_weights
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import check_input
from .planning import destination, layer_name, read_extent


class GenerateModalitiesAlgorithm(TerraMindAlgorithm):
    """Generate the chosen output modalities from whichever input modalities are given."""

    NAME, DISPLAY_NAME, GROUP = "generatemodalities", "Generate modalities", "generation"
    OUTPUTS = "OUTPUTS"
    TEMPERATURE, TOP_P, TOP_K = p.TEMPERATURE, p.TOP_P, p.TOP_K
    INPUT_PARAMS = {m: f"INPUT_{m}" for m in INPUTS}  # S2L2A, S2L1C, S2RGB, S1GRD, S1RTC, DEM, LULC, NDVI
    OUTPUT_PARAMS = {m: f"OUTPUT_{m}" for m in IMAGE_OUTPUTS}  # S2L2A, S1GRD, S1RTC, DEM, NDVI, LULC
    DEFAULT_MODEL = "terramind_v1_base"
    FIELDS = {"params.outputs": OUTPUTS, "inputs": ", ".join(INPUT_PARAMS.values())}

    def initAlgorithm(self, config: dict | None = None) -> None:
        for modality, key in self.INPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterLayer(
                key, self.tr("Input {}").format(MODALITIES[modality].title), optional=True))
        self.addParameter(p.enum_param(self.OUTPUTS, self.tr("Outputs to generate (in generation order)"),
                                       list(IMAGE_OUTPUTS), None, multiple=True))
        self.addParameter(p.model_param("terramind", self.tr("Model"), default=self.DEFAULT_MODEL))
        self.addParameter(p.timesteps_param())
        for param in p.sampling_params():
            self.addParameter(param)
        self.addParameter(p.seed_param())
        for param in p.shared_params():
            self.addParameter(param)
        for modality, key in self.OUTPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterDestination(
                key, self.tr("Generated {}").format(modality), optional=True, createByDefault=True))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        inputs = []
        for modality, key in self.INPUT_PARAMS.items():
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is not None:
                inputs.append(check_input(key, layer, MODALITIES[modality]))
        if not inputs:
            raise ConfigError(f"give at least one input layer ({', '.join(self.INPUT_PARAMS.values())})")
        spec = catalogue.get(self.parameterAsEnumString(parameters, p.MODEL, context) or self.DEFAULT_MODEL)
        params = GenerateParams(tuple(self.parameterAsEnumStrings(parameters, self.OUTPUTS, context)),
                                self.parameterAsInt(parameters, p.TIMESTEPS, context),
                                p.read_sampling(self, parameters, context),
                                self.parameterAsInt(parameters, p.SEED, context))  # fmt: skip
        params.check(spec, [item.modality.name for item in inputs])
        shared = p.read_shared(self, parameters, context)
        shared.tiling.require_multiple(params.tile_multiple(spec), "the diffusion decoders work on 32-pixel multiples")
        require_weights(spec, shared.weights, shared.untrained)
        extent = read_extent(self, parameters, context, inputs)
        source = inputs[0].layer.name()
        outputs = {}
        for modality in params.outputs:
            key = self.OUTPUT_PARAMS[modality]
            path = destination(self, parameters, key, context, fallback_name=f"{modality}.tif")
            outputs[modality] = OutputTarget(key, path, modality,
                                             layer_name(f"Generated {modality}", source, shared.untrained))
        skipped = [destination(self, parameters, key, context) for m, key in self.OUTPUT_PARAMS.items()
                   if m not in params.outputs]  # fmt: skip
        tokenizer_weights = {}
        if shared.weights and os.path.isdir(shared.weights):
            tokenizer_weights = {m: shared.weights for m in {*params.outputs, *(i.modality.name for i in inputs)}
                                 if m in spec.tokenizers}  # a folder holding the tokenizers' files too
        return RunPlan(
            task="generate",
            inputs=inputs,
            outputs=outputs,
            model=ModelRequest(id=spec.id, weights=shared.weights, tokenizer_weights=tokenizer_weights,
                               untrained=shared.untrained, catalogue_paths=p.catalogue_paths()),
            params=params.as_params(),
            tiling=shared.tiling, extent=extent, device=shared.device, precision=shared.precision,
            skipped_outputs=[s for s in skipped if s],
        )

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = {key: None for key in self.OUTPUT_PARAMS.values()}  # outputs not requested: None
        out.update(super().results(plan, result, feedback))
        return out
