"""TerraMind for QGIS: the plugin package (its folder is the repository root).

QGIS calls ``classFactory``; nothing heavy is imported here, because the worker process imports
this package too (as the parent of ``models``) and must not need QGIS.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """Create the plugin object (QGIS entry point)."""
    from .plugin.plugin import TerraMindPlugin

    return TerraMindPlugin(iface)
