"""The torch-free part of ``models/``: what the QGIS side may import.

Errors, progress, modalities, the model catalogue and its configs, the job protocol, the typed
task parameters, output styles and seeds. Modules here import only the standard library and each
other (``tests/unit/test_layering.py``), so QGIS's Python can use them without torch, rasterio or
numpy.
"""
