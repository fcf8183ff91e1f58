"""Set up the worker's Python environment: a virtual environment with the plugin's requirements.

The models run in a separate Python (docs/architecture.md, "The worker process"); this algorithm creates one so users need
no terminal, in steps the dialog reports one by one:

1. ``<base python> -m venv FOLDER`` (an existing environment there is updated);
2. pip itself updated in it (pip 24.1+ reports download progress: ``--progress-bar raw``);
3. optionally torch from TORCH_INDEX_URL (e.g. a CUDA wheel index);
4. ``pip install -c constraints.txt -r <requirements>`` from the plugin folder, where the list is the
   plugin's ``requirements.txt`` with ``onnxruntime`` replaced by ``onnxruntime-gpu`` when the index is a
   CUDA one (``requirement_lines``; the two packages provide the same module, so the other one is
   removed first);
5. the check every run makes (the interpreter starts and has the worker's modules), plus what its
   PyTorch and ONNX Runtime offer (``onnxruntime.get_available_providers()``, asked in the new
   environment), and, unless told otherwise, the interpreter stored in the plugin setting
   ``terramind/python``.

pip's output goes to the log line by line; its steps (each distribution collected, downloads with
their size and, for big ones, every quarter, the install) become messages and move the progress bar
(``pip_output``). Cancelling stops pip within a second. It works the same from the toolbox and from
``qgis_process``.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

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

from ..models.core.errors import BackendUnavailableError, CancelledError, ConfigError, TerraMindError
from . import environment
from .base import AlgorithmIdentity
from .parameters import advanced
from .pip_output import PipProgress, count_installed, installed, normalise, site_packages
from .worker_client import POLL_S, pump_lines, stop_process

TORCH_PIN = "torch==2.13.0"
ONNXRUNTIME = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu"}
RAW_PROGRESS_PIP = (24, 1)  # the first pip with --progress-bar raw
INSTALL_POLL_S = 0.5  # how often the install phase counts the packages already in site-packages
DERIVED_REQUIREMENTS = "terramind-requirements.txt"  # written into the environment folder


def default_folder() -> str:
    """``<QGIS profile folder>/terramind-env``: per profile, writable, outside the plugin folder."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "terramind-env")


def default_base_python() -> str:
    """A Python 3 to create the venv with: this process's base interpreter when it is one, else python3."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    if os.path.basename(base).lower().startswith("python") and os.path.isfile(base):
        return base
    return shutil.which("python3") or shutil.which("python") or ""


def torch_build(index_url: str) -> str:
    """Which torch build a wheel index serves: ``cuda`` (``.../whl/cu124``), ``rocm``, ``cpu``, or ``default``
    (no index: what pip picks from the package index)."""
    segments = [s for s in urlparse(index_url.strip()).path.lower().split("/") if s]
    if not index_url.strip():
        return "default"
    if any(re.fullmatch(r"cu\d+", s) for s in segments):
        return "cuda"
    if any(s.startswith("rocm") for s in segments):
        return "rocm"
    return "cpu" if "cpu" in segments else "default"


def requirement_lines(requirements_file: str, torch_index: str = "") -> list[str]:
    """The requirement lines to install: the file's, with ``onnxruntime`` swapped for ``onnxruntime-gpu``
    (same version specifier) when ``torch_index`` serves the CUDA build of torch, and the paths of nested
    ``-r``/``-c`` files made absolute (the list is written into the environment folder)."""
    variant = ONNXRUNTIME["cuda"] if torch_build(torch_index) == "cuda" else ONNXRUNTIME["cpu"]
    folder = os.path.dirname(os.path.abspath(requirements_file))
    lines = []
    with open(requirements_file, encoding="utf-8") as f:
        for raw in f:
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            option = re.match(r"^(-r|-c|--requirement|--constraint)[ =]\s*(\S+)$", line)
            if option:
                lines.append(f"{option.group(1)} {os.path.join(folder, option.group(2))}")
                continue
            name = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", line)
            if name and normalise(name.group(1)) in {normalise(v) for v in ONNXRUNTIME.values()}:
                line = variant + name.group(2)
            lines.append(line)
    return lines


class SetUpEnvironmentAlgorithm(AlgorithmIdentity, QgsProcessingAlgorithm):
    """Creates the worker environment (venv + requirements) and selects it."""

    NAME, DISPLAY_NAME, GROUP = "setupenvironment", "Set up the Python environment", "environment"

    FOLDER = "FOLDER"
    BASE_PYTHON = "BASE_PYTHON"
    TORCH_INDEX_URL = "TORCH_INDEX_URL"
    REQUIREMENTS = "REQUIREMENTS"
    SAVE_SETTING = "SAVE_SETTING"
    PYTHON = "PYTHON"
    ONNX_PROVIDERS = "ONNX_PROVIDERS"

    def initAlgorithm(self, config=None) -> None:  # noqa: ARG002
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, self.tr("Environment folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder, defaultValue=default_folder()))
        # the file filter must take names without extension (python3): QGIS 3.40's default, *.*, does not
        self.addParameter(QgsProcessingParameterFile(self.BASE_PYTHON, self.tr("Base Python interpreter"),
                                                     defaultValue=default_base_python(), optional=True,
                                                     fileFilter="Python interpreters (python*);;All files (*)"))
        index_title = self.tr("Torch wheel index (e.g. for the CUDA build)")
        self.addParameter(QgsProcessingParameterString(self.TORCH_INDEX_URL, index_title, optional=True))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.REQUIREMENTS, self.tr("Requirements file (empty: the plugin's)"), optional=True,
            fileFilter="Requirements (*.txt)")))
        self.addParameter(QgsProcessingParameterBoolean(self.SAVE_SETTING, self.tr("Use it for TerraMind from now on"),
                                                        defaultValue=True))
        self.addOutput(QgsProcessingOutputString(self.PYTHON, self.tr("Worker interpreter")))
        self.addOutput(QgsProcessingOutputString(self.ONNX_PROVIDERS, self.tr("ONNX Runtime execution providers")))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        try:
            folder = self.parameterAsFile(parameters, self.FOLDER, context) or default_folder()
            base = self.parameterAsFile(parameters, self.BASE_PYTHON, context) or default_base_python()
            index = self.parameterAsString(parameters, self.TORCH_INDEX_URL, context).strip()
            plugin = environment.plugin_dir()
            requirements = (self.parameterAsFile(parameters, self.REQUIREMENTS, context)
                            or os.path.join(plugin, "requirements.txt"))
            if not base or not os.path.isfile(base):
                raise ConfigError(f"{self.BASE_PYTHON}: no Python interpreter at '{base}'; give the path of a Python 3")
            if not os.path.isfile(requirements):
                raise ConfigError(f"{self.REQUIREMENTS}: '{requirements}' does not exist")
            if index and not urlparse(index).scheme:
                raise ConfigError(f"{self.TORCH_INDEX_URL}: '{index}' is not a URL; give a wheel index such as "
                                  "https://download.pytorch.org/whl/cu124, or leave it empty")
            build = torch_build(index)
            steps = ["venv", "pip", *(["torch"] if index else []), "requirements", "check"]
            spans = _spans(steps, {"venv": 3, "pip": 5, "torch": 37, "requirements": 50 if index else 86, "check": 6})
            say = _Steps(steps, feedback)

            python = environment.venv_python(folder)
            say("venv", f"Creating the virtual environment {folder} with {base}" if not os.path.isfile(python)
                else f"Updating the existing environment {folder}")  # fmt: skip
            if not os.path.isfile(python):
                _run([base, "-m", "venv", folder], feedback)
            feedback.setProgress(spans["venv"][1])

            constraints = os.path.join(plugin, "constraints.txt")
            pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
            pip += ["-c", constraints] if os.path.isfile(constraints) else []
            say("pip", "Updating pip in the environment")
            try:
                _run([*pip, "--upgrade", "pip"], feedback, spans["pip"], folder)
            except BackendUnavailableError as e:
                feedback.pushWarning(f"pip could not be updated ({e}); going on with the pip the environment has")
            if _pip_version(python) >= RAW_PROGRESS_PIP:
                pip.append("--progress-bar=raw")

            if index:
                say("torch", f"Installing {TORCH_PIN} from {index} ({'the CUDA build' if build == 'cuda' else build})")
                _run([*pip, "--index-url", index, TORCH_PIN], feedback, spans["torch"], folder)

            lines = requirement_lines(requirements, index)
            variant = ONNXRUNTIME["cuda"] if build == "cuda" else ONNXRUNTIME["cpu"]
            say("requirements", f"Installing the requirements of {requirements}"
                + (f" with {variant} (the CUDA build of torch was requested)" if build == "cuda" else ""))  # fmt: skip
            _remove_other_onnxruntime(python, folder, variant, feedback)
            derived = os.path.join(folder, DERIVED_REQUIREMENTS)
            with open(derived, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            _run([*pip, "-r", derived], feedback, spans["requirements"], folder)

            say("check", "Checking the environment")
            interpreter = environment.Interpreter(python, "new environment")
            version = environment.check_interpreter(interpreter)
            feedback.pushInfo(f"The environment works: Python {version} with {', '.join(environment.REQUIRED_MODULES)}")
            providers = _report_backends(environment.describe_backends(interpreter), build, feedback)
            if self.parameterAsBool(parameters, self.SAVE_SETTING, context):
                QgsSettings().setValue(environment.SETTINGS_KEY, python)
                feedback.pushInfo(f"Saved as the plugin setting {environment.SETTINGS_KEY}")
            feedback.setProgress(100)
            return {self.PYTHON: python, self.ONNX_PROVIDERS: ",".join(providers)}
        except TerraMindError as e:
            raise QgsProcessingException(str(e)) from None


class _Steps:
    """Announces each step as 'Step i/n: ...' (one message per step)."""

    def __init__(self, steps: list[str], feedback: QgsProcessingFeedback) -> None:
        self.steps, self.feedback = steps, feedback

    def __call__(self, step: str, text: str) -> None:
        self.feedback.pushInfo(f"Step {self.steps.index(step) + 1}/{len(self.steps)}: {text}")


def _spans(steps: list[str], weights: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Each step's share of the progress bar (0 to 100), in order."""
    total = sum(weights[s] for s in steps)
    spans, start = {}, 0.0
    for step in steps:
        end = start + 100.0 * weights[step] / total
        spans[step] = (start, end)
        start = end
    return spans


def _pip_version(python: str) -> tuple[int, ...]:
    try:
        done = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60,
                              env=environment.worker_environment(), check=False)  # fmt: skip
        return tuple(int(p) for p in re.match(r"pip (\d+)\.(\d+)", done.stdout).groups())
    except (OSError, subprocess.SubprocessError, AttributeError):
        return (0,)


def _remove_other_onnxruntime(python: str, folder: str, wanted: str, feedback: QgsProcessingFeedback) -> None:
    """onnxruntime and onnxruntime-gpu install the same module: drop the one not wanted, if there."""
    present = [v for v in ONNXRUNTIME.values() if v != wanted and normalise(v) in installed(site_packages(folder))]
    if present:
        feedback.pushInfo(f"Removing {', '.join(present)} (replaced by {wanted})")
        _run([python, "-m", "pip", "uninstall", "-y", *present], feedback)


def _report_backends(facts: dict, build: str, feedback: QgsProcessingFeedback) -> list[str]:
    """One line each for PyTorch and ONNX Runtime; warnings when a requested CUDA build is not what came."""
    if "torch" in facts:
        cuda = f"built for CUDA {facts['torch_cuda']}" if facts.get("torch_cuda") else "CPU build"
        device = "a CUDA device is available" if facts.get("cuda_device") else "no CUDA device available"
        feedback.pushInfo(f"PyTorch {facts['torch']}: {cuda}, {device}")
        if build == "cuda" and not facts.get("torch_cuda"):
            feedback.pushWarning("The CUDA build of torch was requested, but the installed torch is a CPU build")
    else:
        feedback.pushWarning(f"PyTorch does not import: {facts.get('torch_error', 'unknown error')}")
    providers = list(facts.get("onnx_providers", []))
    if "onnxruntime" in facts:
        feedback.pushInfo(f"ONNX Runtime {facts['onnxruntime']} execution providers: {', '.join(providers) or 'none'}")
        if build == "cuda" and "CUDAExecutionProvider" not in providers:
            feedback.pushWarning("ONNX Runtime offers no CUDAExecutionProvider: ONNX models will run on the CPU")
    else:
        feedback.pushWarning(f"ONNX Runtime does not import: {facts.get('onnxruntime_error', 'unknown error')} "
                             "(only the .onnx models need it)")  # fmt: skip
    return providers


def _run(argv: list[str], feedback: QgsProcessingFeedback, span: tuple[float, float] | None = None,
         venv: str | None = None) -> None:
    """Run one set-up command: its output to the log, pip's steps as messages and progress within ``span``
    (percent) when given; stop it on cancel; fail with its last lines."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=environment.worker_environment(), text=True, errors="replace", bufsize=1)  # fmt: skip
    except OSError as e:
        raise BackendUnavailableError(f"could not run {argv[0]}: {e}") from None
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True).start()
    pip = PipProgress()
    started, counted_at, shown = time.time(), 0.0, -1.0
    tail: list[str] = []
    while True:
        if feedback.isCanceled():
            stop_process(proc)
            raise CancelledError("environment set-up cancelled")
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            text = line.rstrip()
            if not text.startswith("Progress "):
                feedback.pushConsoleInfo(text)
                tail = (tail + [text])[-5:]
            message = pip.feed(text)
            if message and span is not None:
                feedback.pushInfo(message)
        if span is None:
            continue
        if venv and pip.to_install and not pip.finished and time.monotonic() - counted_at >= INSTALL_POLL_S:
            pip.installed = count_installed(site_packages(venv), pip.to_install, started - 1)
            counted_at = time.monotonic()
        progress = round(span[0] + (span[1] - span[0]) * pip.fraction(), 1)
        if progress != shown:
            feedback.setProgress(progress)
            shown = progress
    proc.wait()
    proc.stdout.close()  # read to its end by pump_lines
    if proc.returncode != 0:
        raise BackendUnavailableError(f"'{' '.join(argv[:4])} …' failed (exit code {proc.returncode}): " + " | ".join(tail))
