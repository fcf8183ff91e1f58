"""TerraMind's encoder as an embedder behind the runtime seam (torch only; numpy in, numpy out).

``open_embedder(request, spec, params, inputs, modalities, device, progress)`` loads the feature
backbone (``build.load_backbone``: merge mode, band subsets) or, with TiM modalities, the TiM
backbone (``build.load_tim``). ``embed(raw, seed) -> (B, D, h, w)`` float32 takes ``{modality:
(B, C, T, T)}`` raw tiles (nodata already filled), standardises them with the v1 statistics of
each input as the model reads it (its band subset's), runs the encoder, averages the requested
layers (1-based, the last passes through the encoder norm, as in terratorch) and puts the N = h * w
tokens back on their patch grid (row-major, as the patch embedding flattened them). TiM samples its
tokens with ``seed`` (models/terramind/sampler.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.catalogue import ModelSpec
from ..core.embedding_params import EmbedParams
from ..core.job import ModelRequest
from ..core.modalities import Modality
from ..core.progress import Progress
from .device import DeviceChoice
from .info import RuntimeInfo


class TorchEmbedder:
    """A loaded ``TerraMindViT`` / ``TerraMindTiM`` on a torch device."""

    def __init__(self, model: object, device: DeviceChoice, spec: ModelSpec, modalities: Mapping[str, Modality],
                 layers: Sequence[int], tim: bool) -> None:  # fmt: skip
        self.model, self.device, self.layers, self.tim = model, device, tuple(layers), tim
        self.stats = {k: (np.asarray(m.mean, np.float32)[None, :, None, None], np.asarray(m.std, np.float32)[None, :, None, None])
                      for k, m in modalities.items()}  # fmt: skip
        self.dim = int(model.out_channels[-1])  # type: ignore[attr-defined]
        self.info = RuntimeInfo(spec.id, spec.weights.revision if spec.weights else "n/a",
                                dict(model.weights_source), model.untrained)  # type: ignore[attr-defined]  # fmt: skip

    def embed(self, raw: Mapping[str, np.ndarray], seed: int | None = None) -> np.ndarray:
        """``{modality: (B, C, T, T)}`` raw → ``(B, D, T/16, T/16)`` float32."""
        import torch

        x = {}
        for name, value in raw.items():
            mean, std = self.stats[name]
            x[name] = torch.from_numpy((value - mean) / std).to(self.device.device)  # standardised (B, C, T, T)
        with torch.inference_mode(), self.device.autocast():
            out = self.model(x, seed=int(seed or 0)) if self.tim else self.model(x)  # type: ignore[operator]
            chosen = [out[n - 1] for n in self.layers]  # each (B, N, D)
            features = chosen[0] if len(chosen) == 1 else torch.stack(chosen).mean(dim=0)
        b, n, d = features.shape
        side = int(round(n**0.5))
        grid = features.float().cpu().numpy().reshape(b, side, n // side, d)  # (B, h, w, D)
        return np.ascontiguousarray(grid.transpose(0, 3, 1, 2))  # (B, D, h, w)


def open_embedder(request: ModelRequest, spec: ModelSpec, params: EmbedParams, inputs: Sequence[str],
                  modalities: Mapping[str, Modality], device: DeviceChoice, progress: Progress) -> TorchEmbedder:  # fmt: skip
    """Load the encoder of ``spec`` for ``inputs`` (in order) on ``device``."""
    from .. import build

    if params.tim:
        model = build.load_tim(request, list(inputs), list(params.tim), merge_method=params.merge, device=device.device,
                               progress=progress)  # fmt: skip
    else:
        bands = {k: list(v) for k, v in params.bands.items()} or None
        model = build.load_backbone(request, list(inputs), merge_method=params.merge, bands=bands, device=device.device,
                                    progress=progress)  # fmt: skip
    return TorchEmbedder(model, device, spec, {k: modalities[k] for k in inputs}, params.layer_numbers(spec),
                         bool(params.tim))  # fmt: skip
