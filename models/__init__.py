"""TerraMind v1 in plain PyTorch, the tiled raster engine and the worker entry point.

Torch-free modules (importable from QGIS's Python): ``errors``, ``progress``, ``modalities``,
``catalogue``, ``job``. Everything else imports torch and runs in the worker process
(docs/architecture.md, "Layers"). Modules inside this package import each other relatively, so the
package works both as ``<plugin>.models`` and inside the worker.
"""
