"""Style and name result layers when Processing loads them (toolbox, models, batch, qgis_process).

Every style the QGIS side applies is here: rasters through ``attach_style`` (the worker's ``.qml``
sidecar or the output's default style from models/core/styles.py), class polygons through
``attach_class_polygons_style``.

Algorithms never touch the project or ``iface``. Instead ``attach_style`` registers a
``StylePostProcessor`` on the layer Processing will load for an output file; Processing calls it on
the main thread after adding the layer. It loads the worker's ``.qml`` sidecar (styled with the
output's own statistics) or, if the worker wrote none, the default style of that output from
``models/core/styles.py``. Processing keeps only a raw pointer to a post-processor, so every instance
is also kept alive here (QGIS issues #47533/#48087).
"""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument

from ..models.core.styles import render_qml, sidecar_path, style_for


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the sidecar (or default) style of one output and names the layer."""

    _alive: list[StylePostProcessor] = []  # Processing holds raw pointers: keep the Python objects

    def __init__(self, output: str, layer_name: str) -> None:
        super().__init__()
        self.output = output
        self.layer_name = layer_name

    @classmethod
    def create(cls, output: str, layer_name: str) -> StylePostProcessor:
        processor = cls(output, layer_name)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if not isinstance(layer, QgsRasterLayer):
            return
        apply_style(layer, self.output, feedback)
        layer.setName(self.layer_name)


def apply_style(layer: QgsRasterLayer, output: str, feedback: QgsProcessingFeedback | None = None) -> bool:
    """Give ``layer`` the style of ``output``: its ``.qml`` sidecar if there is one, else the default."""
    qml = sidecar_path(layer.source())
    if os.path.isfile(qml):
        message, ok = layer.loadNamedStyle(qml)
    else:
        doc = QDomDocument()
        doc.setContent(render_qml(style_for(output)))
        ok, message = layer.importNamedStyle(doc)
        message = message or ""
    if not ok and feedback is not None:
        feedback.pushWarning(f"Could not style layer '{layer.name()}': {message}")
    layer.triggerRepaint()
    return bool(ok)


def attach_style(context: QgsProcessingContext, path: str, output: str, layer_name: str) -> None:
    """If Processing will load ``path``, style it as ``output`` and call it ``layer_name``."""
    if not context.willLoadLayerOnCompletion(path):
        return
    details = context.layerToLoadOnCompletionDetails(path)
    details.name = layer_name
    details.setPostProcessor(StylePostProcessor.create(output, layer_name))


def forget_outputs(context: QgsProcessingContext, paths: list[str]) -> None:
    """Tell Processing not to load ``paths`` (outputs that were not written)."""
    keep = {k: v for k, v in context.layersToLoadOnCompletion().items() if k not in set(paths)}
    context.setLayersToLoadOnCompletion(keep)


class ClassPolygonsStyle(QgsProcessingLayerPostProcessorInterface):
    """Colours polygons by class (categorized on ``field``) when Processing loads them."""

    _alive: list[ClassPolygonsStyle] = []  # Processing keeps raw pointers only

    def __init__(self, classes: list[dict[str, Any]], field: str) -> None:
        super().__init__()
        self.classes, self.field = classes, field
        ClassPolygonsStyle._alive.append(self)

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if not isinstance(layer, QgsVectorLayer):
            return
        categories = []
        for c in self.classes:
            symbol = QgsSymbol.defaultSymbol(Qgis.GeometryType.Polygon)
            symbol.setColor(QColor(c["color"]))
            categories.append(QgsRendererCategory(c["value"], symbol, c["name"]))
        layer.setRenderer(QgsCategorizedSymbolRenderer(self.field, categories))
        layer.triggerRepaint()


def attach_class_polygons_style(context: QgsProcessingContext, path: str, classes: list[dict[str, Any]],
                                field: str) -> None:  # fmt: skip
    """If Processing will load the polygons at ``path``, colour them by ``classes`` (value, name, color)."""
    if context.willLoadLayerOnCompletion(path):
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(ClassPolygonsStyle(classes, field))
