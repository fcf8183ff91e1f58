"""The QGIS desktop side of the plugin: provider registration, menu actions, the settings dialog."""
