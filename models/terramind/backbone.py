"""The TerraMind v1 encoder as a feature backbone (terratorch ``TerraMindViT``), inference only.

``TerraMindViT(config, modalities, merge_method, bands, tokenizers)`` holds ``encoder_embeddings``,
``encoder``, ``encoder_norm``, ``tokenizer`` (tokenized inputs only) and, for ``concat``,
``missing_mod_token``. ``forward`` returns the output of every encoder block (only the last one
passes through ``encoder_norm``), merged across modalities:

- ``mean`` / ``max``: per layer ``(B, N, D)``; ``concat``: ``(B, N, D*M)`` in input order, missing
  configured modalities filled with ``missing_mod_token`` at the end; ``dict``: ``{name: (B, N_m, D)}``;
  ``None``: ``(B, sum N_m, D)``.

Inputs must already be standardized (the backbone never standardizes, like the reference).
Non-square raw images work (positional tables are resized bicubically). ``bands`` selects a band
subset per raw modality: the patch embedding then takes ``len(bands)`` channels, and the loader
fills it with ``select_band_columns`` of the pretrained weight (``band_indices`` says which),
exactly as terratorch's ``select_modality_patch_embed_weights`` does; unknown band names are a
``ConfigError`` (terratorch would silently leave those columns random). Spec §6.1, §6.2.

Dimensions: ``B`` batch, ``N`` tokens per modality, ``M`` modalities, ``D`` width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.configs import TerraMindConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.modalities import modality_for_key
from .blocks import Block, make_norm
from .embeddings import ImageEncoderEmbedding, build_encoder_embedding, embedding_spec
from .names import input_key, name_mapping

MERGE_METHODS = ("mean", "max", "concat", "dict", None)


def pretrained_band_indices(key: str, bands: Sequence[str], modality: str) -> tuple[int, ...]:
    """Positions of ``bands`` in the pretrained band order of raw-modality ``key``."""
    spec = embedding_spec(key)
    if spec.tokenized:
        raise ConfigError(f"bands can only be chosen for raw-pixel modalities, not for '{modality}' ({key})")
    pretrained = modality_for_key(key).bands
    unknown = [b for b in bands if b not in pretrained]
    if unknown or not bands:
        raise ConfigError(
            f"unknown band name(s) {unknown} for modality '{modality}'; expected names from {', '.join(pretrained)}"
            if unknown
            else f"band list for modality '{modality}' is empty"
        )
    return tuple(pretrained.index(b) for b in bands)


def select_band_columns(weight: torch.Tensor, band_indices: Sequence[int], patch_pixels: int) -> torch.Tensor:
    """Pretrained ``proj.weight`` ``(D, P*C)`` → ``(D, P*len(bands))`` keeping the (ph, pw, c) layout."""
    dim = weight.shape[0]
    per_band = weight.reshape(dim, patch_pixels, -1)  # (D, P, C)
    index = torch.as_tensor(list(band_indices), dtype=torch.long, device=weight.device)
    return per_band.index_select(2, index).reshape(dim, -1)  # (D, P*C')


class _EncoderFeatures(nn.Module):
    """Shared by the ViT backbone and TiM: embeddings + encoder blocks + merging."""

    merge_method: str | None

    def _build_encoder(self, config: TerraMindConfig, merge_method: str | None) -> None:
        if merge_method not in MERGE_METHODS:
            raise ConfigError(f"merge_method must be one of {MERGE_METHODS}, got {merge_method!r}")
        self.merge_method = merge_method
        self.image_modalities = list(self.encoder_embeddings.keys())  # every v1 modality here is an image
        if merge_method == "concat":
            self.missing_mod_token = nn.Parameter(torch.zeros(config.dim))  # reference: uninitialised memory
        depth, dim = config.encoder_depth, config.dim
        self.out_channels = [dim * len(self.image_modalities) if merge_method == "concat" else dim] * depth
        self.encoder = nn.ModuleList([Block(config) for _ in range(depth)])
        self.encoder_norm = make_norm(config)

    def _attach_tokenizers(self, tokenizers: Mapping[str, nn.Module] | None) -> None:
        """``self.tokenizer[key]`` for each given tokenizer of a tokenized input (internal key)."""
        self.tokenizer = nn.ModuleDict()
        for key, module in (tokenizers or {}).items():
            if key not in self.encoder_embeddings or not embedding_spec(key).tokenized:
                raise ConfigError(f"tokenizer given for '{key}', which is not a tokenized input of this model")
            self.tokenizer[key] = module

    def init_deterministic_buffers(self) -> None:
        """Give ``missing_mod_token`` a real (zero) value if it was built on ``meta`` and not loaded."""
        token = getattr(self, "missing_mod_token", None)
        if token is not None and token.is_meta:
            self.missing_mod_token = nn.Parameter(torch.zeros(token.shape, device="cpu"))

    def _token_input(self, name: str, key: str, value: torch.Tensor) -> torch.Tensor:
        """Ids of a tokenized modality: tokenized here if a tokenizer is held, else given as ids."""
        if key in self.tokenizer:
            with torch.no_grad():
                return self.tokenizer[key].tokenize(value)  # (B, h, w)
        if value.is_floating_point() or value.dim() != 3:
            raise InputRasterError(
                f"input '{name}' must be token ids (B, h, w) (no tokenizer for {key} was given), "
                f"got {value.dtype} {tuple(value.shape)}"
            )
        return value

    def _inputs(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``x`` (a tensor: the first modality; or ``{name: tensor}``) checked, tokenized inputs as ids."""
        d = {self.modalities[0]: x} if isinstance(x, torch.Tensor) else dict(x)
        if not d:
            raise ConfigError(f"no inputs given; this backbone takes {', '.join(self.modalities)}")
        for name in d:
            if name not in self.mod_name_mapping:
                raise ConfigError(f"unknown input '{name}'; this backbone takes {', '.join(self.modalities)}")
        for name, value in list(d.items()):
            key = self.mod_name_mapping[name]
            if embedding_spec(key).tokenized:
                d[name] = self._token_input(name, key, value)
        return d

    def _features(self, d: Mapping[str, torch.Tensor], names: Sequence[str]) -> list:
        """Encoder features of the (already tokenized) inputs ``d`` in dict order, merged."""
        x, num_tokens = [], []
        for name, tensor in d.items():
            key = self.mod_name_mapping[name]
            if not embedding_spec(key).tokenized and not tensor.is_floating_point():
                raise InputRasterError(f"input '{name}' is {tensor.dtype}; the backbone expects standardized floats")
            tokens, emb = self.encoder_embeddings[key](tensor)  # (B, N_m, D) each
            x.append(tokens + emb)
            num_tokens.append(tokens.shape[-2])
        h = torch.cat(x, dim=1)  # (B, sum N_m, D)
        out = []
        for block in self.encoder:
            h = block(h)  # (B, sum N_m, D)
            out.append(h.clone())
        out[-1] = self.encoder_norm(h)
        return self._merge(out, num_tokens, len(d), names)

    def _merge(self, out: list[torch.Tensor], num_tokens: list[int], num_given: int, names: Sequence[str]) -> list:
        def unstack(t: torch.Tensor) -> torch.Tensor:
            return torch.stack(torch.split(t, num_tokens, dim=1), dim=1)  # (B, M, N, D)

        if self.merge_method == "mean":
            return [unstack(t).mean(dim=1) for t in out]  # (B, N, D)
        if self.merge_method == "max":
            return [unstack(t).max(dim=1)[0] for t in out]  # (B, N, D)
        if self.merge_method == "concat":
            stacked = [unstack(t) for t in out]
            if num_given < len(self.image_modalities):
                last = stacked[-1]
                missing = self.missing_mod_token.repeat(
                    last.shape[0], len(self.image_modalities) - num_given, last.shape[2], 1
                )  # (B, M_missing, N, D)
                stacked = [torch.cat([t, missing], dim=1) for t in stacked]
            return [torch.cat(t.unbind(dim=1), dim=-1) for t in stacked]  # (B, N, D*M)
        if self.merge_method == "dict":
            return [dict(zip(names, torch.split(t, num_tokens, dim=1))) for t in out]
        return out


class TerraMindViT(_EncoderFeatures):
    """Feature backbone over the given input modalities (user names, e.g. ``['S2L1C', 'S1GRD']``)."""

    def __init__(
        self,
        config: TerraMindConfig,
        modalities: Sequence[str],
        merge_method: str | None = "mean",
        bands: Mapping[str, Sequence[str]] | None = None,
        tokenizers: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("the backbone needs at least one input modality")
        self.config = config
        self.mod_name_mapping = name_mapping(modalities, input_key)
        self.modalities = list(self.mod_name_mapping)
        self.encoder_embeddings = nn.ModuleDict(
            {k: build_encoder_embedding(k, config.dim, config.img_size) for k in self.mod_name_mapping.values()}
        )
        self.band_indices: dict[str, tuple[int, ...]] = {}
        for name, band_names in (bands or {}).items():
            if name not in self.mod_name_mapping:
                raise ConfigError(f"bands given for '{name}', which is not an input; inputs: {', '.join(self.modalities)}")
            key = self.mod_name_mapping[name]
            self.band_indices[key] = pretrained_band_indices(key, list(band_names), name)
            embedding = self.encoder_embeddings[key]
            assert isinstance(embedding, ImageEncoderEmbedding)
            pixels = embedding.patch_size[0] * embedding.patch_size[1]
            embedding.proj = nn.Linear(pixels * len(band_names), config.dim, bias=False)
            embedding.num_channels = len(band_names)
        self._build_encoder(config, merge_method)
        self._attach_tokenizers(tokenizers)

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> list:
        """Per-layer features of a tensor (the first modality) or a ``{name: tensor}`` dict."""
        d = self._inputs(x)
        return self._features(d, list(d))
