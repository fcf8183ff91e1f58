"""First start without a worker environment: one message-bar prompt that opens the set-up algorithm.

When no interpreter is configured (``environment.find_interpreter``: no ``TERRAMIND_PYTHON``, no
plugin setting, no ``.venv`` in the plugin folder), the desktop shows one message in QGIS's message
bar with a button that opens *Set up the Python environment* (its Processing dialog). The prompt is
pushed once per session, goes away when the button is used, and is removed when the plugin unloads.
At start-up it waits for ``iface.initializationCompleted``, so that it comes after QGIS's own start-up
messages (the message bar shows the newest on top); a plugin enabled later shows it at once.
"""

from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

from ..models.core.errors import BackendUnavailableError
from ..processing_algorithms import environment

SETUP_ALGORITHM = "terramind:setupenvironment"
OBJECT_NAME = "TerraMindFirstRun"  # the message-bar item, for tests and screenshots
TITLE = "TerraMind"
TEXT = "needs a Python environment with PyTorch to run its models; it is created once, in your QGIS profile."
BUTTON = "Set up the Python environment…"


def needs_environment() -> bool:
    """True when no worker interpreter is configured (the check every run makes first)."""
    try:
        environment.find_interpreter()
    except BackendUnavailableError:
        return True
    return False


class FirstRunPrompt:
    """The message-bar prompt; ``show()`` pushes it when needed (at most once), ``remove()`` takes it away."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.item = None
        self.shown = False

    def show_when_ready(self) -> None:
        """Show the prompt now if QGIS is up (the main window is shown), else once its start-up completes."""
        completed = getattr(self.iface, "initializationCompleted", None)  # absent from test interfaces
        if completed is None or self.iface.mainWindow().isVisible():
            self.show()
        else:
            completed.connect(self.show)

    def show(self) -> bool:
        if self.shown or not needs_environment():
            return False
        bar = self.iface.messageBar()
        item = bar.createMessage(TITLE, TEXT)
        item.setObjectName(OBJECT_NAME)
        button = QPushButton(BUTTON, item)
        button.clicked.connect(self.open_setup)
        item.layout().addWidget(button)
        self.item = bar.pushWidget(item, Qgis.MessageLevel.Info, 0)
        self.shown = True
        return True

    def open_setup(self) -> None:
        self.remove()
        import processing  # the Processing plugin is loaded by the time the button is used

        processing.execAlgorithmDialog(SETUP_ALGORITHM, {})

    def remove(self) -> None:
        if self.item is not None:
            try:
                self.iface.messageBar().popWidget(self.item)
            except RuntimeError:  # already closed by the user (the C++ item is gone)
                pass
            self.item = None
