"""Task ``describe``: facts about the worker's environment, for the plugin's diagnostics.

The result event carries ``environment`` (versions of Python, torch, numpy, rasterio/GDAL/PROJ,
onnxruntime, the plugin and the protocol; CPU count and threads; CUDA availability and every GPU's
name and memory; the device ``auto`` would pick). Nothing is read or written.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from ...core.job import PROTOCOL_VERSION, Job
from .context import RunContext
from .outputs import plugin_version


@dataclass(frozen=True)
class DescribeRequest:
    job: Job

    def close(self) -> None:
        pass


def validate(job: Job, backend: str) -> DescribeRequest:
    return DescribeRequest(job)


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - a broken optional package is reported as missing
        return None
    return str(getattr(mod, "__version__", "unknown"))


def environment() -> dict[str, Any]:
    """The facts listed in the module docstring."""
    import rasterio
    import torch

    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "plugin_version": plugin_version(),
        "protocol": PROTOCOL_VERSION,
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "proj": getattr(rasterio, "__proj_version__", None),
        "onnxruntime": _version("onnxruntime"),
        "huggingface_hub": _version("huggingface_hub"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            facts["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    facts["auto_device"] = "cuda:0" if facts["cuda_available"] else "cpu"
    return facts


def run(req: DescribeRequest, ctx: RunContext) -> dict[str, Any]:
    facts = environment()
    facts["device"] = ctx.device.facts
    return {"outputs": {}, "metrics": {}, "environment": facts}
