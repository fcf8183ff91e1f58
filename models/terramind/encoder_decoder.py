"""The TerraMind encoder-decoder (terratorch ``TerraMind`` in ``terramind.py``), inference parts.

State-dict keys are the official checkpoint keys without prefix: ``encoder_embeddings.<key>.*``,
``decoder_embeddings.<key>.*``, ``encoder.<i>.*``, ``encoder_norm.*``, ``decoder_proj_context.*``,
``decoder.<i>.*``, ``decoder_norm.*``, ``mask_token``. Modalities present in both the encoder and
the decoder share one ``mod_emb`` Parameter (``share_modality_embeddings``), and every decoder
embedding's ``to_logits`` is tied to its ``token_emb``. Spec §3.5, §3.6.

Dimensions: ``B`` batch, ``M`` encoder tokens, ``N`` decoder tokens, ``D`` width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.configs import TerraMindConfig
from .blocks import Block, DecoderBlock, make_norm
from .embeddings import build_decoder_embedding, build_encoder_embedding


class TerraMindEncoderDecoder(nn.Module):
    """Encoder embeddings + encoder + decoder embeddings + decoder of one TerraMind v1 variant.

    ``encoder_keys``/``decoder_keys`` are internal modality keys. ``shared_encoder_embeddings``
    supplies already-built encoder embedding modules to reuse (TiM's chained generation shares
    the backbone's embedding modules with its sampler); keys not in it are built here.
    """

    def __init__(
        self,
        config: TerraMindConfig,
        encoder_keys: Sequence[str],
        decoder_keys: Sequence[str],
        shared_encoder_embeddings: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        shared = dict(shared_encoder_embeddings or {})
        self.encoder_embeddings = nn.ModuleDict(
            {k: shared[k] if k in shared else build_encoder_embedding(k, config.dim, config.img_size) for k in encoder_keys}
        )
        self.decoder_embeddings = nn.ModuleDict(
            {k: build_decoder_embedding(k, config.dim, config.img_size) for k in decoder_keys}
        )
        self.share_modality_embeddings()
        self.encoder = nn.ModuleList([Block(config) for _ in range(config.encoder_depth)])
        self.encoder_norm = make_norm(config)
        self.decoder_proj_context = nn.Linear(config.dim, config.dim)
        self.decoder = nn.ModuleList([DecoderBlock(config) for _ in range(config.decoder_depth)])
        self.decoder_norm = make_norm(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.dim))

    def share_modality_embeddings(self) -> None:
        """Decoder ``mod_emb`` := encoder ``mod_emb`` for modalities in both (same Parameter)."""
        for key in self.encoder_embeddings.keys() & self.decoder_embeddings.keys():
            self.decoder_embeddings[key].mod_emb = self.encoder_embeddings[key].mod_emb

    def forward_encoder(self, x: torch.Tensor, encoder_mask: torch.Tensor | None) -> torch.Tensor:
        """Encoder blocks + ``encoder_norm``; ``encoder_mask`` ``(B, 1, M)``, True = padding."""
        for block in self.encoder:
            x = block(x, mask=encoder_mask)  # (B, M, D)
        return self.encoder_norm(x)  # (B, M, D)

    def forward_decoder(
        self,
        y: torch.Tensor,
        context: torch.Tensor,
        encoder_mask: torch.Tensor | None,
        decoder_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Decoder blocks + ``decoder_norm``: queries ``y`` ``(B, N, D)`` attend to ``context``."""
        for block in self.decoder:
            y = block(y, context, sa_mask=decoder_attention_mask, xa_mask=encoder_mask)  # (B, N, D)
        return self.decoder_norm(y)  # (B, N, D)
