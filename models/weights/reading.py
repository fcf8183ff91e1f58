"""Safe, lazy reading of checkpoint files into a key → tensor mapping.

- ``.safetensors``: opened with ``safetensors.safe_open``; key names, shapes and dtypes come from
  the header, and each tensor is read only when it is asked for (so a strict key check costs no
  tensor I/O, and loading reads each tensor once).
- anything else (``.pt``, ``.pth``, ``.ckpt``, ``.bin``): ``torch.load(map_location="cpu",
  weights_only=True, mmap=True)`` — no pickled code runs, and the tensors stay memory-mapped from
  the file until they are used. Files in the old non-zip ``torch.save`` format cannot be mapped and
  are read with ``mmap=False``.

Containers: a plain ``{key: tensor}`` state dict is used as it is; a dict holding one under
``state_dict`` (Lightning), ``model``, ``model_state_dict`` or ``module`` is unwrapped (in that
order). Anything else, a truncated or corrupt file, or a file with pickled objects that
``weights_only`` refuses, is one ``CheckpointError`` naming the file (no traceback leaks through).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError

CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_ZIP_MAGIC = b"PK\x03\x04"


class Checkpoint(Mapping[str, torch.Tensor]):
    """A read-only state dict whose tensors may be read lazily; ``shape``/``dtype`` never read data.

    Subclasses set ``_names`` (the keys in file order: a dict, a list, or another checkpoint) and
    implement ``__getitem__``.
    """

    def __init__(self, path: Path, container: str | None = None) -> None:
        self.path = path
        self.container = container  # the key it was unwrapped from, if any
        self._names: Collection[str] = ()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self[key].dtype

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key with its shape (no tensor data is read for safetensors files)."""
        return {k: self.shape(k) for k in self}


class TensorDictCheckpoint(Checkpoint):
    """A checkpoint already in memory (or memory-mapped): ``torch.load`` results, generated fills."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], path: Path | None = None, container: str | None = None):
        super().__init__(path or Path("<in memory>"), container)
        self._tensors = self._names = dict(tensors)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]


class SafetensorsCheckpoint(Checkpoint):
    """A ``.safetensors`` file: header read at open, tensors read on access."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from safetensors import safe_open

        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            self._meta: dict[str, tuple[tuple[int, ...], str]] = {}  # key -> (shape, dtype name), file order
            for key in self._file.keys():
                sl = self._file.get_slice(key)
                self._meta[key] = (tuple(int(n) for n in sl.get_shape()), sl.get_dtype())
        except Exception as e:
            raise _corrupt(path, e) from None
        self._names = self._meta

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._meta:
            raise KeyError(key)
        try:
            return self._file.get_tensor(key)
        except Exception as e:
            raise _corrupt(self.path, e) from None

    def shape(self, key: str) -> tuple[int, ...]:
        return self._meta[key][0]

    def dtype(self, key: str) -> torch.dtype:
        return _SAFETENSORS_DTYPES.get(self._meta[key][1], torch.float32)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open ``path`` as a lazy state dict (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' does not exist or is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file '{path}' is empty (an interrupted download?)")
    if is_safetensors(path):
        return SafetensorsCheckpoint(path)
    tensors, container = _unwrap(load_torch_file(path), path)
    return TensorDictCheckpoint(tensors, path, container)


def is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` name, or a file that starts like one (whatever its name)."""
    return path.suffix == ".safetensors" or _looks_like_safetensors(path)


def load_torch_file(path: Path) -> Any:
    """``torch.load`` of ``path`` as safely as it goes: on the CPU, ``weights_only=True``, memory-mapped
    when the file is in the zip format; any failure is one ``CheckpointError`` naming the file."""
    with open(path, "rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as e:
        if type(e).__name__ == "UnpicklingError" and "weights_only" in str(e).lower():
            raise CheckpointError(
                f"checkpoint file '{path}' contains Python objects other than tensors, which are not "
                f"loaded for safety (torch.load weights_only=True); save a plain state dict "
                f"(torch.save(model.state_dict(), ...)) or a .safetensors file instead"
            ) from None
        raise _corrupt(path, e) from None


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside a loaded object, and the container key it was found under."""
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key]), key
        top = ", ".join(sorted(str(k) for k in obj)[:10])
        raise CheckpointError(
            f"checkpoint file '{path}' is not a state dict: its top-level keys are [{top}] and none of "
            f"{', '.join(CONTAINER_KEYS)} holds a mapping of names to tensors"
        )
    raise CheckpointError(f"checkpoint file '{path}' holds a {type(obj).__name__}, not a state dict of tensors")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _corrupt(path: Path, e: BaseException) -> CheckpointError:
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return CheckpointError(
        f"checkpoint file '{path}' is truncated or corrupt and cannot be read ({type(e).__name__}: {detail}); "
        f"download it again or check the path"
    )
