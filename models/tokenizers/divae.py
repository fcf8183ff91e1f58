"""DiVAE: ViT encoder + FSQ + diffusion UNet decoder sampled with DDIM (S2L2A, S1GRD, S1RTC, DEM, NDVI).

Mirrors terratorch 1.2.11 ``DiVAE`` (``tokenizer/vqvae.py``) and its ``PipelineCond`` sampling loop
(``tokenizer/scheduling/diffusion_pipeline.py``), inference only. State-dict keys: ``encoder.*``,
``quant_proj.*``, ``decoder.*`` (601 for the official configuration).

Noise contract (bit-identical to the reference): unless ``noise`` is given, the start noise is
``torch.randn((B, C, H, W), generator=generator)`` drawn on the CPU in float32 (``generator=None``:
torch's global CPU generator) and then moved to the decoder's device; it is the first and only
random draw of a decode.

Sizes: ``image_size`` is ``(H, W)`` here. (The reference's generation wrapper passes ``(W, H)``, so
only its square outputs come out the right way round.) Decoding needs H and W to be multiples of 32;
the conditioning latents are nearest-resampled to the UNet grid, so a size other than the token grid
times 16 is accepted like in the reference. ``reconstruct`` decodes at the input's ``(H, W)`` (the
reference's ``forward`` assumes square inputs).

Outputs are standardized values, clamped to [-1, 1] by the last DDIM step (terratorch 1.2.11
``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``, ``diffusion_pipeline.py``).

Dimensions: B batch, C channels, H, W image size, L latent channels, (h, w) token grid.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..core.configs import TokenizerConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.progress import NullProgress, Progress, check_cancelled
from .base import VQ, as_size
from .ddim import DDIMScheduler, DDIMStepOutput
from .unet import PatchedUNetCondCat


class DiVAE(VQ):
    """Diffusion tokenizer. ``decoder`` is the patched UNet, ``noise_scheduler`` the DDIM scheduler."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__(cfg)
        self.decoder = PatchedUNetCondCat(
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            cond_channels=cfg.latent_dim,
            patch_size=cfg.unet_patch_size,
            model_channels=cfg.unet_channels,
            num_res_blocks=cfg.unet_res_blocks,
            attention_resolutions=tuple(cfg.unet_attention_rates),
            channel_mult=tuple(cfg.unet_channel_mult),
            num_heads=cfg.unet_heads,
        )
        self.noise_scheduler = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.n_channels:
            raise InputRasterError(
                f"this tokenizer takes standardized images (B, {self.n_channels}, H, W); got shape {tuple(x.shape)}"
            )
        if not x.dtype.is_floating_point:
            raise InputRasterError(f"tokenizer input must be a floating-point tensor; got {x.dtype}")
        return super().prepare_input(x)

    # -- sizes and noise -------------------------------------------------------------------------

    def check_decode_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Raise ``ConfigError`` unless ``(H, W)`` can be decoded (multiples of 32)."""
        height, width = image_size
        multiple = self.decoder.size_multiple
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ConfigError(
                f"DiVAE decoding needs an image height and width that are multiples of {multiple} (the "
                f"diffusion UNet halves its {self.decoder.P_H}-pixel patch grid "
                f"{self.decoder.downsample_factor.bit_length() - 1} times; the reference fails at other "
                f"sizes too, e.g. 240); got {height}x{width}"
            )
        return height, width

    def initial_noise(
        self,
        batch: int,
        image_size: tuple[int, int],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The start sample x_T ``(B, C, H, W)`` float32 on the decoder's device (see the noise contract)."""
        shape = (batch, self.n_channels, *image_size)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ConfigError(f"noise must have shape {shape} (B, C, H, W); got {tuple(noise.shape)}")
            return noise.to(device=self.device, dtype=torch.float32)
        if generator is not None and generator.device.type != "cpu":
            raise ConfigError(
                f"generator must be a CPU torch.Generator (the start noise is drawn on the CPU, like the "
                f"reference); got one on {generator.device}"
            )
        x = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")  # (B, C, H, W)
        return x.to(self.device)

    # -- decoding --------------------------------------------------------------------------------

    def sample_iter(
        self,
        quant: torch.Tensor,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> Iterator[DDIMStepOutput]:
        """Run the DDIM loop lazily, yielding each step (``prev_sample`` of the last is the image)."""
        b, _, h, w = quant.shape
        size = self.check_decode_size(as_size(image_size) if image_size else (h * self.patch_size, w * self.patch_size))
        steps = self.noise_scheduler.timesteps(timesteps)
        quant = quant.to(self.device)
        image = self.initial_noise(b, size, generator, noise)  # (B, C, H, W)
        for index, t in enumerate(steps):
            with torch.no_grad():
                model_output = self.decoder(image, t, quant)  # (B, C, H, W) predicted x0
                with torch.autocast(device_type=image.device.type, enabled=False):
                    out = self.noise_scheduler.step(model_output.float(), t, image, timesteps, index)
            image = out.prev_sample
            yield out

    @torch.no_grad()
    def decode_quant(
        self,
        quant: torch.Tensor,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Quantised latents ``(B, L, h, w)`` → standardized image ``(B, C, H, W)`` float32 in [-1, 1].

        Reports the percentage after each DDIM step and checks for cancellation between steps."""
        progress = progress or NullProgress()
        total = len(self.noise_scheduler.timesteps(timesteps))
        check_cancelled(progress)
        image = None
        for out in self.sample_iter(quant, image_size, timesteps, generator, noise):
            image = out.prev_sample
            progress.set_progress(100.0 * (out.index + 1) / total)
            if out.index + 1 < total:
                check_cancelled(progress)
        assert image is not None  # at least one step (timesteps >= 1 is checked)
        return image
