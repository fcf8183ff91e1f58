"""Style and name result layers when Processing loads them (toolbox, models, batch, qgis_process).

Algorithms never touch the project or ``iface``. Instead ``attach_style`` registers a
``StylePostProcessor`` on the layer Processing will load for an output file; Processing calls it on
the main thread after adding the layer. It loads the worker's ``.qml`` sidecar (styled with the
output's own statistics) or, if the worker wrote none, the default style of that output from
``models/core/styles.py``. Processing keeps only a raw pointer to a post-processor, so every instance
is also kept alive here (QGIS issues #47533/#48087).
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
)
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
