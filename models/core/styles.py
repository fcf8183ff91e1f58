"""Display styles of every output, as QGIS ``.qml`` documents (torch-free, QGIS-free).

The worker writes a ``.qml`` sidecar next to each GeoTIFF it produces (``write_sidecar``), so the
style travels with the file: QGIS applies ``<raster stem>.qml`` when it opens the raster, and the
plugin's layer post-processor loads the same file when Processing adds the result to a project.

``style_for(output)`` knows these outputs:

- a modality name: ``S2L2A`` / ``S2L1C`` true colour (B04, B03, B02) with one common stretch for the
  three bands (so colours keep their balance); ``S2RGB`` true colour 0..255; ``S1GRD`` / ``S1RTC``
  VV backscatter as dB greyscale; ``DEM`` a terrain colour ramp; ``NDVI`` a red-yellow-green
  diverging ramp; ``LULC`` the ten TerraMind land-cover classes, paletted and labelled;
- a role: ``difference`` (a blue-white-red ramp symmetric about 0; ``difference:<MODALITY>`` shows
  that modality's display band, e.g. B04 for Sentinel-2), ``probability`` (0..1 viridis ramp),
  ``mask`` (paletted, background/detected unless ``classes`` are given) and ``classes`` (paletted
  from the ``classes`` given, e.g. a segmentation model's class list);
- embeddings: ``embeddings`` (a false-colour view of bands 1, 2, 3, each stretched on its own:
  the first three dimensions of an embedding raster, or the three principal components of its PCA
  view) and ``similarity`` (cosine similarity, a magma ramp over its display range).

``qualitative_palette(n)`` gives n distinct colours for classes without their own (clusters,
few-shot classes).

``stats`` maps a 1-based band number to its display range ``(low, high)`` in raw units (the worker
passes e.g. mean +- 2 sigma clipped to the band's min/max); bands without stats use the defaults below.
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError
from .modalities import LULC_CLASSES, MODALITIES, ClassInfo

Renderer = Literal["multibandcolor", "singlebandgray", "singlebandpseudocolor", "paletted"]
ClassesArg = Iterable[ClassInfo] | Iterable[tuple[int, str, str]] | Mapping[int, tuple[str, str]]

# Colour ramps as (position 0..1, '#RRGGBB'), read left (low values) to right (high values).
TERRAIN = ((0.0, "#267A36"), (0.25, "#9AC462"), (0.5, "#E8D689"), (0.75, "#A8714A"), (1.0, "#FFFFFF"))
RED_YELLOW_GREEN = ((0.0, "#D7191C"), (0.25, "#FDAE61"), (0.5, "#FFFFBF"), (0.75, "#A6D96A"), (1.0, "#1A9641"))
BLUE_WHITE_RED = ((0.0, "#2166AC"), (0.25, "#67A9CF"), (0.5, "#F7F7F7"), (0.75, "#EF8A62"), (1.0, "#B2182B"))
VIRIDIS = ((0.0, "#440154"), (0.25, "#3B528B"), (0.5, "#21918C"), (0.75, "#5EC962"), (1.0, "#FDE725"))
MAGMA = ((0.0, "#000004"), (0.25, "#51127C"), (0.5, "#B73779"), (0.75, "#FC8961"), (1.0, "#FCFDBF"))
# Tableau 10, then colours spread by the golden angle in hue (qualitative_palette).
QUALITATIVE = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F",
               "#BAB0AC")  # fmt: skip

# Default display ranges (raw units) when no statistics are given.
S2_REFLECTANCE_RANGE = (0.0, 3000.0)  # reflectance x 10000: 0..0.3 is the usual true-colour stretch
S1_DB_RANGE = (-25.0, 0.0)
SIMILARITY_RANGE = (-1.0, 1.0)  # cosine similarity
DEM_RANGE = (0.0, 2000.0)
NDVI_RANGE = (-1.0, 1.0)
DEFAULT_MASK_CLASSES = (ClassInfo(0, "Background", "#000000"), ClassInfo(1, "Detected", "#1F78B4"))

# Band shown for a single-band view of a multi-band modality (1-based): Sentinel-2 red, Sentinel-1 VV.


@dataclass(frozen=True)
class StyleSpec:
    """What a raster renderer needs: its type, bands, value ranges, ramp or palette."""

    renderer: Renderer
    bands: tuple[int, ...]  # 1-based; three for multibandcolor (red, green, blue), else one
    ranges: tuple[tuple[float, float], ...] = ()  # per entry of ``bands`` (not used by paletted)
    ramp: tuple[tuple[float, str], ...] = ()  # singlebandpseudocolor: (position 0..1, colour)
    classes: tuple[ClassInfo, ...] = ()  # paletted
    description: str = ""

    def __post_init__(self) -> None:
        expected = 3 if self.renderer == "multibandcolor" else 1
        if len(self.bands) != expected:
            raise ConfigError(f"a {self.renderer} style needs {expected} band(s), got {self.bands}")
        if self.renderer == "paletted":
            if not self.classes:
                raise ConfigError("a paletted style needs at least one class")
        elif len(self.ranges) != len(self.bands):
            raise ConfigError(f"a {self.renderer} style needs one (low, high) range per band, got {self.ranges}")
        if self.renderer == "singlebandpseudocolor" and len(self.ramp) < 2:
            raise ConfigError("a singlebandpseudocolor style needs a colour ramp of at least two stops")


def _range(stats: Mapping[int, tuple[float, float]] | None, band: int, default: tuple[float, float]) -> tuple[float, float]:
    if stats and band in stats:
        low, high = float(stats[band][0]), float(stats[band][1])
        if high > low:
            return low, high
        return low - 1.0, low + 1.0  # a constant band still gets a visible, non-empty range
    return default


def _as_classes(classes: ClassesArg) -> tuple[ClassInfo, ...]:
    if isinstance(classes, Mapping):
        return tuple(ClassInfo(int(v), str(nc[0]), str(nc[1])) for v, nc in classes.items())
    out = []
    for c in classes:
        out.append(c if isinstance(c, ClassInfo) else ClassInfo(int(c[0]), str(c[1]), str(c[2])))
    return tuple(out)


def display_band(name: str) -> int:
    """The band a one-band view of modality ``name`` shows: red for optical images, else the first."""
    m = MODALITIES.get(name)
    return m.bands.index("RED") + 1 if m is not None and m.kind in ("optical", "rgb") else 1


def style_for(
    output: str,
    *,
    stats: Mapping[int, tuple[float, float]] | None = None,
    classes: ClassesArg | None = None,
) -> StyleSpec:
    """The display style of ``output`` (a modality name or a role, see the module docstring)."""
    role, _, modality = output.partition(":")
    name = role.upper()
    kind = MODALITIES[name].kind if name in MODALITIES else None
    if kind in ("optical", "rgb"):
        m = MODALITIES[name]
        bands = tuple(m.bands.index(colour) + 1 for colour in ("RED", "GREEN", "BLUE"))  # true colour
        default = S2_REFLECTANCE_RANGE if kind == "optical" else (0.0, 255.0)
        lows, highs = zip(*(_range(stats, b, default) for b in bands))
        common = (min(lows), max(highs))  # one stretch for R, G and B keeps the colour balance
        return StyleSpec("multibandcolor", bands, (common,) * 3, description=f"{name} true colour")
    if kind == "sar":
        return StyleSpec("singlebandgray", (1,), (_range(stats, 1, S1_DB_RANGE),), description=f"{name} VV (dB)")
    if name == "DEM":
        return StyleSpec("singlebandpseudocolor", (1,), (_range(stats, 1, DEM_RANGE),), TERRAIN, description="elevation (m)")
    if name == "NDVI":
        return StyleSpec("singlebandpseudocolor", (1,), (_range(stats, 1, NDVI_RANGE),), RED_YELLOW_GREEN, description="NDVI")
    if name == "LULC":
        return StyleSpec("paletted", (1,), classes=_as_classes(classes) if classes else LULC_CLASSES, description="land cover")
    if name == "DIFFERENCE":
        band = display_band(modality.upper())
        low, high = _range(stats, band, (-1.0, 1.0))
        half = max(abs(low), abs(high))  # symmetric about 0, so white means "no change"
        return StyleSpec("singlebandpseudocolor", (band,), ((-half, half),), BLUE_WHITE_RED, description="difference")
    if name == "LOGITS":
        low, high = _range(stats, 1, (-1.0, 1.0))
        half = max(abs(low), abs(high))  # symmetric about 0
        return StyleSpec("singlebandpseudocolor", (1,), ((-half, half),), BLUE_WHITE_RED, description="class logit")
    if name == "PROBABILITY":
        return StyleSpec("singlebandpseudocolor", (1,), ((0.0, 1.0),), VIRIDIS, description="probability")
    if name == "MASK":
        return StyleSpec("paletted", (1,), classes=_as_classes(classes) if classes else DEFAULT_MASK_CLASSES, description="mask")
    if name == "EMBEDDINGS":
        ranges = tuple(_range(stats, b, (-1.0, 1.0)) for b in (1, 2, 3))  # each dimension its own stretch
        return StyleSpec("multibandcolor", (1, 2, 3), ranges, description="embeddings (false colour)")
    if name == "SIMILARITY":
        return StyleSpec("singlebandpseudocolor", (1,), (_range(stats, 1, SIMILARITY_RANGE),), MAGMA,
                         description="cosine similarity")  # fmt: skip
    if name == "CLASSES":
        if not classes:
            raise ConfigError("style 'classes' needs the class list (value, name, colour) of the model")
        return StyleSpec("paletted", (1,), classes=_as_classes(classes), description="classes")
    raise ConfigError(
        f"no display style for output '{output}'; expected a modality (S2L2A, S2L1C, S2RGB, S1GRD, S1RTC, DEM, "
        "NDVI, LULC) or a role (difference, probability, logits, mask, classes, embeddings, similarity)"
    )


def qualitative_palette(n: int) -> tuple[str, ...]:
    """``n`` distinct '#RRGGBB' colours: Tableau 10, then hues 137.5 degrees apart (the golden angle)."""
    import colorsys

    out = list(QUALITATIVE[:n])
    for i in range(len(out), n):
        r, g, b = colorsys.hsv_to_rgb(((i - len(QUALITATIVE)) * 137.508 / 360.0 + 0.05) % 1.0, 0.65, 0.85 - 0.2 * (i % 2))
        out.append(f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}")
    return tuple(out)


def _hex_to_rgba(color: str) -> str:
    c = color.lstrip("#")
    return f"{int(c[0:2], 16)},{int(c[2:4], 16)},{int(c[4:6], 16)},255"


def _label(value: float) -> str:
    return f"{value:.6g}"


def _min_max_origin(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):  # fmt: skip
        ET.SubElement(origin, tag).text = text


def _contrast(parent: ET.Element, tag: str, low: float, high: float) -> None:
    ce = ET.SubElement(parent, tag)
    ET.SubElement(ce, "minValue").text = repr(float(low))
    ET.SubElement(ce, "maxValue").text = repr(float(high))
    ET.SubElement(ce, "algorithm").text = "StretchToMinimumMaximum"


def _renderer_element(spec: StyleSpec) -> ET.Element:
    r = ET.Element("rasterrenderer", {"type": spec.renderer, "opacity": "1", "alphaBand": "-1", "nodataColor": ""})
    if spec.renderer == "multibandcolor":
        r.attrib.update(redBand=str(spec.bands[0]), greenBand=str(spec.bands[1]), blueBand=str(spec.bands[2]))
        _min_max_origin(r)
        for tag, (low, high) in zip(("red", "green", "blue"), spec.ranges):
            _contrast(r, f"{tag}ContrastEnhancement", low, high)
    elif spec.renderer == "singlebandgray":
        r.attrib.update(grayBand=str(spec.bands[0]), gradient="BlackToWhite")
        _min_max_origin(r)
        _contrast(r, "contrastEnhancement", *spec.ranges[0])
    elif spec.renderer == "singlebandpseudocolor":
        low, high = spec.ranges[0]
        r.attrib.update(band=str(spec.bands[0]), classificationMin=repr(low), classificationMax=repr(high))
        _min_max_origin(r)
        shader = ET.SubElement(ET.SubElement(r, "rastershader"), "colorrampshader", {
            "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
            "minimumValue": repr(low), "maximumValue": repr(high), "labelPrecision": "4"})  # fmt: skip
        ramp = ET.SubElement(shader, "colorramp", {"type": "gradient", "name": "[source]"})
        stops = ":".join(f"{pos:g};{_hex_to_rgba(col)}" for pos, col in spec.ramp[1:-1])  # QGIS' "pos;r,g,b,a:..."
        for key, value in (("color1", _hex_to_rgba(spec.ramp[0][1])), ("color2", _hex_to_rgba(spec.ramp[-1][1])),
                           ("discrete", "0"), ("rampType", "gradient"), ("stops", stops)):  # fmt: skip
            ET.SubElement(ramp, "prop", {"k": key, "v": value})
        for pos, col in spec.ramp:
            value = low + pos * (high - low)
            ET.SubElement(shader, "item", {"value": repr(value), "color": col.lower(), "label": _label(value), "alpha": "255"})
    else:  # paletted
        r.attrib.update(band=str(spec.bands[0]))
        _min_max_origin(r)
        palette = ET.SubElement(r, "colorPalette")
        for c in spec.classes:
            entry = {"value": str(c.value), "color": c.color.lower(), "label": c.name, "alpha": "255"}
            ET.SubElement(palette, "paletteEntry", entry)
    return r


def render_qml(spec: StyleSpec) -> str:
    """The QGIS style document (``.qml``) of ``spec``; QGIS 3.x reads it with ``loadNamedStyle``."""
    root = ET.Element("qgis", {"version": "3.22.0", "styleCategories": "AllStyleCategories"})
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(provider, "resampling", {"enabled": "false", "zoomedInResamplingMethod": "nearestNeighbour",
                                           "zoomedOutResamplingMethod": "nearestNeighbour", "maxOversampling": "2"})  # fmt: skip
    pipe.append(_renderer_element(spec))
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {"saturation": "0", "grayscaleMode": "0", "invertColors": "0", "colorizeOn": "0",
                                          "colorizeRed": "255", "colorizeGreen": "128", "colorizeBlue": "128",
                                          "colorizeStrength": "100"})  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def sidecar_path(raster_path: str | os.PathLike[str]) -> str:
    """``<raster stem>.qml`` next to the raster: the file QGIS loads as the layer's default style."""
    return str(Path(raster_path).with_suffix(".qml"))


def write_sidecar(raster_path: str | os.PathLike[str], spec: StyleSpec) -> str:
    """Write the ``.qml`` sidecar of ``raster_path`` atomically and return its path."""
    target = sidecar_path(raster_path)
    tmp = f"{target}.tmp-{os.getpid()}-{threading.get_ident()}"  # same folder: the rename is atomic
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(render_qml(spec))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return target
