"""The worker-side probe that *Set up the Python environment* runs in the environment it built."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime
import torch

from terramind_qgis.models.worker import backends_probe
from testlib.paths import PLUGIN_PATH


def test_the_probe_reports_this_interpreters_torch_and_onnxruntime():
    done = subprocess.run([sys.executable, "-m", "terramind_qgis.models.worker.backends_probe"], capture_output=True,
                          text=True, timeout=120, check=True, env={"PYTHONPATH": str(PLUGIN_PATH), "PATH": "/usr/bin:/bin"})
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["torch"] == torch.__version__ and facts["cuda_device"] == torch.cuda.is_available()
    assert facts["onnx_providers"] == onnxruntime.get_available_providers()


def test_a_package_that_does_not_import_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import raises ModuleNotFoundError
    facts = backends_probe.backends()
    assert "onnxruntime" not in facts and facts["onnxruntime_error"].startswith("ModuleNotFoundError: import of onnxruntime")
    assert facts["torch"] == torch.__version__
