"""Rules for the files a run writes, written once: the worker enforces them, QGIS checks them early.

- ``check_output_path``: a file name with the right extension, not a folder.
- ``check_outputs_apart``: no output is, or is a hard link of, an input file (real paths and
  device/inode compared); no two outputs share a file; every output's folder exists and is writable.

Errors are ``ConfigError`` with ``field`` = the output's job key (the caller's names go in front,
``errors.where``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

from .errors import ConfigError

GEOTIFF_SUFFIXES = (".tif", ".tiff")


def check_output_path(field: str, path: str, suffixes: tuple[str, ...] = GEOTIFF_SUFFIXES) -> str:
    """``path`` checked to be a file name ending in one of ``suffixes``; returned unchanged."""
    if not isinstance(path, str) or not path:
        raise ConfigError("needs a file path", field=field)
    if os.path.isdir(path):
        raise ConfigError(f"'{path}' is a folder; give a file name", field=field)
    if not path.lower().endswith(suffixes):
        kind = "a GeoTIFF file name ending in .tif" if suffixes == GEOTIFF_SUFFIXES else f"a file name ending in {suffixes[0]}"
        raise ConfigError(f"'{path}' must be {kind}", field=field)
    return path


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs_apart(
    inputs: Mapping[str, str], outputs: Mapping[str, str], names: Mapping[str, str] | None = None,
    *, check_folders: bool = True,
) -> None:
    """``inputs``: a label of each input (``"layer 'x'"``) -> its file; ``outputs``: job key -> file.

    ``names`` gives the caller's name of an output key for the messages (default: the key);
    ``check_folders`` False skips the folder checks (the QGIS side makes missing folders itself).
    """
    by_real = {os.path.realpath(p): label for label, p in inputs.items() if p}
    by_inode = {ident: label for label, p in inputs.items() if p and (ident := _identity(p))}
    seen: dict[str, str] = {}
    for key, path in outputs.items():
        if not path:
            continue
        real = os.path.realpath(path)
        source = by_real.get(real) or by_inode.get(_identity(path) or (-1, -1))
        if source is not None:
            raise ConfigError(f"'{path}' is the file of input {source}; writing there would destroy the input: "
                              "choose another file name", field=key)  # fmt: skip
        if real in seen:
            other = (names or {}).get(seen[real], seen[real])
            raise ConfigError(f"'{path}' is also the file of {other}; give each output its own file name", field=key)
        seen[real] = key
        if not check_folders:
            continue
        check_writable_folder(os.path.dirname(real), key)


def check_writable_folder(folder: str, field: str) -> None:
    """``folder`` exists and a file can be created in it, else one ``ConfigError`` naming ``field``."""
    if not os.path.isdir(folder):
        raise ConfigError(f"the folder '{folder}' does not exist; choose an existing folder", field=field)
    problem = _cannot_write(folder)
    if problem:
        raise ConfigError(f"cannot write in the folder '{folder}' ({problem}); choose a folder you can write to",
                          field=field)  # fmt: skip


def _cannot_write(folder: str) -> str | None:
    """Why no file can be created in ``folder`` (None: it can): a real probe file, since permissions,
    ACLs and read-only mounts all decide it."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".terramind-write-check-", dir=folder)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    os.remove(probe)
    return None
