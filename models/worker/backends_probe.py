"""``python -m <plugin>.models.worker.backends_probe``: what this interpreter's PyTorch and ONNX Runtime offer.

Prints one JSON line: ``torch`` (version), ``torch_cuda`` (the CUDA version torch was built for, or
None), ``cuda_device`` (a usable GPU), ``onnxruntime`` and ``onnx_providers``
(``onnxruntime.get_available_providers()``); a package that does not import gives ``<name>_error``
instead. *Set up the Python environment* runs it in the environment it built (the QGIS side never
imports either package).
"""

from __future__ import annotations

import json
from typing import Any


def backends() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import torch

        facts.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_device=torch.cuda.is_available())
    except Exception as e:  # noqa: BLE001 - a broken install is what this reports
        facts["torch_error"] = f"{type(e).__name__}: {e}"
    try:
        import onnxruntime

        facts.update(onnxruntime=onnxruntime.__version__, onnx_providers=list(onnxruntime.get_available_providers()))
    except Exception as e:  # noqa: BLE001
        facts["onnxruntime_error"] = f"{type(e).__name__}: {e}"
    return facts


if __name__ == "__main__":
    print(json.dumps(backends()))
