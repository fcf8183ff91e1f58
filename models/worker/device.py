"""Device, precision, CPU threads and CUDA out-of-memory back-off: chosen in one place.

- ``auto`` → CUDA (device 0) if available, else the CPU; ``cuda`` / ``cuda:N`` must exist.
- Precision: ``fp32`` (default, the reference's numbers), or ``bf16`` / ``fp16`` through
  ``torch.autocast`` (the models keep their fp32 islands: GroupNorm, the tokenizer post-MLP and
  the DDIM scheduler). bf16 runs on CPUs and on GPUs that support it; fp16 only on CUDA.
- CPU threads: ``OMP_NUM_THREADS`` / ``TERRAMIND_NUM_THREADS`` if set, else every CPU this
  process may run on (``sched_getaffinity``).
- ``OomBackoff``: a CUDA OOM halves the model batch, says so once per change in a warning, and
  retries; at batch 1 it raises ``ConfigError`` saying what to change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.progress import Progress


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how the model runs."""

    device: Any  # torch.device
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
        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield


def configure_threads() -> int:
    """Set torch's CPU thread count (see module docstring) and return it."""
    import torch

    wanted = os.environ.get("TERRAMIND_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        n = int(wanted) if wanted else len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):
        n = os.cpu_count() or 1
    n = max(1, n)
    torch.set_num_threads(n)
    return n


def select_device(requested: str = "auto", precision: str = "fp32") -> DeviceChoice:
    """Resolve the job's ``device`` and check ``precision`` against it."""
    import torch

    cuda_ok = torch.cuda.is_available()
    if requested == "auto":
        requested = "cuda" if cuda_ok else "cpu"
    if requested.startswith("cuda"):
        if not cuda_ok:
            raise ConfigError(
                f"device '{requested}' was requested but CUDA is not available in this Python "
                f"(torch {torch.__version__}); choose device 'cpu' or 'auto', or install a CUDA build of torch"
            )
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if not 0 <= index < torch.cuda.device_count():
            raise ConfigError(
                f"device '{requested}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(index)
        if precision == "bf16" and props.major < 8:  # bf16 needs Ampere (8.0) or newer; asked of *this* GPU
            raise ConfigError(f"precision 'bf16' is not supported by {props.name}; choose 'fp16' or 'fp32'")
        facts = {"device": str(device), "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}"}  # fmt: skip
        text = f"{device} ({props.name}, {facts['memory_gb']} GB)"
    elif requested == "cpu":
        if precision == "fp16":
            raise ConfigError("precision 'fp16' needs a CUDA GPU; on the CPU choose 'bf16' or 'fp32'")
        threads = configure_threads()
        device = torch.device("cpu")
        facts = {"device": "cpu", "threads": threads}
        text = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    else:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{requested}'")
    facts["precision"] = precision
    return DeviceChoice(device, precision, f"device {text}, precision {precision}", facts)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA (and other accelerator) out-of-memory errors."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class OomBackoff:
    """Runs a batched function in chunks, halving the chunk on out-of-memory errors."""

    def __init__(self, batch_size: int, progress: Progress) -> None:
        self.batch_size = batch_size
        self.progress = progress

    def run(self, count: int, fn: Callable[[int, int], Any]) -> list[Any]:
        """Call ``fn(start, stop)`` over ``range(count)`` in chunks; returns the chunks' results."""
        import torch

        results, start = [], 0
        while start < count:
            stop = min(count, start + self.batch_size)
            try:
                results.append(fn(start, stop))
                start = stop
            except Exception as e:  # noqa: BLE001 - only OOM is handled; the rest is re-raised
                if not is_out_of_memory(e):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise ConfigError(
                        "out of GPU memory even with batch size 1; use a smaller tile size, precision "
                        "bf16/fp16, or device 'cpu'"
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                self.progress.warn(f"out of GPU memory: continuing with batch size {self.batch_size}")
        return results
