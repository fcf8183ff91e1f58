"""The DiVAE DDIM sampler in numpy (for ONNX Runtime decoding; no torch).

The same scheduler as models/tokenizers/ddim.py (terratorch 1.2.11
``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``, ``diffusion_pipeline.py``): sample
prediction, trailing
timesteps ``arange(T, 0, -(T // n)) - 1``, eta = 0, the [-1, 1] clamp of the x0 prediction and
``a_prev = 1`` after the last step. The noise table ``alphas_cumprod`` is not recomputed here: it
is the exporting torch's own float32 table, stored in the denoiser's model card, because torch's
vectorised ``linspace`` rounds differently from numpy's (and between CPU vector widths), and the
whole schedule inherits that. The step keeps torch's float32 operation order; its square roots
are correctly rounded (``numpy.sqrt``), while torch's ``x ** 0.5`` on a 0-d float32 tensor may be
1 ulp off, so a step can differ from ``DDIMScheduler.step`` by about 1e-7 relative (the
clamped x0 prediction is identical).

Dimensions: B batch, C channels, H, W image size, T training timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError


def trailing_timesteps(num_train_timesteps: int, num_inference_steps: int) -> list[int]:
    """Descending trailing timesteps (n=10 of 1000: 999, 899, ..., 99); n not dividing T gives more steps."""
    n = int(num_inference_steps)
    if not 1 <= n <= num_train_timesteps:
        raise ConfigError(f"timesteps must be between 1 and {num_train_timesteps} diffusion steps; got {num_inference_steps}")
    ratio = num_train_timesteps // n
    return [t - 1 for t in range(num_train_timesteps, 0, -ratio)]


@dataclass(frozen=True)
class NumpyDDIM:
    """DDIM with a given ``alphas_cumprod`` table ``(T,)`` float32."""

    alphas_cumprod: np.ndarray  # (T,) float32
    clip_sample: bool = True
    clip_sample_range: float = 1.0

    @classmethod
    def from_table(cls, table: Sequence[float]) -> NumpyDDIM:
        values = np.asarray(table, dtype=np.float32)  # (T,)
        if values.ndim != 1 or values.size < 1 or not np.isfinite(values).all():
            raise ConfigError("the DDIM alphas_cumprod table must be a non-empty list of finite numbers")
        return cls(values)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def timesteps(self, num_inference_steps: int) -> list[int]:
        return trailing_timesteps(self.num_train_timesteps, num_inference_steps)

    def step(
        self, model_output: np.ndarray, timestep: int, sample: np.ndarray, num_inference_steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One update ``x_t → x_prev``; returns (clamped x0 prediction, x_prev), both ``(B, C, H, W)`` float32."""
        x0 = np.asarray(model_output, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        prev_timestep = timestep - self.num_train_timesteps // int(num_inference_steps)
        one = np.float32(1.0)
        alpha_t = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else one
        beta_t = one - alpha_t
        # noise implied by the unclamped prediction (DDIM eq. 12)
        epsilon = (sample - np.sqrt(alpha_t) * x0) / np.sqrt(beta_t)  # (B, C, H, W)
        if self.clip_sample:
            x0 = np.clip(x0, np.float32(-self.clip_sample_range), np.float32(self.clip_sample_range))
        direction = np.sqrt(one - alpha_prev) * epsilon  # (B, C, H, W)
        prev = np.sqrt(alpha_prev) * x0 + direction  # (B, C, H, W)
        return x0, prev.astype(np.float32, copy=False)
