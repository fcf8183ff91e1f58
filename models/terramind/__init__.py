"""TerraMind v1 encoder-decoder, chained any-to-any generation, feature backbone and TiM (torch).

Mirrors terratorch 1.2.11 ``models/backbones/terramind/model`` module for module, with the same
attribute names (so official and fine-tuned TerraTorch checkpoints load unchanged) and the same
kernels in the same order (so results are bit-identical to the reference on the same machine).
Everything is inference only and constructible under ``with torch.device("meta"):``; checkpoints
(official, fine-tuned or the untrained fill) load through ``models/weights/loading.load_checkpoint_``
with the key mappings of ``models/weights/matching.py``.
"""

from .backbone import TerraMindViT, select_band_columns
from .embeddings import EMBEDDING_SPECS, ImageEncoderEmbedding, ImageTokenDecoderEmbedding, ImageTokenEncoderEmbedding
from .encoder_decoder import TerraMindEncoderDecoder
from .generation import GeneratedTokens, TerraMindGeneration, standardize
from .sampler import GenerationSampler, reference_call_seed
from .tim import TerraMindTiM

__all__ = [
    "EMBEDDING_SPECS",
    "GeneratedTokens",
    "GenerationSampler",
    "ImageEncoderEmbedding",
    "ImageTokenDecoderEmbedding",
    "ImageTokenEncoderEmbedding",
    "TerraMindEncoderDecoder",
    "TerraMindGeneration",
    "TerraMindTiM",
    "TerraMindViT",
    "reference_call_seed",
    "select_band_columns",
    "standardize",
]
