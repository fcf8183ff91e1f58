"""TerraMind any-to-any generation behind the runtime seam (torch only; numpy in, numpy out).

``open_generator(request, inputs, outputs, device, progress)`` loads ``TerraMindGeneration`` with
its tokenizers (models/build.py). ``generate(raw, seed, sampling, timesteps, progress)`` takes
``{modality: (B, C, T, T)}`` raw float32 tiles and returns ``{output: (B, C, T, T)}``: de-standardised
pixels, or class logits for LULC, following the model's random-number contract for ``seed``
(models/terramind/sampler.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.catalogue import ModelSpec
from ..core.job import ModelRequest
from ..core.params import Sampling
from ..core.progress import Progress
from .device import DeviceChoice, prepare_decoders
from .info import RuntimeInfo


class TorchGenerator:
    """A loaded ``TerraMindGeneration`` on a torch device."""

    def __init__(self, model: object, device: DeviceChoice, spec: ModelSpec, outputs: Sequence[str]) -> None:
        self.model, self.device, self.outputs = model, device, list(outputs)
        prepare_decoders(model, device)  # bf16/fp16: the diffusion UNets' weights cast once, not per call
        self.info = RuntimeInfo(spec.id, spec.weights.revision if spec.weights else "n/a",
                                dict(model.weights_source), model.untrained)  # type: ignore[attr-defined]  # fmt: skip

    def generate(self, raw: Mapping[str, np.ndarray], seed: int, sampling: Sampling, timesteps: int,
                 progress: Progress) -> dict[str, np.ndarray]:  # fmt: skip
        import torch

        x = {k: torch.from_numpy(v).to(self.device.device) for k, v in raw.items()}  # {modality: (B, C, T, T)} raw
        with torch.inference_mode(), self.device.autocast():
            out = self.model(x, seed=seed, sampling=sampling, timesteps=timesteps, standardize=True,  # type: ignore[operator]
                             progress=progress)  # fmt: skip
        return {k: out[k].float().cpu().numpy() for k in self.outputs}  # {output: (B, C, T, T)}


def open_generator(request: ModelRequest, spec: ModelSpec, inputs: Sequence[str], outputs: Sequence[str],
                   device: DeviceChoice, progress: Progress) -> TorchGenerator:  # fmt: skip
    from .. import build

    model = build.load_generation(request, list(inputs), list(outputs), device=device.device, progress=progress)
    return TorchGenerator(model, device, spec, outputs)
