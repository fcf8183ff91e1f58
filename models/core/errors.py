"""One typed error hierarchy for the whole plugin (torch-free, QGIS-free).

The QGIS side turns a ``TerraMindError`` into one ``QgsProcessingException`` at a single boundary;
the worker sends it as an ``error`` event with its class name. Messages name the layer, band,
parameter or checkpoint key at fault and say what is expected.
"""

from __future__ import annotations


class TerraMindError(Exception):
    """Base class of every error the plugin raises on purpose."""

    field: str | None = None  # the job field at fault, where a rule knows it (ConfigError)


class ConfigError(TerraMindError, ValueError):
    """A parameter, request or configuration value is invalid.

    ``field`` names the job field at fault when the rule knows it (``"outputs"``, ``"top_p"``,
    ``"inputs.S1GRD"``, ``"tiling.tile_size"``, ``"model"``): each side puts its own name for that
    field in front of the one message (``where``): the worker the job field, QGIS its parameter key.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keep ``field`` through pickling (multiprocessing, Dask)
        return (_config_error, (str(self), self.field))


def _config_error(message: str, field: str | None) -> ConfigError:
    return ConfigError(message, field=field)


def where(error: BaseException, names: dict[str, str] | None = None) -> str:
    """The one-line message of ``error``, led by the name of its field (``names`` maps a job field
    to the caller's name for it; unmapped fields keep the job's name)."""
    message = str(error) or type(error).__name__
    field = error.field if isinstance(error, TerraMindError) else None
    if not field:
        return message
    return f"{(names or {}).get(field, field)}: {message}"


class InputRasterError(TerraMindError, ValueError):
    """An input raster has the wrong band count, data type, CRS, extent or nodata."""


class RasterReadError(InputRasterError):
    """Reading a window of an input failed (a truncated or damaged file, a missing source of a VRT)."""


class UnsupportedModalityError(TerraMindError, ValueError):
    """A modality name is unknown or cannot be used in the requested role."""


class ModelNotFoundError(TerraMindError, KeyError):
    """A model id is not in the catalogue."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CheckpointError(TerraMindError):
    """A checkpoint file is unreadable, truncated, of another model, or does not match."""


class DownloadError(TerraMindError, OSError):
    """Weights could not be fetched (offline cache miss, network, permission)."""


class BackendUnavailableError(TerraMindError, ImportError):
    """A runtime dependency (torch, onnxruntime, rasterio) is missing in the worker environment."""


class WorkerError(TerraMindError):
    """The worker process failed or could not be started."""


class CancelledError(TerraMindError):
    """The user cancelled the run."""


ERROR_TYPES: dict[str, type[TerraMindError]] = {
    cls.__name__: cls
    for cls in (
        TerraMindError,
        ConfigError,
        InputRasterError,
        UnsupportedModalityError,
        ModelNotFoundError,
        CheckpointError,
        DownloadError,
        BackendUnavailableError,
        WorkerError,
        CancelledError,
    )
}
