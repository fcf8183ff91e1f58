"""Device, precision, CPU threads and out-of-memory back-off: chosen in one place for both backends.

- ``auto`` → CUDA (device 0) if available, else the CPU; ``cuda`` / ``cuda:N`` must exist.
- Precision (torch): ``fp32`` (default, the reference's numbers), or ``bf16`` / ``fp16`` through
  ``torch.autocast`` (the models keep their fp32 islands: GroupNorm, the tokenizer post-MLP and
  the DDIM scheduler). bf16 runs on CPUs and on GPUs that support it; fp16 only on CUDA. The ONNX
  backend runs the exported float32 graphs: fp32 only. On the CPU the info message names the CPU's
  bf16 support (:func:`cpu_bf16_support`: AMX-BF16 or AVX512-BF16 from ``/proc/cpuinfo``; without
  either oneDNN emulates bf16, which is usually slower than fp32, and the message says so).
  :func:`prepare_decoders` casts the diffusion UNets' weights to the autocast dtype once at load
  (GroupNorm kept float32), so autocast no longer casts them per call (results within bf16 rounding
  of the per-call cast: oneDNN's bf16-weight kernels accumulate in another order).
- CPU threads (``cpu_threads``): ``TERRAMIND_NUM_THREADS`` / ``OMP_NUM_THREADS`` if set, else every
  CPU this process may run on (``sched_getaffinity``); the same policy for torch and ONNX Runtime.
- ``OomBackoff``: an out-of-memory error halves the model batch, says so in a warning, and retries;
  at batch 1 it raises ``ConfigError`` saying what to change.

torch and onnxruntime are imported inside the functions that need them, so an ONNX-only worker
never imports torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.job import DEVICES_HELP
from ..core.progress import Progress


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how a model runs."""

    device: Any  # torch.device (torch backend) or 'cpu' / 'cuda:N' (ONNX backend)
    precision: str  # fp32 | bf16 | fp16
    description: str  # human text for the info event
    facts: dict[str, Any]

    @property
    def autocast_dtype(self) -> Any:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.autocast`` for bf16/fp16, nothing for fp32."""
        if self.precision == "fp32":
            yield
            return
        import torch

        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            yield


def cpu_threads() -> int:
    """CPU threads a run may use (see the module docstring)."""
    wanted = os.environ.get("TERRAMIND_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        n = int(wanted) if wanted else len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):
        n = os.cpu_count() or 1
    return max(1, n)


def configure_threads() -> int:
    """Set torch's CPU thread count to ``cpu_threads()`` and return it."""
    import torch

    n = cpu_threads()
    torch.set_num_threads(n)
    return n


CPU_FLAGS = "/proc/cpuinfo"
BF16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))


def cpu_bf16_support(cpuinfo: str | None = None) -> str | None:
    """``'AMX-BF16'`` / ``'AVX512-BF16'`` when the CPU computes bf16 natively, else ``None``.

    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when omitted; ``None`` where it cannot be read)."""
    if cpuinfo is None:
        try:
            with open(CPU_FLAGS, encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return next((label for flag, label in BF16_FLAGS if flag in flags), None)


def cpu_precision_text(precision: str, support: str | None) -> str:
    """The CPU's part of the info message for ``precision``."""
    if precision != "bf16":
        return precision
    if support:
        return f"bf16 (autocast; the CPU has {support})"
    return "bf16 (autocast; this CPU has no AVX512-BF16/AMX: bf16 is emulated and usually slower than fp32)"


def prepare_decoders(model: Any, choice: DeviceChoice) -> int:
    """Cast the weights of every diffusion UNet in ``model`` to the autocast dtype, once.

    GroupNorm stays float32 (as ``GroupNorm32`` computes); the other layers run in the autocast dtype
    anyway, so under ``choice.autocast()`` only the per-call weight casts go (the outputs stay within
    bf16 rounding of the per-call cast). Nothing happens for fp32. Returns the number of UNets cast."""
    dtype = choice.autocast_dtype
    if dtype is None:
        return 0
    from ..tokenizers.divae import DiVAE
    from ..tokenizers.unet import GroupNorm32

    count = 0
    for module in model.modules():
        if isinstance(module, DiVAE):
            module.decoder.to(dtype)
            for norm in module.decoder.modules():
                if isinstance(norm, GroupNorm32):
                    norm.float()
            count += 1
    return count


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def select_device(requested: str = "auto", precision: str = "fp32") -> DeviceChoice:
    """The torch backend's device for the job's ``device``, with ``precision`` checked against it."""
    import torch

    cuda_ok = torch.cuda.is_available()
    if requested == "auto":
        requested = "cuda" if cuda_ok else "cpu"
    if requested.startswith("cuda"):
        if not cuda_ok:
            raise ConfigError(
                f"'{requested}' was requested but CUDA is not available in this Python (torch {torch.__version__}); "
                "choose device 'cpu' or 'auto', or install a CUDA build of torch", field="device"
            )  # fmt: skip
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if not 0 <= index < torch.cuda.device_count():
            raise ConfigError(f"'{requested}' does not exist; this machine has {torch.cuda.device_count()} CUDA "
                              "device(s)", field="device")  # fmt: skip
        device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(index)
        if precision == "bf16" and props.major < 8:  # bf16 needs Ampere (8.0) or newer; asked of *this* GPU
            raise ConfigError(f"'bf16' is not supported by {props.name}; choose 'fp16' or 'fp32'", field="precision")
        facts = {"device": str(device), "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}"}  # fmt: skip
        text, precision_text = f"{device} ({props.name}, {facts['memory_gb']} GB)", precision
    elif requested == "cpu":
        if precision == "fp16":
            raise ConfigError("'fp16' needs a CUDA GPU; on the CPU choose 'bf16' or 'fp32'", field="precision")
        threads = configure_threads()
        device = torch.device("cpu")
        support = cpu_bf16_support()
        facts = {"device": "cpu", "threads": threads, "bf16_native": support}
        text, precision_text = f"cpu ({_plural(threads, 'thread')})", cpu_precision_text(precision, support)
    else:
        raise ConfigError(f"must be {DEVICES_HELP}, got '{requested}'", field="device")
    facts.update(precision=precision, backend="torch")
    return DeviceChoice(device, precision, f"device {text}, precision {precision_text}", facts)


def select_onnx_device(requested: str = "auto", precision: str = "fp32") -> DeviceChoice:
    """The ONNX backend's device (``'cpu'`` or ``'cuda:N'``); needs onnxruntime, never torch."""
    from ..backends.onnx_session import CUDA, import_onnxruntime, resolve_providers

    if precision != "fp32":
        raise ConfigError(f"the ONNX backend runs float32 graphs; it must be 'fp32', got '{precision}'",
                          field="precision")  # fmt: skip
    providers = resolve_providers(requested)
    version = import_onnxruntime().__version__
    if providers[0][0] == CUDA:
        device = f"cuda:{providers[0][1]['device_id']}"
        text = f"onnxruntime {version} {CUDA} ({device})"
        facts: dict[str, Any] = {"device": device, "provider": CUDA}
    else:
        threads = cpu_threads()
        device = "cpu"
        text = f"onnxruntime {version} CPUExecutionProvider ({_plural(threads, 'thread')})"
        facts = {"device": "cpu", "provider": "CPUExecutionProvider", "threads": threads}
    facts.update(precision="fp32", backend="onnx", onnxruntime=version)
    return DeviceChoice(device, "fp32", f"backend {text}, precision fp32", facts)


def is_out_of_memory(error: BaseException) -> bool:
    """True for accelerator out-of-memory errors (torch's CUDA OOM, ONNX Runtime's failed allocations)."""
    if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    text = str(error).lower()
    return isinstance(error, (RuntimeError, MemoryError)) and ("out of memory" in text or "failed to allocate" in text)


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")  # only a torch run has a cache to empty
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomBackoff:
    """Runs a batched function in chunks, halving the chunk on out-of-memory errors."""

    def __init__(self, batch_size: int, progress: Progress) -> None:
        self.batch_size = batch_size
        self.progress = progress

    def run(self, count: int, fn: Callable[[int, int], Any]) -> list[Any]:
        """Call ``fn(start, stop)`` over ``range(count)`` in chunks; returns the chunks' results."""
        results, start = [], 0
        while start < count:
            stop = min(count, start + self.batch_size)
            try:
                results.append(fn(start, stop))
                start = stop
            except Exception as e:  # noqa: BLE001 - only OOM is handled; the rest is re-raised
                if not is_out_of_memory(e):
                    raise
                _free_accelerator_memory()
                if self.batch_size == 1:
                    raise ConfigError(
                        "out of GPU memory even with batch size 1; use a smaller tile size, precision "
                        "bf16/fp16, or device 'cpu'"
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                self.progress.warn(f"out of GPU memory: continuing with batch size {self.batch_size}")
        return results
