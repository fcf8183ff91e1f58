"""Renders the demo's picture with QGIS: the input and each styled output side by side, with titles.

Each panel is drawn by ``QgsMapRendererCustomPainterJob`` with the layer's style: the ``.qml``
sidecar the worker wrote (computed from the output's own values); the input and the
reconstruction share one true-colour stretch (from the input) so they can be compared.
"""

from __future__ import annotations

import gc
from pathlib import Path

from qgis.core import Qgis, QgsMapRendererCustomPainterJob, QgsMapSettings, QgsRasterLayer
from qgis.PyQt.QtCore import QRectF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter
from qgis.PyQt.QtXml import QDomDocument

from terramind_qgis.models.core.modalities import LULC_CLASSES
from terramind_qgis.models.core.styles import render_qml, style_for

PANEL, TITLE, GAP, FOOTER = 320, 46, 12, 96
PANELS = (
    ("input", "Input: Sentinel-2 L2A (true colour)"),
    ("reconstruction", "Reconstruction (S2L2A tokenizer)"),
    ("difference", "Difference, B04 (reconstruction - input)"),
    ("S1GRD", "Generated Sentinel-1 GRD (VV, dB)"),
    ("DEM", "Generated DEM (m)"),
    ("LULC", "Generated land cover"),
)


def _input_stretch(layer: QgsRasterLayer) -> dict[int, tuple[float, float]]:
    """Mean +- 2 sigma of bands 2-4 (clipped to min..max), the stretch the worker uses for outputs."""
    stats = {}
    for band in (2, 3, 4):
        s = layer.dataProvider().bandStatistics(band, Qgis.RasterBandStatistic.All)
        stats[band] = (max(s.minimumValue, s.mean - 2 * s.stdDev), min(s.maximumValue, s.mean + 2 * s.stdDev))
    return stats


def _styled(path: str, key: str, s2_stretch: dict[int, tuple[float, float]] | None) -> QgsRasterLayer:
    layer = QgsRasterLayer(path, key)  # loads the .qml sidecar, if any, as its default style
    if key in ("input", "reconstruction") and s2_stretch:
        doc = QDomDocument()
        doc.setContent(render_qml(style_for("S2L2A", stats=s2_stretch)))
        layer.importNamedStyle(doc)
    return layer


def _panel(layer: QgsRasterLayer) -> QImage:
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(PANEL, PANEL))
    settings.setBackgroundColor(QColor("white"))
    image = QImage(QSize(PANEL, PANEL), QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QColor("white"))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.start()
    job.waitForFinished()
    painter.end()
    return image


def render_demo(paths: dict[str, str], target: Path, title: str, untrained: bool) -> str:
    """Draw the panels of ``paths`` (keys as in ``PANELS``) into one PNG at ``target``."""
    cols, rows = 3, 2
    width = cols * PANEL + (cols + 1) * GAP
    height = 40 + rows * (PANEL + TITLE) + (rows + 1) * GAP + FOOTER
    canvas = QImage(QSize(width, height), QImage.Format.Format_ARGB32_Premultiplied)
    canvas.fill(QColor("white"))
    painter = QPainter(canvas)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    heading = QFont()
    heading.setPixelSize(20)
    heading.setBold(True)
    painter.setFont(heading)
    painter.setPen(QColor("#b2182b") if untrained else QColor("black"))
    painter.drawText(QRectF(GAP, 6, width - 2 * GAP, 32), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
    label = QFont()
    label.setPixelSize(14)
    source = QgsRasterLayer(paths["input"], "input")
    stretch = _input_stretch(source)
    del source
    for i, (key, text) in enumerate(PANELS):
        x = GAP + (i % cols) * (PANEL + GAP)
        y = 40 + GAP + (i // cols) * (PANEL + TITLE + GAP)
        painter.setFont(label)
        painter.setPen(QColor("black"))
        caption = text + (" — UNTRAINED" if untrained and key != "input" else "")
        painter.drawText(QRectF(x, y, PANEL, TITLE), Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, caption)
        layer = _styled(paths[key], key, stretch)
        painter.drawImage(x, y + TITLE, _panel(layer))
        del layer
    _legend(painter, GAP, height - FOOTER + 8, width - 2 * GAP)
    painter.end()
    gc.collect()
    canvas.save(str(target))
    return str(target)


def _legend(painter: QPainter, x: int, y: int, width: int) -> None:
    small = QFont()
    small.setPixelSize(12)
    painter.setFont(small)
    per_row = 5
    cell = width // per_row
    for i, c in enumerate(LULC_CLASSES):
        cx, cy = x + (i % per_row) * cell, y + (i // per_row) * 22
        painter.fillRect(int(cx), int(cy), 16, 16, QColor(c.color))
        painter.setPen(QColor("#444444"))
        painter.drawRect(int(cx), int(cy), 16, 16)
        painter.setPen(QColor("black"))
        painter.drawText(QRectF(cx + 22, cy - 1, cell - 24, 18), Qt.AlignmentFlag.AlignVCenter, c.name)
    painter.setPen(QColor("#555555"))
    painter.drawText(QRectF(x, y + 48, width, 36), Qt.TextFlag.TextWordWrap,
                     "Input: TerraMesh example patch 282D_485L_3_3 (IBM/terramind, Apache-2.0; Copernicus Sentinel-2). "
                     "Rendered by QGIS with the styles the plugin writes next to each output (.qml).")
