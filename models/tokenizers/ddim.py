"""Standalone DDIM scheduler exactly as the TerraMind v1 DiVAE tokenizers configure it (terratorch 1.2.11
``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``, ``diffusion_pipeline.py``).

No diffusers dependency. Mirrors terratorch 1.2.11 ``tokenizer/scheduling/{scheduling_ddim,
scheduling_utils}.py`` with the configuration the DiVAEs build (``DDIMScheduler(num_train_timesteps=
1000, thresholding=True, clip_sample=True, beta_schedule='linear', prediction_type='sample',
zero_terminal_snr=True)``, diffusers defaults otherwise) and ``PipelineCond``'s call (``eta=0``,
``mode='trailing'``, ``steps_offset=0``, ``set_alpha_to_one=True``):

1. Noise schedule (float32): ``beta = linspace(1e-4, 0.02, 1000)``; zero-terminal-SNR rescale
   (arXiv:2305.08891, Alg. 1) of ``sqrt(alpha_bar)`` so that ``alpha_bar[999] == 0``; betas are
   recomputed from the ratios and ``alpha_bar = cumprod(1 - beta)``.
2. Trailing timesteps: ``arange(1000, 0, -(1000 // n)) - 1`` (n=10: 999, 899, ..., 99). When n does
   not divide 1000 this gives more than n steps (n=3: 999, 666, 333, 0), as in the reference.
3. Step (DDIM paper arXiv:2010.02502, eq. 12, eta = 0), the model predicting the clean sample:
   ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` from the *unclamped* prediction; then
   ``x0 = clamp(x0, -1, 1)`` — the reference's dynamic thresholding, whose percentile ``s`` is
   clamped to ``[1, sample_max_value=1]`` and so is always 1; then
   ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps`` with ``a_prev = 1`` after the last step.

Everything runs in float32. The schedule tables are plain CPU tensors made at construction with an
explicit device (not module buffers), so building under ``torch.device("meta")`` is harmless and
moving a tokenizer between devices leaves them where they are; scalars from them broadcast onto
tensors on any device. The arithmetic keeps the reference's operation order on 0-d float32
tensors, so results are bit-identical to it on the same device.

Dimensions: B batch, C channels, H, W image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ConfigError


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """``linspace(beta_start, beta_end, T)`` in float32 on the CPU."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32, device="cpu")


def enforce_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so that the last timestep has zero SNR (arXiv:2305.08891, Algorithm 1)."""
    alphas = 1 - betas
    alphas_bar = alphas.cumprod(0)
    alphas_bar_sqrt = alphas_bar.sqrt()
    alphas_bar_sqrt_0 = alphas_bar_sqrt[0].clone()
    alphas_bar_sqrt_t = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= alphas_bar_sqrt_t  # last timestep -> 0
    alphas_bar_sqrt *= alphas_bar_sqrt_0 / (alphas_bar_sqrt_0 - alphas_bar_sqrt_t)  # first back to old value
    alphas_bar = alphas_bar_sqrt**2
    alphas = alphas_bar[1:] / alphas_bar[:-1]
    alphas = torch.cat([alphas_bar[0:1], alphas])
    return 1 - alphas


@dataclass(frozen=True)
class DDIMStepOutput:
    """One denoising step: the model's raw prediction, the clamped x0 and the next sample."""

    index: int  # 0-based step number
    timestep: int
    model_output: torch.Tensor  # (B, C, H, W) float32, the unclamped x0 prediction
    pred_original_sample: torch.Tensor  # (B, C, H, W) float32, clamped to [-1, 1]
    prev_sample: torch.Tensor  # (B, C, H, W) float32, the next x


class DDIMScheduler:
    """DDIM with sample prediction, trailing spacing, zero terminal SNR and the [-1, 1] clamp.

    ``clip_sample=False`` disables the clamp of the x0 prediction (not the reference's behaviour;
    for experiments only).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        zero_terminal_snr: bool = True,
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        self.num_train_timesteps = int(num_train_timesteps)
        self.clip_sample = clip_sample
        self.clip_sample_range = float(clip_sample_range)
        betas = linear_betas(self.num_train_timesteps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = enforce_zero_terminal_snr(betas)
        self.betas = betas  # (T,)
        self.alphas = 1.0 - betas  # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # (T,)
        self.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float32, device="cpu")

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """The trailing timesteps for ``num_inference_steps`` (descending)."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ConfigError(
                f"timesteps must be between 1 and {self.num_train_timesteps} diffusion steps; got {num_inference_steps}"
            )
        step_ratio = self.num_train_timesteps // n
        return [t - 1 for t in range(self.num_train_timesteps, 0, -step_ratio)]

    def step_ratio(self, num_inference_steps: int) -> int:
        """Distance between consecutive trailing timesteps."""
        return self.num_train_timesteps // int(num_inference_steps)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        num_inference_steps: int,
        index: int = 0,
    ) -> DDIMStepOutput:
        """One DDIM update ``x_t -> x_prev`` from the model's clean-sample prediction."""
        model_output = model_output.float()
        sample = sample.float()
        raw_prediction = model_output
        # 1. previous timestep (t - 1000 // n)
        prev_timestep = timestep - self.step_ratio(num_inference_steps)
        # 2. alphas and betas (0-d float32 tensors, as in the reference)
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        # 3. predicted x0 (the model output) and the noise implied by it (eq. 12), before clamping
        pred_original_sample = model_output
        pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        # 4. dynamic thresholding with s clamped to [1, 1] == clipping to [-1, 1]
        if self.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.clip_sample_range, self.clip_sample_range)
        # 5.-7. eta = 0: no variance; direction to x_t and x_prev (eq. 12)
        pred_sample_direction = (1 - alpha_prod_t_prev) ** (0.5) * pred_epsilon
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        return DDIMStepOutput(index, int(timestep), raw_prediction, pred_original_sample, prev_sample)
