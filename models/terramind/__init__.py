"""TerraMind v1 encoder-decoder, chained any-to-any generation, feature backbone and TiM (torch).

Mirrors terratorch 1.2.11 ``models/backbones/terramind/model`` module for module, with the same
attribute names (so official and fine-tuned TerraTorch checkpoints load unchanged) and the same
kernels in the same order (so results are bit-identical to the reference on the same machine).
Everything is inference only and constructible under ``with torch.device("meta"):``.
"""

from .backbone import TerraMindViT, select_band_columns
from .embeddings import EMBEDDING_SPECS, ImageEncoderEmbedding, ImageTokenDecoderEmbedding, ImageTokenEncoderEmbedding
from .encoder_decoder import TerraMindEncoderDecoder
from .generation import GeneratedTokens, TerraMindGeneration, standardize
from .official import (
    from_official_state_dict,
    init_deterministic_buffers,
    load_official_state_dict,
    official_key,
    official_shapes,
)
from .sampler import GenerationSampler, SamplingConfig, reference_call_seed
from .tim import TerraMindTiM

__all__ = [
    "EMBEDDING_SPECS",
    "GeneratedTokens",
    "GenerationSampler",
    "ImageEncoderEmbedding",
    "ImageTokenDecoderEmbedding",
    "ImageTokenEncoderEmbedding",
    "SamplingConfig",
    "TerraMindEncoderDecoder",
    "TerraMindGeneration",
    "TerraMindTiM",
    "TerraMindViT",
    "from_official_state_dict",
    "init_deterministic_buffers",
    "load_official_state_dict",
    "official_key",
    "official_shapes",
    "reference_call_seed",
    "select_band_columns",
    "standardize",
]
