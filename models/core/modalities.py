"""TerraMind v1 modalities: names, internal keys, band order, statistics, classes (torch-free).

Facts from terratorch 1.2.11 ``terramind_register.py`` / ``modality_info.py`` (terratorch 1.2.11
``models/backbones/terramind/model/modality_info.py``, ``terramind_register.py``). The internal
keys are used verbatim as sub-module names in the official checkpoints.

Name resolution mirrors the reference (terratorch 1.2.11 ``models/backbones/terramind/model/terramind_register.py``
name aliases): a name is lower-cased, ``s2``→``sen2``,
``s1``→``sen1``, ``location``→``coords``, then matched by substring in a fixed order. An exact
internal key is accepted as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .errors import ConfigError, UnsupportedModalityError


@dataclass(frozen=True)
class ClassInfo:
    """One class of a categorical raster."""

    value: int
    name: str
    color: str  # '#RRGGBB'


@dataclass(frozen=True)
class Modality:
    """One TerraMind v1 modality as users and the checkpoints see it."""

    name: str  # canonical user-facing name, e.g. 'S2L2A'
    title: str  # human label for dialogs
    input_key: str | None  # encoder key (untok_* raw pixels or tok_* tokenized)
    output_key: str | None  # decoder key when the modality can be generated
    tokenizer_id: str | None  # catalogue id of its tokenizer
    bands: tuple[str, ...]  # TerraTorch band names, model channel order
    band_labels: tuple[str, ...]  # short labels for band descriptions (B02, VV, ...)
    mean: tuple[float, ...]  # v1 pre-training statistics, raw units
    std: tuple[float, ...]
    unit: str
    categorical: bool = False
    classes: tuple[ClassInfo, ...] = field(default=())
    kind: str = ""  # what the values are, which decides the default style: optical, rgb, sar, elevation, index, classes
    # value domain (rules in value_rules.py): the largest value it normally takes in its unit (a data type
    # must hold it where ``reflectance``); reflectance x 10000, so GDAL scale/offset give reflectance 0..1
    max_value: float = 0.0
    reflectance: bool = False

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def is_tokenized_input(self) -> bool:
        return bool(self.input_key and self.input_key.startswith("tok_"))

    @property
    def can_be_input(self) -> bool:
        return self.input_key is not None

    @property
    def can_be_output(self) -> bool:
        return self.output_key is not None

    @property
    def output_channels(self) -> int:
        """Channels the generator returns: class logits for categorical modalities."""
        return len(self.classes) if self.categorical else self.num_bands

    def band_subset(self, names: Sequence[object], field_name: str = "params.bands") -> tuple[str, ...]:
        """Band names (``BLUE``) or labels (``B02``) of this modality → its band names, in the given
        order; ``ConfigError`` (on ``field_name``) for an unknown band, a band named twice or none."""
        out = []
        for v in names:
            text = str(v)
            if text in self.bands:
                out.append(text)
            elif text in self.band_labels:
                out.append(self.bands[self.band_labels.index(text)])
            else:
                raise ConfigError(f"{self.name} has no band {text!r}; its bands are {', '.join(self.band_labels)} "
                                  f"({', '.join(self.bands)})", field=field_name)  # fmt: skip
        if not out:
            raise ConfigError(f"the band subset of {self.name} is empty", field=field_name)
        if len(set(out)) != len(out):
            raise ConfigError(f"the band subset of {self.name} names a band twice: {', '.join(map(str, names))}",
                              field=field_name)  # fmt: skip
        return tuple(out)

    def with_bands(self, names: Sequence[str]) -> Modality:
        """This modality read as its bands ``names`` (band names, any order): names, labels and statistics."""
        if tuple(names) == self.bands:
            return self
        idx = [self.bands.index(b) for b in names]
        return replace(self, bands=tuple(self.bands[i] for i in idx), band_labels=tuple(self.band_labels[i] for i in idx),
                       mean=tuple(self.mean[i] for i in idx), std=tuple(self.std[i] for i in idx))  # fmt: skip


S2L2A_BANDS = (
    "COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
    "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2",
)  # fmt: skip
S2L2A_LABELS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S2L1C_BANDS = S2L2A_BANDS[:10] + ("CIRRUS",) + S2L2A_BANDS[10:]
S2L1C_LABELS = S2L2A_LABELS[:10] + ("B10",) + S2L2A_LABELS[10:]

S2L2A_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234,
              3132.22, 3162.988, 2424.884, 1857.648)  # fmt: skip
S2L2A_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918,
             1753.829, 1797.379, 1434.261, 1334.311)  # fmt: skip
S2L1C_MEAN = (2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56,
              3306.481, 1473.847, 506.07, 2472.825, 1838.929)  # fmt: skip
S2L1C_STD = (1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732,
             1727.26, 1024.687, 442.165, 1331.411, 1160.419)  # fmt: skip

# ESRI-derived land cover of the LULC tokenizer (HF model card; colours from IBM/terramind
# notebooks/plotting_utils.py COLORBLIND_HEX). Spec §1.5.
LULC_CLASSES = (
    ClassInfo(0, "No data", "#000000"),
    ClassInfo(1, "Water", "#3171AD"),
    ClassInfo(2, "Trees", "#469C76"),
    ClassInfo(3, "Flooded vegetation", "#83CA70"),
    ClassInfo(4, "Crops", "#EAE159"),
    ClassInfo(5, "Built area", "#C07CB8"),
    ClassInfo(6, "Bare ground", "#C19368"),
    ClassInfo(7, "Snow/ice", "#6FB2E4"),
    ClassInfo(8, "Clouds", "#F1F1F1"),
    ClassInfo(9, "Rangeland", "#C66526"),
)

MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality("S2L2A", "Sentinel-2 L2A (surface reflectance)", "untok_sen2l2a@224",
                 "tok_sen2l2a@224", "terramind_v1_tokenizer_s2l2a", S2L2A_BANDS, S2L2A_LABELS,
                 S2L2A_MEAN, S2L2A_STD, "reflectance x 10000", kind="optical", max_value=10000.0, reflectance=True),
        Modality("S2L1C", "Sentinel-2 L1C (top of atmosphere)", "untok_sen2l1c@224", None, None,
                 S2L1C_BANDS, S2L1C_LABELS, S2L1C_MEAN, S2L1C_STD, "reflectance x 10000", kind="optical",
                 max_value=10000.0, reflectance=True),
        Modality("S2RGB", "Sentinel-2 true colour (8-bit)", "untok_sen2rgb@224", None, None,
                 ("RED", "GREEN", "BLUE"), ("Red", "Green", "Blue"),
                 (87.271, 80.931, 66.667), (58.767, 47.663, 42.631), "digital number 0-255", kind="rgb", max_value=255.0),
        Modality("S1GRD", "Sentinel-1 GRD (backscatter)", "untok_sen1grd@224", "tok_sen1grd@224",
                 "terramind_v1_tokenizer_s1grd", ("VV", "VH"), ("VV", "VH"),
                 (-12.599, -20.293), (5.195, 5.890), "dB", kind="sar", max_value=20.0),
        Modality("S1RTC", "Sentinel-1 RTC (terrain-corrected backscatter)", "untok_sen1rtc@224",
                 "tok_sen1rtc@224", "terramind_v1_tokenizer_s1rtc", ("VV", "VH"), ("VV", "VH"),
                 (-10.93, -17.329), (4.391, 4.459), "dB", kind="sar", max_value=20.0),
        Modality("DEM", "Digital elevation model", "untok_dem@224", "tok_dem@224",
                 "terramind_v1_tokenizer_dem", ("DEM",), ("Elevation",), (670.665,), (951.272,),
                 "m", kind="elevation", max_value=8849.0),
        Modality("NDVI", "Normalised difference vegetation index", "tok_ndvi@224",
                 "tok_ndvi@224", "terramind_v1_tokenizer_ndvi", ("NDVI",), ("NDVI",), (0.327,),
                 (0.322,), "index -1..1", kind="index", max_value=1.0),
        Modality("LULC", "Land use / land cover", "tok_lulc@224", "tok_lulc@224",
                 "terramind_v1_tokenizer_lulc", ("LULC",), ("Class",), (0.0,), (1.0,), "class",
                 categorical=True, classes=LULC_CLASSES, kind="classes", max_value=9.0),
    )
}  # fmt: skip

# Every list of modalities elsewhere derives from the table:
IMAGE_OUTPUTS = tuple(m.name for m in MODALITIES.values() if m.can_be_output)  # what TerraMind can generate
INPUTS = tuple(m.name for m in MODALITIES.values() if m.can_be_input)  # what its encoder accepts
RAW_INPUTS = tuple(m.name for m in MODALITIES.values() if m.can_be_input and not m.is_tokenized_input)  # pixels in
TOKENIZED = tuple(m.name for m in MODALITIES.values() if m.tokenizer_id)  # modalities with an image tokenizer
_BY_KEY = {k: m for m in MODALITIES.values() for k in (m.input_key, m.output_key) if k}


def _normalise(name: str) -> str:
    return name.lower().replace("s2", "sen2").replace("s1", "sen1").replace("location", "coords")


# (substring, internal key) in the reference's order (terratorch 1.2.11
# ``models/backbones/terramind/model/terramind_register.py`` name aliases).
_INPUT_RULES = (
    ("sen2l2a", "untok_sen2l2a@224"), ("sen2l1c", "untok_sen2l1c@224"),
    ("sen1rtc", "untok_sen1rtc@224"), ("sen1", "untok_sen1grd@224"), ("rgb", "untok_sen2rgb@224"),
    ("dem", "untok_dem@224"), ("lulc", "tok_lulc@224"), ("ndvi", "tok_ndvi@224"),
)  # fmt: skip
_OUTPUT_RULES = (
    ("sen2", "tok_sen2l2a@224"), ("sen1rtc", "tok_sen1rtc@224"), ("sen1", "tok_sen1grd@224"),
    ("dem", "tok_dem@224"), ("lulc", "tok_lulc@224"), ("ndvi", "tok_ndvi@224"),
)  # fmt: skip


def resolve_input_key(name: str) -> str:
    """Internal encoder key of an input modality name, as terratorch resolves it."""
    if name in _BY_KEY and _BY_KEY[name].input_key == name:
        return name
    norm = _normalise(name)
    for needle, key in _INPUT_RULES:
        if needle in norm:
            return key
    raise UnsupportedModalityError(
        f"'{name}' is not a TerraMind v1 input modality; expected one of {', '.join(INPUTS)}"
    )


def resolve_output_key(name: str) -> str:
    """Internal decoder key of an output modality name, as terratorch resolves it."""
    if name in _BY_KEY and _BY_KEY[name].output_key == name:
        return name
    norm = _normalise(name)
    for needle, key in _OUTPUT_RULES:
        if needle in norm:
            return key
    raise UnsupportedModalityError(
        f"'{name}' cannot be generated by TerraMind v1; expected one of {', '.join(IMAGE_OUTPUTS)}"
    )


def modality_for_key(key: str) -> Modality:
    """The modality an internal key belongs to."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise UnsupportedModalityError(f"unknown internal modality key '{key}'") from None


def get_modality(name: str) -> Modality:
    """A modality by canonical name (case-insensitive), e.g. 'S2L2A', 'dem'."""
    for m in MODALITIES.values():
        if m.name.lower() == name.lower():
            return m
    raise UnsupportedModalityError(
        f"unknown modality '{name}'; expected one of {', '.join(MODALITIES)}"
    )


def band_subsets(bands: Mapping[str, Sequence[object]], field_name: str = "params.bands") -> dict[str, tuple[str, ...]]:
    """``{modality: band names or labels}`` → ``{canonical modality name: its band names}``, each checked
    by ``Modality.band_subset``."""
    modalities = {k: get_modality(k) for k in bands}
    return {m.name: m.band_subset(bands[k], field_name) for k, m in modalities.items()}
