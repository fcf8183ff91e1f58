"""The QML documents of models/core/styles.py as QGIS reads them, and the layer styling helper."""

from __future__ import annotations

import pytest
from qgis.core import QgsRasterLayer

from terramind_qgis.models.core.modalities import LULC_CLASSES
from terramind_qgis.models.core.styles import style_for, write_sidecar
from terramind_qgis.processing_algorithms.styling import apply_style


@pytest.mark.parametrize(("modality", "output", "renderer", "bands"), [
    ("S2L2A", "S2L2A", "multibandcolor", [4, 3, 2]),
    ("S2RGB", "S2RGB", "multibandcolor", [1, 2, 3]),
    ("S1RTC", "S1RTC", "singlebandgray", [1]),
    ("DEM", "DEM", "singlebandpseudocolor", [1]),
    ("NDVI", "NDVI", "singlebandpseudocolor", [1]),
    ("LULC", "LULC", "paletted", [1]),
    ("S2L2A", "difference:S2L2A", "singlebandpseudocolor", [4]),
    ("NDVI", "probability", "singlebandpseudocolor", [1]),
])  # fmt: skip
def test_qgis_reads_each_style(qgis_app, example, tmp_path, modality, output, renderer, bands):
    layer = QgsRasterLayer(example(modality), "x")
    assert layer.isValid()
    qml = write_sidecar(str(tmp_path / "styled.tif"), style_for(output))
    message, ok = layer.loadNamedStyle(qml)
    assert ok, message
    assert layer.renderer().type() == renderer
    assert layer.renderer().usesBands() == bands


def test_ranges_reach_qgis(qgis_app, example, tmp_path):
    s2 = QgsRasterLayer(example("S2L2A"), "s2")
    stats = {4: (120.0, 2400.0), 3: (150.0, 2000.0), 2: (200.0, 1800.0)}
    s2.loadNamedStyle(write_sidecar(str(tmp_path / "a.tif"), style_for("S2L2A", stats=stats)))
    red = s2.renderer().redContrastEnhancement()
    assert (red.minimumValue(), red.maximumValue()) == (120.0, 2400.0)
    dem = QgsRasterLayer(example("DEM"), "dem")
    dem.loadNamedStyle(write_sidecar(str(tmp_path / "b.tif"), style_for("DEM", stats={1: (10.0, 900.0)})))
    shader = dem.renderer().shader().rasterShaderFunction()
    items = shader.colorRampItemList()
    assert (dem.renderer().classificationMin(), dem.renderer().classificationMax()) == (10.0, 900.0)
    assert (items[0].value, items[-1].value) == (10.0, 900.0) and len(items) == 5
    s1 = QgsRasterLayer(example("S1RTC"), "s1")
    s1.loadNamedStyle(write_sidecar(str(tmp_path / "c.tif"), style_for("S1RTC")))
    ce = s1.renderer().contrastEnhancement()
    assert (ce.minimumValue(), ce.maximumValue()) == (-25.0, 0.0)


def test_lulc_classes_reach_qgis(qgis_app, example, tmp_path):
    layer = QgsRasterLayer(example("LULC"), "lulc")
    layer.loadNamedStyle(write_sidecar(str(tmp_path / "l.tif"), style_for("LULC")))
    classes = layer.renderer().classes()
    assert [(int(c.value), c.label, c.color.name()) for c in classes] == [
        (c.value, c.name, c.color.lower()) for c in LULC_CLASSES]
    assert [label for label, _ in layer.renderer().legendSymbologyItems()][:3] == ["No data", "Water", "Trees"]


def test_apply_style_prefers_the_sidecar_then_the_default(qgis_app, example, tmp_path):
    path = example("DEM")
    layer = QgsRasterLayer(path, "dem")
    assert apply_style(layer, "DEM") and layer.renderer().type() == "singlebandpseudocolor"  # no sidecar: default
    assert layer.renderer().classificationMax() == 2000.0
    write_sidecar(path, style_for("DEM", stats={1: (3.0, 33.0)}))  # the worker's sidecar, with data ranges
    assert apply_style(layer, "DEM") and layer.renderer().classificationMax() == 33.0
