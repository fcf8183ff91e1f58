"""models/core/styles.py without QGIS: style choice per output, the QML document, the sidecar file.

(tests/qgis/test_styles_qgis.py loads the same documents into QGIS raster layers.)
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.modalities import LULC_CLASSES, ClassInfo
from terramind_qgis.models.core.styles import StyleSpec, render_qml, sidecar_path, style_for, write_sidecar


def _renderer(qml: str) -> ET.Element:
    assert qml.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(qml.split("\n", 1)[1])
    assert root.tag == "qgis"
    (renderer,) = root.findall("./pipe/rasterrenderer")
    return renderer


@pytest.mark.parametrize(
    ("output", "renderer", "bands"),
    [("S2L2A", "multibandcolor", (4, 3, 2)), ("S2L1C", "multibandcolor", (4, 3, 2)), ("S2RGB", "multibandcolor", (1, 2, 3)),
     ("S1GRD", "singlebandgray", (1,)), ("S1RTC", "singlebandgray", (1,)), ("DEM", "singlebandpseudocolor", (1,)),
     ("NDVI", "singlebandpseudocolor", (1,)), ("LULC", "paletted", (1,)), ("difference", "singlebandpseudocolor", (1,)),
     ("difference:S2L2A", "singlebandpseudocolor", (4,)), ("probability", "singlebandpseudocolor", (1,)),
     ("mask", "paletted", (1,))],
)  # fmt: skip
def test_each_output_has_its_renderer_and_bands(output, renderer, bands):
    spec = style_for(output)
    assert (spec.renderer, spec.bands) == (renderer, bands)
    r = _renderer(render_qml(spec))
    assert r.get("type") == renderer
    if renderer == "multibandcolor":
        assert (r.get("redBand"), r.get("greenBand"), r.get("blueBand")) == tuple(map(str, bands))
    else:
        assert r.get("band", r.get("grayBand")) == str(bands[0])


def test_defaults_without_statistics():
    assert style_for("S2L2A").ranges == ((0.0, 3000.0),) * 3
    assert style_for("S2RGB").ranges == ((0.0, 255.0),) * 3
    assert style_for("S1RTC").ranges == ((-25.0, 0.0),)
    assert style_for("NDVI").ranges == ((-1.0, 1.0),)
    assert style_for("probability").ranges == ((0.0, 1.0),)


def test_sentinel2_uses_one_stretch_for_red_green_blue():
    stats = {2: (300.0, 1500.0), 3: (200.0, 1800.0), 4: (100.0, 2500.0), 8: (0.0, 9000.0)}
    assert style_for("S2L2A", stats=stats).ranges == ((100.0, 2500.0),) * 3  # min of lows, max of highs; B08 ignored


def test_statistics_set_single_band_ranges():
    assert style_for("DEM", stats={1: (12.5, 850.0)}).ranges == ((12.5, 850.0),)
    assert style_for("S1GRD", stats={1: (-20.0, -3.0), 2: (-30.0, -10.0)}).ranges == ((-20.0, -3.0),)  # VV


def test_constant_band_still_gets_a_non_empty_range():
    (low, high), = style_for("DEM", stats={1: (5.0, 5.0)}).ranges
    assert low < 5.0 < high


def test_difference_is_symmetric_about_zero_on_the_display_band():
    spec = style_for("difference:S2L2A", stats={1: (-1.0, 1.0), 4: (-30.0, 120.0)})
    assert spec.bands == (4,) and spec.ranges == ((-120.0, 120.0),)
    items = _renderer(render_qml(spec)).findall(".//colorrampshader/item")
    values = [float(i.get("value")) for i in items]
    assert values[0] == -120.0 and values[-1] == 120.0 and 0.0 in values
    assert items[len(items) // 2].get("color") == "#f7f7f7"  # white at zero difference


def test_pseudocolor_items_span_the_range_in_order():
    r = _renderer(render_qml(style_for("DEM", stats={1: (100.0, 500.0)})))
    shader = r.find(".//colorrampshader")
    assert (float(shader.get("minimumValue")), float(shader.get("maximumValue"))) == (100.0, 500.0)
    values = [float(i.get("value")) for i in shader.findall("item")]
    assert values == sorted(values) and values[0] == 100.0 and values[-1] == 500.0


def test_lulc_palette_has_the_ten_classes_with_names_and_colours():
    entries = _renderer(render_qml(style_for("LULC"))).findall("./colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label"), e.get("color")) for e in entries] == [
        (c.value, c.name, c.color.lower()) for c in LULC_CLASSES
    ]
    assert len(entries) == 10 and entries[1].get("label") == "Water"


def test_classes_accept_tuples_and_mappings_and_escape_names():
    from_tuples = style_for("classes", classes=[(0, "Land", "#00FF00"), (1, "Water & <ice>", "#0000FF")])
    from_mapping = style_for("classes", classes={0: ("Land", "#00FF00"), 1: ("Water & <ice>", "#0000FF")})
    assert from_tuples == from_mapping
    assert from_tuples.classes[1] == ClassInfo(1, "Water & <ice>", "#0000FF")
    labels = [e.get("label") for e in _renderer(render_qml(from_tuples)).iter("paletteEntry")]
    assert labels == ["Land", "Water & <ice>"]  # survived XML escaping


def test_classes_role_needs_classes_and_unknown_outputs_are_refused():
    with pytest.raises(ConfigError, match="class list"):
        style_for("classes")
    with pytest.raises(ConfigError, match="no display style for output 'S3OLCI'"):
        style_for("S3OLCI")


def test_spec_checks_its_shape():
    with pytest.raises(ConfigError, match="needs 3 band"):
        StyleSpec("multibandcolor", (1,), ((0.0, 1.0),))
    with pytest.raises(ConfigError, match="at least one class"):
        StyleSpec("paletted", (1,))


def test_write_sidecar_replaces_the_extension_and_leaves_no_temporary_file(tmp_path):
    raster = tmp_path / "generated_DEM.tif"
    path = write_sidecar(str(raster), style_for("DEM"))
    assert path == str(tmp_path / "generated_DEM.qml") == sidecar_path(raster)
    assert _renderer(open(path, encoding="utf-8").read()).get("type") == "singlebandpseudocolor"
    write_sidecar(str(raster), style_for("LULC"))  # overwrites atomically
    assert _renderer(open(path, encoding="utf-8").read()).get("type") == "paletted"
    assert sorted(os.listdir(tmp_path)) == ["generated_DEM.qml"]
