"""Settings dialog: the worker interpreter, with a button that checks it by running the worker.

The check runs the worker's ``describe`` task and shows what it reports (Python, torch and CUDA
versions, the device it would use), so users see the truth about their environment before a run.
"""

from __future__ import annotations

import json
import os

from qgis.core import QgsApplication, QgsProcessingFeedback, QgsSettings, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from ..models.core.errors import TerraMindError
from ..models.core.job import Job, ModelRequest
from ..processing_algorithms import environment, worker_client


class SettingsDialog(QDialog):
    """Edit ``terramind/python`` and check the interpreter it names."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("TerraMind settings")
        self.resize(640, 380)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(
            "Python interpreter of the TerraMind worker environment (with torch; see README, 'The worker "
            f"environment').\nThe environment variable {environment.ENV_VAR}, when set, takes precedence."))
        self.path = QgsFileWidget()
        self.path.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.path.setFilePath(str(QgsSettings().value(environment.SETTINGS_KEY, "") or ""))
        layout.addWidget(self.path)
        self.check_button = QPushButton("Check environment")
        self.check_button.clicked.connect(self.check)
        layout.addWidget(self.check_button)
        self.task: QgsTask | None = None
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        layout.addWidget(self.report)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def accept(self) -> None:
        QgsSettings().setValue(environment.SETTINGS_KEY, self.path.filePath().strip())
        super().accept()

    def check(self) -> None:
        """Run the worker's ``describe`` task with the interpreter in the field (or the configured one), in
        a background task: starting the worker and importing torch takes seconds, QGIS stays responsive."""
        path = self.path.filePath().strip()
        self.check_button.setEnabled(False)
        self.report.setPlainText(f"Checking {path or 'the configured environment'} (starting the worker, importing torch)…")
        self.task = QgsTask.fromFunction("Check the TerraMind environment", lambda task: describe(path),
                                         on_finished=self._checked)  # fmt: skip
        QgsApplication.taskManager().addTask(self.task)

    def _checked(self, exception: Exception | None, report: str | None = None) -> None:
        self.check_button.setEnabled(True)
        self.report.setPlainText(report if exception is None else f"The check failed: {exception}")
        self.task = None


def describe(path: str) -> str:
    """What the worker reports about its environment, or the error that prevents it from running."""
    try:
        if path and not os.path.isfile(path):
            return f"'{path}' does not exist. {environment.HOW_TO}"
        interpreter = environment.Interpreter(path, "settings dialog") if path else environment.find_interpreter()
        environment.check_interpreter(interpreter)
        job = Job(task="describe", inputs={}, outputs={}, model=ModelRequest(id=""))
        result = worker_client.run_job(job, interpreter, QgsProcessingFeedback())
    except TerraMindError as e:
        return str(e)
    facts = {k: v for k, v in result.items() if k != "event"}
    return f"Interpreter: {interpreter.path}\n" + json.dumps(facts, indent=2, default=str)
