"""What an input's values may be, per modality: the rules written once (numpy only, no GDAL).

The worker applies them when it opens an input (``engine/reader.py``), on the file's metadata and a
small sample of its pixels (a few windows spread over the layer), before any model is loaded:

- **data type**: it must be able to hold the modality. Sentinel-2 reflectance is stored × 10 000
  (0 .. ~10 000); an 8- or 1-bit layer cannot hold it and is an error, unless the file states how it
  was scaled (GDAL scale/offset metadata), which is then applied.
- **GDAL scale/offset** are applied (value × scale + offset, per band) and said in an info message;
  for reflectance modalities they give reflectance 0..1, which is brought to the modality's
  × 10 000.
- **sanity ranges** for the common scale mistakes give one warning per layer: reflectance 0..1
  instead of × 10 000, NDVI × 10 000 instead of -1..1, Sentinel-1 linear power or amplitude
  instead of dB, colours beyond 8 bits for S2RGB.
- **nodata** that marks most of the sampled pixels while lying inside the range of the layer's
  other values (so it is probably a real value: sea level, dark water) is a warning.
- **band descriptions** naming the modality's bands: a permutation is reordered (info message);
  descriptions that name other bands, or the right bands in another order after an explicit band
  mapping, are a warning.
- class modalities (LULC) must hold whole class ids: ``engine/values.py`` checks every window read.
"""

from __future__ import annotations

import re

import numpy as np

from .modalities import Modality

REFLECTANCE_FACTOR = 10000.0


def dtype_problem(what: str, modality: Modality, dtype: str, scaled: bool) -> str | None:
    """Why a layer of ``dtype`` cannot hold ``modality`` (None: it can). ``scaled``: the file declares
    a GDAL scale/offset, i.e. says how its values map to the modality's unit."""
    kind = np.dtype(dtype)
    if not modality.reflectance or scaled or kind.kind not in "iub":
        return None
    top = 1 if kind.kind == "b" else np.iinfo(kind).max
    if top >= modality.max_value:
        return None
    return (f"{what} is {dtype} data, which holds values up to {top}, but {modality.name} is {modality.unit} "
            f"(0 to about {modality.max_value:g}): it was probably squeezed to 8 bits and lost its radiometry; give the "
            f"{modality.name} product itself, or state the scaling in the file (gdal_edit -scale S -offset O) "
            "so that value x S + O is the reflectance")  # fmt: skip


def scale_offset(modality: Modality, scales: tuple[float, ...],
                 offsets: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """Per-band (factor, add) that bring the file's values to the modality's unit, or None when the
    file declares no scale/offset (all 1 and 0)."""
    s = np.asarray([1.0 if v is None else float(v) for v in scales], np.float64)
    o = np.asarray([0.0 if v is None else float(v) for v in offsets], np.float64)
    if np.all(s == 1.0) and np.all(o == 0.0):
        return None
    unit = REFLECTANCE_FACTOR if modality.reflectance else 1.0
    return s * unit, o * unit


def scale_message(what: str, modality: Modality, factor: np.ndarray, add: np.ndarray) -> str:
    pairs = sorted({(float(f), float(a)) for f, a in zip(factor, add)})
    shown = "; ".join(f"x {f:g} + {a:g}" for f, a in pairs[:3])
    return f"{what}: the file's scale/offset are applied: values are read as value {shown} ({modality.unit})"


def scale_warning(what: str, modality: Modality, sample: np.ndarray) -> str | None:
    """One warning for a common scale mistake, judged on ``sample`` ``(C, n)`` (valid values, the
    modality's unit after scale/offset), or None."""
    if sample.size < 16 or modality.categorical:
        return None
    med, p99 = float(np.median(sample)), float(np.percentile(np.abs(sample), 99))
    name, kind = modality.name, modality.kind
    if modality.reflectance and p99 <= 2.0:
        return (f"{what}: its values are 0 to {p99:.3g}, like reflectance 0..1, but {name} is reflectance x 10000 "
                "(about 0..10000): multiply by 10000, or state the scale in the file (gdal_edit -scale 10000)")  # fmt: skip
    if kind == "index" and p99 > 1.5 * modality.max_value:
        return (f"{what}: its values reach {p99:.4g}, but {name} is -1..1; scaled NDVI (x 10000 or x 100) must be "
                "divided back, or the scale stated in the file (gdal_edit -scale 0.0001)")  # fmt: skip
    if kind == "sar" and float(sample.min()) >= 0.0:
        if med < 1.5:
            return (f"{what}: its values are all positive and small (median {med:.3g}), like linear power, but {name} "
                    "is backscatter in dB (about -30..5): convert with 10 x log10(value)")  # fmt: skip
        return (f"{what}: its values are all positive (median {med:.4g}), but {name} is backscatter in dB "
                "(mostly negative, about -30..5): give calibrated backscatter in dB, not amplitude or digital "
                "numbers")  # fmt: skip
    if kind == "rgb" and p99 > modality.max_value:
        return (f"{what}: its values reach {p99:.5g}, but {name} is 8-bit colour (0..255); give an 8-bit true-colour "
                "image, or use S2L2A for reflectance")  # fmt: skip
    return None


def nodata_warning(what: str, nodata: float, masked: int, valid_values: np.ndarray, total: int) -> str | None:
    """A warning when the nodata value marks most sampled pixels though it lies among the layer's
    other values (then it is probably a real value), else None."""
    if total == 0 or masked * 2 <= total or valid_values.size == 0:
        return None
    low, high = float(valid_values.min()), float(valid_values.max())
    if not low <= nodata <= high:
        return None  # a sentinel outside the data: large no-data areas (scene edges) are normal
    return (f"{what}: its nodata value {nodata:g} marks {100.0 * masked / total:.0f} % of the sampled pixels as missing, "
            f"and lies among its other values ({low:g}..{high:g}); if {nodata:g} is a real value here, set another "
            "nodata value or none, or those pixels are not processed")  # fmt: skip


def _canonical(text: str) -> str:
    """'Band 2 (B2)', 'b02', 'B2' -> 'B02'; 'nir_broad' -> 'NIR_BROAD'."""
    t = text.strip().upper().replace(" ", "_").replace("-", "_")
    m = re.fullmatch(r"(?:SENTINEL_?2_?)?B_?0*(\d{1,2})(A?)", t)
    if m:
        return f"B{int(m.group(1)):02d}{m.group(2)}".replace("B08A", "B8A")
    return t


def band_order(what: str, modality: Modality, descriptions: tuple[str | None, ...], bands: tuple[int, ...],
               explicit: bool) -> tuple[tuple[int, ...], str | None, str | None]:  # fmt: skip
    """``(bands, info, warning)``: the bands to read in the modality's order, judged on the file's band
    ``descriptions`` (all of them, 1-based ``bands`` into it). A permutation of the modality's bands
    (by label or name) is reordered, unless the band mapping was ``explicit``; descriptions that name
    other bands of the modality give a warning."""
    wanted = [_canonical(x) for x in modality.band_labels]
    names = [_canonical(x) for x in modality.bands]

    def which(band: int) -> int | None:  # position in the modality's bands named by the band's description
        text = _canonical(descriptions[band - 1] or "") if band - 1 < len(descriptions) else ""
        if text in wanted:
            return wanted.index(text)
        return names.index(text) if text in names else None

    seen = [which(b) for b in bands]
    if len(wanted) < 2 or all(s is None for s in seen):
        return bands, None, None  # not described with the modality's band names: nothing to judge
    if seen == list(range(len(wanted))):
        return bands, None, None
    all_bands = range(1, len(descriptions) + 1)
    positions = [which(b) for b in all_bands]
    if not explicit and None not in positions and sorted(positions) == list(range(len(wanted))):  # type: ignore[type-var]
        order = tuple(positions.index(i) + 1 for i in range(len(wanted)))  # the file band of each modality band
        info = (f"{what}: its band descriptions name the {modality.name} bands in another order; they are read as "
                f"{', '.join(f'{modality.band_labels[i]} = band {b}' for i, b in enumerate(order))}")  # fmt: skip
        return order, info, None
    wrong = [(i, b) for i, b in enumerate(bands) if seen[i] != i]
    shown = "; ".join(f"band {b} is read as {modality.band_labels[i]} but is described as '{descriptions[b - 1]}'"
                      for i, b in wrong[:3])  # fmt: skip
    extra = f" ({len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return bands, None, (f"{what}: its band descriptions disagree with the {modality.name} band order: {shown}{extra}; "
                         "check the band mapping")  # fmt: skip
