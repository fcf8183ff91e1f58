"""Seeds of tiles: every random stream of a run derives from the user's seed and a tile's position.

``tile_seed(seed, row, col)`` folds ``numpy.random.SeedSequence([seed, salt, row, col])`` to a
non-negative 63-bit integer, or (``bits=32``) to the signed 32-bit range terratorch draws its
per-call seeds from. A run is therefore reproduced exactly by the same seed, inputs, extent and
tiling; the tile size and overlap (which move the tile grid) change it. numpy is the one
non-stdlib import of ``models/core`` (QGIS's Python has it too).
"""

from __future__ import annotations

import numpy as np


def tile_seed(seed: int, row: int, col: int, salt: int = 0, bits: int = 63) -> int:
    """Deterministic seed of tile (row, col) for the user ``seed``."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, salt, row, col]).generate_state(2, np.uint32)
    value = (int(state[0]) << 32) | int(state[1])
    if bits == 32:  # signed 32-bit, the range terratorch draws its per-call seeds from
        return (value & 0xFFFFFFFF) - 2**31
    return value & (2**63 - 1)
