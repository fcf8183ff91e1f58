"""What an embedding raster is: its token grid and the tag that makes it self-describing (torch-free).

An embedding raster (task ``embed``) has one pixel per 16 x 16 patch ("token") of the working grid:
the same CRS and origin, 16 times the pixel size, ``ceil(width / 16)`` x ``ceil(height / 16)``
pixels (the last row and column of tokens may reach past the working grid; see
models/engine/tokens.py). Its D bands are the encoder's features of that token.

The tag ``TERRAMIND_EMBEDDING`` (JSON, ``EmbeddingInfo.to_tag``) says how it was made: model id,
whether the weights were untrained, the input modalities in order, their band subsets, the merge
mode, the encoder layers averaged, the TiM modalities, D, the patch size, the token grid and the
input grid it coarsens. ``signature()`` is the part two embeddings must share to be compared
(similarity references, a classifier trained on other embeddings): ``require_same`` refuses any
difference with one message naming each field that differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .modalities import Modality

TAG = "TERRAMIND_EMBEDDING"
PCA_TAG = "TERRAMIND_EMBEDDING_PCA"
FORMAT_VERSION = 1
PATCH_SIZE = 16  # pixels per token side (TerraMind v1 patch embedding)
INPUT_KEY = "EMBEDDINGS"  # the job's input key of an embedding raster
SIGNATURE_FIELDS = ("model_id", "untrained", "modalities", "bands", "merge", "layers", "tim", "dim")
MAKE_ONE = "make one with 'Extract embeddings' (task embed)"


def token_count(pixels: int, patch: int = PATCH_SIZE) -> int:
    """Tokens along an axis of ``pixels`` working-grid pixels (a partial last patch counts)."""
    return -(-int(pixels) // patch)


@dataclass(frozen=True)
class EmbeddingInfo:
    """How an embedding raster was made (the ``TERRAMIND_EMBEDDING`` tag)."""

    model_id: str
    untrained: bool
    modalities: tuple[str, ...]
    bands: dict[str, tuple[str, ...]]  # band subset (band names) per modality; absent: all bands
    merge: str
    layers: tuple[int, ...]  # 1-based encoder blocks averaged
    tim: tuple[str, ...]
    dim: int
    token_grid: tuple[int, int]  # (width, height) tokens
    input_grid: tuple[int, int]  # (width, height) pixels of the working grid
    patch_size: int = PATCH_SIZE
    dtype: str = "float32"
    version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # informative only (tiling, ...)

    def signature(self) -> dict[str, Any]:
        """What must be equal for two embeddings to live in one feature space."""
        d = asdict(self)
        return {k: _plain(d[k]) for k in SIGNATURE_FIELDS}

    def to_tag(self) -> str:
        return json.dumps({k: _plain(v) for k, v in asdict(self).items()}, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str, field_name: str) -> EmbeddingInfo:
        try:
            return cls(
                model_id=str(d["model_id"]), untrained=bool(d["untrained"]),
                modalities=tuple(d["modalities"]), bands={k: tuple(v) for k, v in dict(d.get("bands") or {}).items()},
                merge=str(d["merge"]), layers=tuple(int(v) for v in d["layers"]), tim=tuple(d.get("tim") or ()),
                dim=int(d["dim"]), token_grid=(int(d["token_grid"][0]), int(d["token_grid"][1])),
                input_grid=(int(d["input_grid"][0]), int(d["input_grid"][1])),
                patch_size=int(d.get("patch_size", PATCH_SIZE)), dtype=str(d.get("dtype", "float32")),
                version=int(d.get("version", FORMAT_VERSION)), extra=dict(d.get("extra") or {}),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"{what} has a damaged {TAG} tag ({type(e).__name__}: {e}); {MAKE_ONE}",
                              field=field_name) from None  # fmt: skip

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], what: str, field_name: str) -> EmbeddingInfo:
        """The info of a raster's metadata ``tags`` (``what``: how messages name the raster)."""
        text = tags.get(TAG)
        if not text:
            hint = " (it is the PCA view of embeddings; give the embedding raster itself)" if PCA_TAG in tags else ""
            raise ConfigError(f"{what} is not a TerraMind embedding raster (it has no {TAG} tag){hint}; {MAKE_ONE}",
                              field=field_name)  # fmt: skip
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ConfigError(f"{what} has a damaged {TAG} tag (not a JSON object); {MAKE_ONE}", field=field_name)
        info = cls.from_dict(data, what, field_name)
        if info.version > FORMAT_VERSION:
            raise ConfigError(f"{what} was written by a newer plugin (embedding format {info.version}, this one reads "
                              f"{FORMAT_VERSION}); update the plugin", field=field_name)  # fmt: skip
        return info

    def describe(self) -> str:
        """One line for messages: model, inputs, bands, merge, layers, TiM, D."""
        bands = "".join(f", {m} bands {'/'.join(b)}" for m, b in self.bands.items())
        tim = f", TiM {'+'.join(self.tim)}" if self.tim else ""
        layers = ",".join(str(v) for v in self.layers)
        weights = " (untrained)" if self.untrained else ""
        return (f"model '{self.model_id}'{weights}, inputs {'+'.join(self.modalities)}{bands}, merge {self.merge}, "
                f"layer(s) {layers}{tim}, {self.dim} dimensions")  # fmt: skip


def require_same(expected: Mapping[str, Any], got: EmbeddingInfo, field: str, expected_what: str, got_what: str) -> None:
    """``got`` must have the ``expected`` signature; else one ConfigError naming every field that differs."""
    mine = got.signature()
    differ = [k for k in SIGNATURE_FIELDS if _plain(expected.get(k)) != mine[k]]
    if not differ:
        return
    parts = "; ".join(f"{k}: {_show(expected.get(k))} vs {_show(mine[k])}" for k in differ)
    raise ConfigError(f"{got_what} comes from another model or configuration than {expected_what} ({parts}); "
                      "make the embeddings the same way (model, inputs, bands, merge, layers, TiM) or "
                      f"start again from these embeddings", field=field)  # fmt: skip


def embedding_modality(bands: int) -> Modality:
    """A pseudo-modality for an embedding raster of ``bands`` bands, so the QGIS side checks and
    exports it like any input layer (the worker reads it by the job key ``EMBEDDINGS``)."""
    labels = tuple(f"E{i + 1}" for i in range(bands))
    return Modality(INPUT_KEY, "TerraMind embeddings", None, None, None, labels, labels,
                    (0.0,) * bands, (1.0,) * bands, "feature")  # fmt: skip


def band_names(dim: int) -> tuple[str, ...]:
    """Band descriptions of a D-band embedding raster: ``E1`` ... ``E<D>``."""
    width = len(str(dim))
    return tuple(f"E{i + 1:0{width}d}" for i in range(dim))


def _plain(value: Any) -> Any:
    """JSON-shaped value (tuples as lists, dict keys sorted) for comparing and writing."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {'/'.join(v)}" for k, v in value.items()) or "all"
    return repr(value)
