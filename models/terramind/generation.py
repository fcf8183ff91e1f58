"""Any-to-any generation with TerraMind v1 (terratorch ``TerraMindGeneration``), inference only.

``TerraMindGeneration(config, inputs, outputs, tokenizers)`` holds ``sampler.model`` (the
encoder-decoder; its encoder also embeds every output but the last, so outputs are chained) and
``tokenizer.<internal key>`` (one per tokenized input and per output). A call takes an explicit
``seed`` and follows the random-number contract documented in ``sampler.py``; with
``seed = reference_call_seed(s)`` it reproduces a terratorch run made after ``random.seed(s)``.
In short: output ``i`` is sampled with a generator seeded ``seed + i`` on the model's device
(query permutation, then one multinomial draw per token); DiVAE start noise is then drawn on the
CPU, in output order, from ``GeneratedTokens.noise_generator`` (on CPU the last step's generator,
continued; on CUDA a CPU generator seeded ``seed + S - 1``). Torch's global RNG is never used.

Inputs are raw rasters ``(B, C, H, W)`` (standardized here with the v1 statistics when
``standardize=True``). A tokenized input (LULC, NDVI) is tokenized by its tokenizer when the model
holds one; without it the tensor must already hold token ids ``(B, h, w)``. Outputs are
de-standardized pixels (DiVAE, values within mean ± std) or, for LULC, 10-class logits.
Only square images work (terratorch asserts, or silently transposes, otherwise). Spec §4.

Dimensions: ``B`` batch, ``C`` channels, ``H = W`` pixels, ``h = w = H/16`` patches, ``N = h*w``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.configs import TerraMindConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.modalities import modality_for_key
from ..core.progress import NullProgress, Progress, ScaledProgress, check_cancelled
from .embeddings import embedding_spec
from .encoder_decoder import TerraMindEncoderDecoder
from .names import input_key, name_mapping, output_key
from .sampler import GenerationSampler, LogitsHook, Sampling, TokenGeneration


def modality_stats(key: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """v1 mean and std of an internal key as ``(1, C, 1, 1)`` float32 tensors (terratorch layout)."""
    modality = modality_for_key(key)
    mean = torch.tensor(modality.mean, dtype=torch.float32, device=device)[None, :, None, None]
    std = torch.tensor(modality.std, dtype=torch.float32, device=device)[None, :, None, None]
    return mean, std


def standardize(x: torch.Tensor, key: str) -> torch.Tensor:
    """``(x - mean) / std`` with the v1 pre-training statistics of ``key``, in float32."""
    mean, std = modality_stats(key, x.device)
    return (x.to(torch.float32) - mean) / std  # (B, C, H, W)


@dataclass
class GeneratedTokens:
    """Token ids of one generation call, ready for pixel decoding."""

    tokens: dict[str, torch.Tensor]  # user output name -> (B, h, w) int64
    image_size: tuple[int, int]  # (H, W) pixels
    noise_generator: torch.Generator  # CPU RNG for the DiVAE start noise (sampler.py contract)
    permutations: dict[str, torch.Tensor]  # user output name -> (N,) query order of its step


class TerraMindGeneration(nn.Module):
    """Chained any-to-any generation: ``inputs`` → ``outputs`` (user names, in generation order)."""

    def __init__(
        self,
        config: TerraMindConfig,
        inputs: Sequence[str],
        outputs: Sequence[str],
        tokenizers: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not inputs:
            raise ConfigError("generation needs at least one input modality")
        if not outputs:
            raise ConfigError("generation needs at least one output modality")
        self.input_mapping = name_mapping(inputs, input_key)
        self.output_mapping = name_mapping(outputs, output_key)
        both = set(self.input_mapping.values()) & set(self.output_mapping.values())
        if both:
            raise ConfigError(
                f"modality {sorted(both)[0]} is both an input and an output; terratorch cannot generate an "
                "image modality that is given as input"
            )
        output_keys = list(self.output_mapping.values())
        encoder_keys = list(self.input_mapping.values()) + output_keys[:-1]  # outputs but the last condition
        self.sampler = GenerationSampler(TerraMindEncoderDecoder(config, encoder_keys, output_keys))
        needed = {k for k in encoder_keys if embedding_spec(k).tokenized} | set(output_keys)
        self.tokenizer = nn.ModuleDict()
        for key, module in (tokenizers or {}).items():
            if key not in needed:
                raise ConfigError(f"tokenizer given for '{key}', which this model does not use; needed: {sorted(needed)}")
            self.tokenizer[key] = module

    # ---------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return self.sampler.model.mask_token.device

    def encoder_inputs(
        self, inputs: Mapping[str, torch.Tensor], standardize_inputs: bool
    ) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """Visible encoder inputs ``{internal key: image or ids}`` (caller's order) and the image size."""
        if not inputs:
            raise ConfigError(f"no inputs given; this model takes {', '.join(self.input_mapping)}")
        visible: dict[str, torch.Tensor] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for name, value in inputs.items():
            if name not in self.input_mapping:
                raise ConfigError(f"unknown input '{name}'; this model takes {', '.join(self.input_mapping)}")
            key = self.input_mapping[name]
            value = value.to(self.device)
            if embedding_spec(key).tokenized and key not in self.tokenizer:
                if value.dim() != 3 or value.is_floating_point():
                    raise InputRasterError(
                        f"input '{name}' must be token ids (B, h, w) (no tokenizer for {key} was given), "
                        f"got {value.dtype} {tuple(value.shape)}"
                    )
                visible[key] = value
                sizes[name] = (value.shape[1] * 16, value.shape[2] * 16)
                continue
            if value.dim() != 4:
                raise InputRasterError(f"input '{name}' must be (B, C, H, W), got shape {tuple(value.shape)}")
            x = standardize(value, key) if standardize_inputs else value
            if not x.is_floating_point():
                raise InputRasterError(f"input '{name}' is {x.dtype}; use standardize=True or pass floats")
            sizes[name] = (x.shape[-2], x.shape[-1])
            if key in self.tokenizer:
                with torch.no_grad():
                    x = self.tokenizer[key].tokenize(x)  # (B, h, w)
            visible[key] = x
        image_size = next(iter(sizes.values()))
        if any(size != image_size for size in sizes.values()):
            raise InputRasterError(f"inputs must share one image size, got {sizes}")
        if image_size[0] != image_size[1] or image_size[0] % 16:
            raise InputRasterError(
                f"generation needs square images with sides divisible by 16, got {image_size[0]}x{image_size[1]}"
            )
        return visible, image_size

    # ---------------------------------------------------------------- tokens
    @torch.no_grad()
    def generate_tokens(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        seed: int,
        sampling: Sampling | None = None,
        standardize: bool = True,
        progress: Progress | None = None,
        logits_hook: LogitsHook | None = None,
    ) -> GeneratedTokens:
        """Token ids of every output (one ROAR pass each, chained), under the RNG contract.

        ``logits_hook(internal key, logits (B, N, V) in π order, π (B, N))`` observes each step.
        """
        visible, image_size = self.encoder_inputs(inputs, standardize)
        grid = (image_size[0] // 16, image_size[1] // 16)
        names = {k: n for n, k in self.output_mapping.items()}
        result: TokenGeneration = self.sampler.generate(
            visible,
            list(self.output_mapping.values()),
            grid,
            int(seed),
            sampling or Sampling(),
            progress,
            names,
            logits_hook,
        )
        batch = next(iter(result.tokens.values())).shape[0]
        return GeneratedTokens(
            tokens={names[k]: ids.reshape(batch, *grid) for k, ids in result.tokens.items()},
            image_size=image_size,
            noise_generator=result.noise_generator,
            permutations={names[k]: p for k, p in result.permutations.items()},
        )

    @torch.no_grad()
    def teacher_forced_logits(
        self,
        inputs: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        permutations: Mapping[str, torch.Tensor] | None = None,
        standardize: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Decoder logits ``(B, N, V)`` per output (position order) given all outputs' token ids.

        ``targets`` maps every output name to ids ``(B, h, w)`` or ``(B, N)``; output ``k`` sees the
        inputs and the given ids of outputs ``1 … k-1`` (chaining). ``permutations`` (name → π)
        reproduces the sampler's query order for bitwise comparisons.
        """
        visible, image_size = self.encoder_inputs(inputs, standardize)
        grid = (image_size[0] // 16, image_size[1] // 16)
        missing = [n for n in self.output_mapping if n not in targets]
        if missing:
            raise ConfigError(f"target ids missing for output(s) {missing}")
        keyed = {self.output_mapping[n]: targets[n].to(self.device) for n in self.output_mapping}
        perms = {self.output_mapping[n]: p for n, p in (permutations or {}).items()}
        logits = self.sampler.teacher_forced_logits(visible, keyed, grid, perms)
        return {n: logits[k] for n, k in self.output_mapping.items()}

    # ---------------------------------------------------------------- pixels
    @torch.no_grad()
    def decode(
        self,
        generated: GeneratedTokens,
        *,
        timesteps: int = 50,
        standardize: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        """Pixels per output, in output order: DiVAE images (B, C, H, W) or LULC logits (B, 10, H, W)."""
        progress = progress or NullProgress()
        missing = [n for n in generated.tokens if self.output_mapping[n] not in self.tokenizer]
        if missing:
            raise ConfigError(f"no tokenizer for output(s) {missing}; give the model their tokenizers to decode pixels")
        out: dict[str, torch.Tensor] = {}
        count = len(generated.tokens)
        for index, (name, ids) in enumerate(generated.tokens.items()):
            check_cancelled(progress)
            key = self.output_mapping[name]
            image = self.tokenizer[key].decode_tokens(
                ids,
                image_size=generated.image_size,
                timesteps=timesteps,
                generator=generated.noise_generator,
                progress=ScaledProgress(progress, 100.0 * index / count, 100.0 * (index + 1) / count),
            )  # (B, C, H, W)
            if standardize:
                mean, std = modality_stats(key, image.device)
                image = image * std + mean  # (B, C, H, W)
            out[name] = image
            progress.info(f"decoded {name} ({index + 1}/{count})")
        return out

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        seed: int,
        sampling: Sampling | None = None,
        timesteps: int = 50,
        standardize: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generate every output: tokens (first 20 % of progress), then pixel decoding."""
        progress = progress or NullProgress()
        generated = self.generate_tokens(
            inputs, seed=seed, sampling=sampling, standardize=standardize, progress=ScaledProgress(progress, 0, 20)
        )
        return self.decode(
            generated, timesteps=timesteps, standardize=standardize, progress=ScaledProgress(progress, 20, 100)
        )
