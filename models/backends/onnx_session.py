"""ONNX Runtime sessions for the exported graphs: lazy import, execution provider, card checks.

``open_graph(path, graphs, device)`` reads the file's model card (onnx_card.py; a file without our
card, or with a card of another graph kind, is a ``CheckpointError``), starts an
``onnxruntime.InferenceSession`` and checks that the card describes the graph (input and output
names, fixed dimensions). onnxruntime is imported only here and only when a session is opened;
a Python without it gets ``BackendUnavailableError``. No torch anywhere.

Devices: ``auto`` → the CUDA execution provider when this onnxruntime build has it (the
``onnxruntime-gpu`` package), else the CPU one; ``cpu``; ``cuda`` / ``cuda:N`` (an error when
the CUDA provider is not available or fails to start, never a silent CPU run). ``OnnxGraph.providers``
says which providers the session really uses. CPU threads: ``TERRAMIND_NUM_THREADS`` /
``OMP_NUM_THREADS`` if set, else every CPU this process may use (as the torch worker does).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailableError, CheckpointError, ConfigError
from ..core.job import DEVICES_HELP
from ..runtime.device import cpu_threads
from .onnx_card import PathLike, read_card

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or ``BackendUnavailableError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(
            f"onnxruntime is not installed in the worker's Python ({sys.executable}): install it with "
            f"'pip install onnxruntime' (CPU) or 'pip install onnxruntime-gpu' (CUDA), or use the torch backend ({e})"
        ) from None
    return onnxruntime


def resolve_providers(device: str = "auto") -> list[tuple[str, dict[str, Any]]]:
    """The execution providers (with options) for ``device``, most preferred first."""
    available = import_onnxruntime().get_available_providers()
    if device == "auto":
        device = "cuda" if CUDA in available else "cpu"
    if device == "cpu":
        return [(CPU, {})]
    if device == "cuda" or device.startswith("cuda:"):
        if CUDA not in available:
            raise ConfigError(
                f"device '{device}' was requested but this onnxruntime has no CUDA execution provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or choose device 'cpu' or 'auto'"
            )
        index = device.split(":", 1)[1] if ":" in device else "0"
        if not index.isdigit():
            raise ConfigError(f"device must be {DEVICES_HELP}, got '{device}'")
        return [(CUDA, {"device_id": int(index)}), (CPU, {})]
    raise ConfigError(f"device must be {DEVICES_HELP}, got '{device}'")


@dataclass
class OnnxGraph:
    """One exported graph in an ONNX Runtime session, with its model card."""

    path: Path
    card: dict[str, Any]
    session: Any  # onnxruntime.InferenceSession
    providers: list[str]  # what the session really runs on, most preferred first
    threads: int

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def description(self) -> str:
        """Human text for the worker's info event, e.g. 'onnxruntime 1.31.1 CPUExecutionProvider (2 threads)'."""
        ort = import_onnxruntime()
        where = self.providers[0] if self.providers else "?"
        extra = f" ({self.threads} thread{'s' if self.threads != 1 else ''})" if where == CPU else ""
        return f"onnxruntime {ort.__version__} {where}{extra}"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; returns ``{output name: array}``."""
        values = self.session.run(None, dict(feeds))
        return dict(zip(self.output_names, values))


def open_graph(
    path: PathLike, graphs: Sequence[str], device: str = "auto", threads: int | None = None
) -> OnnxGraph:
    """Open an exported ``.onnx`` of one of the kinds ``graphs`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model file '{path}' does not exist or is not a file")
    card = read_card(path, graphs)
    ort = import_onnxruntime()
    providers = resolve_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or cpu_threads()
    options.log_severity_level = 3  # errors only: no provider-assignment chatter on stderr
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"onnxruntime cannot load '{path.name}': {detail}") from None
    used = list(session.get_providers())
    if providers[0][0] == CUDA and (not used or used[0] != CUDA):
        raise ConfigError(
            f"device '{device}': the CUDA execution provider could not start (CUDA/cuDNN libraries missing or "
            "incompatible with this onnxruntime-gpu); choose device 'cpu'"
        )
    _check_card_describes_graph(card, session, path.name)
    return OnnxGraph(path, card, session, used, options.intra_op_num_threads)


def _check_card_describes_graph(card: dict[str, Any], session: Any, name: str) -> None:
    """The card's inputs/outputs must be the graph's (names in order, fixed dimensions equal)."""
    for role, declared, actual in (("input", card["inputs"], session.get_inputs()),
                                   ("output", card["outputs"], session.get_outputs())):  # fmt: skip
        names = [d.get("name") for d in declared]
        if names != [a.name for a in actual]:
            raise CheckpointError(
                f"the model card of '{name}' does not describe its graph: card {role}s {names}, "
                f"graph {role}s {[a.name for a in actual]}"
            )
        for d, a in zip(declared, actual):
            shape = list(d.get("shape") or [])
            graph_shape = list(a.shape)
            fixed_differ = len(shape) != len(graph_shape) or any(
                s != -1 and isinstance(g, int) and s != g for s, g in zip(shape, graph_shape)
            )
            if fixed_differ:
                raise CheckpointError(
                    f"the model card of '{name}' does not describe its graph: {role} '{a.name}' is "
                    f"{graph_shape} in the graph but {shape} in the card"
                )
