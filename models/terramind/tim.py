"""Thinking-in-Modalities backbone (terratorch ``TerraMindTiM``), inference only.

Like ``TerraMindViT``, plus ``sampler.model`` (a frozen encoder-decoder with decoder embeddings for
the TiM modalities). Before the feature pass, each TiM modality missing from the input (default
``['LULC']``) is generated as token ids with one ROAR pass (temperature 1, top-p 0.8 by default)
and appended to the inputs; the features then cover inputs + TiM tokens. With
``tim_chained_generations=True`` (terratorch's default) the sampler's encoder embeddings are the
backbone's embedding modules (the same objects), so TiM modalities are chained; with ``False`` the
sampler has its own embeddings for the inputs only. Generation takes an explicit ``seed`` under the
contract of ``sampler.py`` (terratorch draws it from Python's ``random`` per forward call).
Inputs must be standardized by the caller; images must be square. Spec §5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.configs import TerraMindConfig
from ..core.errors import ConfigError, InputRasterError
from .backbone import _EncoderFeatures
from .embeddings import build_encoder_embedding, embedding_spec
from .encoder_decoder import TerraMindEncoderDecoder
from .names import input_key, name_mapping, output_key
from .sampler import GenerationSampler, Sampling


class TerraMindTiM(_EncoderFeatures):
    """TiM backbone over ``modalities`` that first generates ``tim_modalities`` as tokens."""

    def __init__(
        self,
        config: TerraMindConfig,
        modalities: Sequence[str],
        tim_modalities: Sequence[str] | None = None,
        merge_method: str | None = "mean",
        tim_chained_generations: bool = True,
        tim_sampling: Sampling | None = None,
        tokenizers: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("the TiM backbone needs at least one input modality")
        self.config = config
        self.tim_modalities = list(tim_modalities or ["LULC"])
        self.tim_sampling = tim_sampling or Sampling()
        self.tim_chained_generations = tim_chained_generations
        self.mod_name_mapping = name_mapping(modalities, input_key)
        self.modalities = list(self.mod_name_mapping)
        input_keys = list(self.mod_name_mapping.values())
        tim_keys: list[str] = []
        for name in self.tim_modalities:
            key = output_key(name)
            if name in self.mod_name_mapping and self.mod_name_mapping[name] != key:
                raise ConfigError(
                    f"TiM modality '{name}' is also a raw input ({self.mod_name_mapping[name]}); only tokenized "
                    "modalities can be both"
                )
            if key in tim_keys:
                raise ConfigError(f"TiM modality '{name}' is listed twice")
            tim_keys.append(key)
            self.mod_name_mapping.setdefault(name, key)
        self.tim_keys = tim_keys
        encoder_keys = input_keys + [k for k in tim_keys if k not in input_keys]
        self.encoder_embeddings = nn.ModuleDict(
            {k: build_encoder_embedding(k, config.dim, config.img_size) for k in encoder_keys}
        )
        if tim_chained_generations:
            model = TerraMindEncoderDecoder(config, encoder_keys, tim_keys, dict(self.encoder_embeddings))
        else:
            model = TerraMindEncoderDecoder(config, input_keys, tim_keys)
        self.sampler = GenerationSampler(model.requires_grad_(False))
        self._build_encoder(config, merge_method)
        self._attach_tokenizers(tokenizers)

    @torch.no_grad()
    def generate_tim_tokens(self, d: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """TiM token ids ``{TiM name: (B, N) int64}`` for the (tokenized) inputs ``d``."""
        visible = {self.mod_name_mapping[name]: value for name, value in d.items()}
        targets = [k for k in self.tim_keys if k not in visible]
        if not targets:
            return {}
        # terratorch takes the token grid of the last input (every v1 input is an image).
        last_key, last = list(visible.items())[-1]
        if embedding_spec(last_key).tokenized:
            grid = (last.shape[-2], last.shape[-1])  # ids (B, h, w)
        else:
            grid = (last.shape[-2] // 16, last.shape[-1] // 16)  # image (B, C, H, W)
        if grid[0] != grid[1]:
            raise InputRasterError(
                f"TiM generation needs square images, got a {grid[0]}x{grid[1]} patch grid (terratorch asserts here)"
            )
        sampler_visible = {k: v for k, v in visible.items() if k in self.sampler.model.encoder_embeddings}
        names = {k: n for n, k in self.mod_name_mapping.items() if n in self.tim_modalities}
        result = self.sampler.generate(sampler_visible, targets, grid, int(seed), self.tim_sampling, None, names)
        return {names[k]: ids for k, ids in result.tokens.items()}

    def forward_with_tim_tokens(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], *, seed: int
    ) -> tuple[list, dict[str, torch.Tensor]]:
        """Features (as ``forward``) and the generated TiM ids ``{TiM name: (B, N)}``."""
        d = self._inputs(x)
        names = list(d)
        tim_tokens = self.generate_tim_tokens(d, seed)
        d.update(tim_tokens)
        return self._features(d, names), tim_tokens

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor], *, seed: int) -> list:
        """Per-layer merged features over inputs + generated TiM tokens."""
        return self.forward_with_tim_tokens(x, seed=seed)[0]
