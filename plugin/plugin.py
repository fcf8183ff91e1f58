"""The plugin object QGIS creates (``classFactory``): registers the provider and the menu entries.

``initProcessing`` is all ``qgis_process`` needs; ``initGui`` adds menu actions for the desktop and,
when no worker environment is configured, the first-run prompt (``first_run``). The provider loads
without the worker environment; algorithms report a missing one when run.
"""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QAction, QIcon

from ..processing_algorithms.base import ICON
from ..processing_algorithms.provider import TerraMindProvider
from .first_run import FirstRunPrompt

MENU = "&TerraMind"


class TerraMindPlugin:
    """Registers the ``terramind`` Processing provider and the Plugins ▸ TerraMind menu."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: TerraMindProvider | None = None
        self.actions: list[QAction] = []
        self.first_run: FirstRunPrompt | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = TerraMindProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        self.initProcessing()
        window = self.iface.mainWindow()
        entries = (
            ("Generate modalities…", lambda: self._open("terramind:generatemodalities")),
            ("Reconstruct with tokenizer…", lambda: self._open("terramind:reconstructwithtokenizer")),
            ("Segment with fine-tuned model…", lambda: self._open("terramind:segmentwithfinetunedmodel")),
            ("Map water (zero-shot)…", lambda: self._open("terramind:mapwaterzeroshot")),
            ("Set up the Python environment…", lambda: self._open("terramind:setupenvironment")),
            ("Settings…", self._settings),
        )
        for text, slot in entries:
            action = QAction(QIcon(ICON), text, window)
            action.triggered.connect(slot)
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        self.first_run = FirstRunPrompt(self.iface)
        self.first_run.show_when_ready()

    def unload(self) -> None:
        if self.first_run is not None:
            self.first_run.remove()
            self.first_run = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def _open(self, algorithm_id: str) -> None:
        import processing  # the Processing plugin is loaded by the time a menu entry is used

        processing.execAlgorithmDialog(algorithm_id, {})

    def _settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()
