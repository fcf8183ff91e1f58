"""What the values of an input may be, checked as windows are read (numpy).

Class rasters (LULC) hold class ids: whole numbers in ``0 .. classes - 1``; anything else (other
codes, fractional values) is an ``InputRasterError`` naming the layer, since the model would read
it as some other class.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputRasterError
from ..core.modalities import Modality


def check_class_values(name: str, modality: Modality, data: np.ndarray, valid: np.ndarray) -> None:
    """``data`` ``(C, h, w)`` of layer ``name``: its valid pixels must be class ids of ``modality``."""
    if not modality.categorical:
        return
    values = data[:, valid]  # (C, n)
    if values.size == 0:
        return
    low, high, n = float(values.min()), float(values.max()), len(modality.classes)
    if low < 0 or high >= n:
        raise InputRasterError(
            f"layer '{name}': {modality.name} class values must be 0..{n - 1}, found {low:g}..{high:g}; "
            "map other codes to these classes or declare them nodata"
        )
    if not np.array_equal(values, np.round(values)):
        frac = values[values != np.round(values)]
        raise InputRasterError(
            f"layer '{name}': {modality.name} holds class ids, but it has fractional values (e.g. {float(frac[0]):g}); "
            "give the class raster itself, not a resampled or averaged copy"
        )
