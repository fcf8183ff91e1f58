"""Set up the worker's Python environment: a virtual environment with the plugin's requirements.

The models run in a separate Python (architecture.md §1); this algorithm creates one so users need
no terminal: ``<base python> -m venv FOLDER``, then ``pip install -c constraints.txt -r
requirements.txt`` from the plugin folder (optionally torch first from TORCH_INDEX_URL, e.g. a CUDA
wheel index), then the same check every run makes (the interpreter starts and has the worker's
modules), and, unless told otherwise, stores the interpreter in the plugin setting
``terramind/python``. pip's output is relayed line by line; cancelling stops pip within a second.
It works the same from the toolbox and from ``qgis_process``.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
    QgsSettings,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..models.core.errors import BackendUnavailableError, CancelledError, ConfigError, TerraMindError
from . import environment
from .base import ICON
from .parameters import advanced
from .worker_client import POLL_S, pump_lines, stop_process

TORCH_PIN = "torch==2.13.0"


def default_folder() -> str:
    """``<QGIS profile folder>/terramind-env``: per profile, writable, outside the plugin folder."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "terramind-env")


def default_base_python() -> str:
    """A Python 3 to create the venv with: this process's base interpreter when it is one, else python3."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    if os.path.basename(base).lower().startswith("python") and os.path.isfile(base):
        return base
    return shutil.which("python3") or shutil.which("python") or ""


class SetUpEnvironmentAlgorithm(QgsProcessingAlgorithm):
    """Creates the worker environment (venv + requirements) and selects it."""

    FOLDER = "FOLDER"
    BASE_PYTHON = "BASE_PYTHON"
    TORCH_INDEX_URL = "TORCH_INDEX_URL"
    REQUIREMENTS = "REQUIREMENTS"
    SAVE_SETTING = "SAVE_SETTING"
    PYTHON = "PYTHON"

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> SetUpEnvironmentAlgorithm:
        return type(self)()

    def name(self) -> str:
        return "setupenvironment"

    def displayName(self) -> str:
        return self.tr("Set up the Python environment")

    def group(self) -> str:
        return self.tr("Environment")

    def groupId(self) -> str:
        return "environment"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def shortHelpString(self) -> str:
        return self.tr(
            "Creates the Python environment the TerraMind models run in (a virtual environment with PyTorch, "
            "rasterio, ONNX Runtime and the other requirements of the plugin) and selects it for the plugin. "
            "QGIS's own Python is not changed.\n\n"
            "<b>Folder</b>: where the environment goes (default: terramind-env in your QGIS profile); an existing "
            "environment there is updated. <b>Base Python</b>: the Python 3.10+ used to create it. "
            "<b>Torch wheel index</b>: optional, e.g. https://download.pytorch.org/whl/cu124 for a CUDA build "
            "(the default index gives the build pip chooses for your system). Needs network access to the package "
            "index, or a pip configuration pointing at a local one."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: ARG002
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, self.tr("Environment folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder, defaultValue=default_folder()))
        self.addParameter(QgsProcessingParameterFile(self.BASE_PYTHON, self.tr("Base Python interpreter"),
                                                     defaultValue=default_base_python(), optional=True))
        self.addParameter(QgsProcessingParameterString(self.TORCH_INDEX_URL, self.tr("Torch wheel index (optional)"),
                                                       optional=True))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.REQUIREMENTS, self.tr("Requirements file (empty: the plugin's)"), optional=True,
            fileFilter="Requirements (*.txt)")))
        self.addParameter(QgsProcessingParameterBoolean(self.SAVE_SETTING, self.tr("Use it for TerraMind from now on"),
                                                        defaultValue=True))
        self.addOutput(QgsProcessingOutputString(self.PYTHON, self.tr("Worker interpreter")))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        try:
            folder = self.parameterAsFile(parameters, self.FOLDER, context) or default_folder()
            base = self.parameterAsFile(parameters, self.BASE_PYTHON, context) or default_base_python()
            index = self.parameterAsString(parameters, self.TORCH_INDEX_URL, context).strip()
            plugin = environment.plugin_dir()
            requirements = self.parameterAsFile(parameters, self.REQUIREMENTS, context) or os.path.join(plugin, "requirements.txt")
            if not base or not os.path.isfile(base):
                raise ConfigError(f"{self.BASE_PYTHON}: no Python interpreter at '{base}'; give the path of a Python 3")
            if not os.path.isfile(requirements):
                raise ConfigError(f"{self.REQUIREMENTS}: '{requirements}' does not exist")
            python = environment.venv_python(folder)
            if not os.path.isfile(python):
                feedback.pushInfo(f"Creating the virtual environment {folder} with {base}")
                _run([base, "-m", "venv", folder], feedback)
            pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
            constraints = os.path.join(plugin, "constraints.txt")
            pip += ["-c", constraints] if os.path.isfile(constraints) else []
            if index:
                feedback.pushInfo(f"Installing {TORCH_PIN} from {index}")
                _run([*pip, "--index-url", index, TORCH_PIN], feedback)
            feedback.pushInfo(f"Installing the requirements of {requirements}")
            _run([*pip, "-r", requirements], feedback)
            interpreter = environment.Interpreter(python, "new environment")
            version = environment.check_interpreter(interpreter)
            feedback.pushInfo(f"The environment works: Python {version} with {', '.join(environment.REQUIRED_MODULES)}")
            if self.parameterAsBool(parameters, self.SAVE_SETTING, context):
                QgsSettings().setValue(environment.SETTINGS_KEY, python)
                feedback.pushInfo(f"Saved as the plugin setting {environment.SETTINGS_KEY}")
            return {self.PYTHON: python}
        except TerraMindError as e:
            raise QgsProcessingException(str(e)) from None


def _run(argv: list[str], feedback: QgsProcessingFeedback) -> None:
    """Run one set-up command, relaying its output; stop it on cancel; fail with its last lines."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=environment.worker_environment(), text=True, errors="replace", bufsize=1)  # fmt: skip
    except OSError as e:
        raise BackendUnavailableError(f"could not run {argv[0]}: {e}") from None
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True).start()
    tail: list[str] = []
    while True:
        if feedback.isCanceled():
            stop_process(proc)
            raise CancelledError("environment set-up cancelled")
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            break
        feedback.pushConsoleInfo(line.rstrip())
        tail = (tail + [line.rstrip()])[-5:]
    if proc.wait() != 0:
        raise BackendUnavailableError(f"'{' '.join(argv[:4])} …' failed (exit code {proc.returncode}): " + " | ".join(tail))
