"""The model card inside an exported ``.onnx`` file, and a reader for it (torch-free, numpy-free).

Every graph this plugin exports carries its card as JSON in the ONNX ``metadata_props`` under the
key ``CARD_KEY`` (Deepness keeps its model description there too), so a ``.onnx`` file describes
itself: what it computes, its inputs (names, bands, statistics), classes, tile size, opset, plugin
version and the checkpoint it came from (with its SHA-256). Common fields of every card::

    {"format": "terramind_qgis.onnx", "format_version": 1,
     "graph": "segmentation" | "tokenizer_encoder" | "divae_denoiser" | "vqvae_decoder",
     "model_id": "...", "title": "...",
     "inputs": [{"name": "S2L1C", "shape": [-1, 13, 224, 224], "dtype": "float32", ...}],
     "outputs": [{"name": "logits", "shape": [-1, 2, 224, 224], "dtype": "float32"}],
     "opset": 17, "plugin_version": "...", "torch_version": "...", "exported_at": "...Z",
     "source": {"checkpoint": "...", "sha256": "<hex>" | null, ...}}

``-1`` marks the dynamic batch axis. The graph-specific fields are listed in onnx_export.py.

``read_onnx_metadata`` reads ``metadata_props`` by walking the top level of the ONNX protobuf
(``ModelProto``) and seeking over the graph, so describing a model needs neither the ``onnx``
package nor onnxruntime and costs milliseconds whatever the model's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import CheckpointError

CARD_KEY = "terramind_qgis.card"
CARD_FORMAT = "terramind_qgis.onnx"
CARD_VERSION = 1
SEGMENTATION = "segmentation"
TOKENIZER_ENCODER = "tokenizer_encoder"
DIVAE_DENOISER = "divae_denoiser"
VQVAE_DECODER = "vqvae_decoder"
GRAPHS = (SEGMENTATION, TOKENIZER_ENCODER, DIVAE_DENOISER, VQVAE_DECODER)

_MODEL_GRAPH_FIELD = 7  # ModelProto.graph
_MODEL_METADATA_FIELD = 14  # ModelProto.metadata_props (StringStringEntryProto: key = 1, value = 2)
_MAX_METADATA_BYTES = 64 << 20

PathLike = str | os.PathLike[str]


def plugin_version() -> str:
    """``version=`` of the plugin's metadata.txt ('unknown' when absent)."""
    try:
        text = (Path(__file__).resolve().parents[2] / "metadata.txt").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.strip().lower().startswith("version="):
            return line.split("=", 1)[1].strip()
    return "unknown"


# ----------------------------------------------------------------------------- protobuf reading


def _varint(f: BinaryIO) -> int | None:
    """One protobuf varint, or None at a clean end of file."""
    value, shift = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _string_entry(data: bytes) -> tuple[str, str]:
    """Decode a ``StringStringEntryProto`` (field 1 key, field 2 value)."""
    import io

    out = {1: "", 2: ""}
    f = io.BytesIO(data)
    while (tag := _varint(f)) is not None:
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError(f"metadata entry field {field} has wire type {wire}")
        length = _varint(f)
        value = f.read(length or 0)
        if length is None or len(value) != length:
            raise ValueError("truncated metadata entry")
        if field in out:
            out[field] = value.decode("utf-8")
    return out[1], out[2]


def read_onnx_metadata(path: PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file as a dict; ``CheckpointError`` if not ONNX."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            entries, has_graph = _read_top_level(f, size)
    except OSError as e:
        raise CheckpointError(f"cannot read the ONNX file '{path}': {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{path}' is not an ONNX model file (or it is truncated): {e}") from None
    if not has_graph:
        raise CheckpointError(f"'{path}' is not an ONNX model file: it holds no graph")
    return dict(entries)


def _read_top_level(f: BinaryIO, size: int) -> tuple[list[tuple[str, str]], bool]:
    entries, has_graph = [], False
    while (tag := _varint(f)) is not None:
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            if _varint(f) is None:
                raise ValueError("truncated varint")
        elif wire == 1 or wire == 5:
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == 2:
            length = _varint(f)
            if length is None or f.tell() + length > size:
                raise ValueError(f"field {field} runs past the end of the file")
            if field == _MODEL_METADATA_FIELD:
                if length > _MAX_METADATA_BYTES:
                    raise ValueError("metadata entry too large")
                entries.append(_string_entry(f.read(length)))
            else:
                has_graph = has_graph or field == _MODEL_GRAPH_FIELD
                f.seek(length, os.SEEK_CUR)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} (field {field})")
        if f.tell() > size:
            raise ValueError("truncated file")
    return entries, has_graph


# ----------------------------------------------------------------------------- cards


def card_from_metadata(metadata: Mapping[str, str], path: PathLike, graphs: Sequence[str] | None = None) -> dict[str, Any]:
    """The card in ``metadata`` (an ONNX file's ``metadata_props``), checked; ``CheckpointError`` if absent or wrong.

    ``graphs``: the graph kinds the caller can run (e.g. ``("segmentation",)``).
    """
    name = Path(path).name
    text = metadata.get(CARD_KEY)
    if text is None:
        raise CheckpointError(
            f"'{name}' is an ONNX file without a TerraMind model card (metadata key '{CARD_KEY}'); "
            "export models with: python -m terramind_qgis.models.backends.onnx_export"
        )
    try:
        card = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"the model card in '{name}' is not valid JSON: {e}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"the model card in '{name}' is not a '{CARD_FORMAT}' card")
    if card.get("format_version") != CARD_VERSION:
        raise CheckpointError(
            f"the model card in '{name}' has format_version {card.get('format_version')!r}; this plugin reads "
            f"{CARD_VERSION} (re-export the model with this plugin version)"
        )
    graph = card.get("graph")
    if graph not in GRAPHS:
        raise CheckpointError(f"the model card in '{name}' names an unknown graph kind {graph!r}")
    if graphs is not None and graph not in graphs:
        raise CheckpointError(f"'{name}' is a '{graph}' graph; expected {' or '.join(repr(g) for g in graphs)}")
    for key in ("model_id", "inputs", "outputs"):
        if key not in card:
            raise CheckpointError(f"the model card in '{name}' lacks '{key}'")
    return card


def read_card(path: PathLike, graphs: Sequence[str] | None = None) -> dict[str, Any]:
    """The checked card of an exported ``.onnx`` file (no onnx/onnxruntime needed)."""
    return card_from_metadata(read_onnx_metadata(path), path, graphs)


def io_entry(name: str, shape: Sequence[int], dtype: str = "float32", **extra: Any) -> dict[str, Any]:
    """One ``inputs``/``outputs`` entry of a card (``-1`` = dynamic batch)."""
    return {"name": name, "shape": [int(s) for s in shape], "dtype": dtype, **extra}
