"""QGIS Processing glue of the TerraMind plugin (QGIS side; never imports torch, rasterio or onnxruntime).

``provider.TerraMindProvider`` lists the algorithms; each algorithm turns its parameters into a job
for the worker process (``worker_client``), checked before the worker starts (``base``).
"""

LOG_TAG = "TerraMind"  # the plugin's tab in the QGIS message log
