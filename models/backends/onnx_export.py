"""Export TerraMind models to self-describing ``.onnx`` files (needs torch and the ``onnx`` package).

- ``export_segmentation(model, path, tile_size=224)``: a fine-tuned segmentation model
  (models/segmentation ``SegmentationModel``) → one graph: standardised inputs, one per config
  input and named like it, ``(B, C, H, W)`` → ``logits (B, K, H, W)``. NaN replacement and
  standardisation stay outside (the ONNX runtime does them in numpy from the card). TiM models
  sample tokens at random and are refused (``ConfigError``).
- ``export_tokenizer(tokenizer, folder, image_size=224)``: a tokenizer → two graphs,
  ``<id>.encoder.onnx`` (``image (B, C, H, W)`` standardized, LULC one-hot → ``latents``,
  ``quant (B, L, h, w)``, ``tokens (B, h, w)`` int32) and ``<id>.decoder.onnx``: the DiVAE
  denoiser (``sample (B, C, H, W)``, ``timestep (1,)`` int64, ``quant`` → ``x0``) or the LULC
  decoder (``quant`` → ``logits (B, K, H, W)``); ``file_names`` chooses other names.

Graphs have a dynamic batch axis and a fixed image size: the models compute paddings, positional
table resizing and patch grids from the size in Python, which tracing freezes, so one export serves
one tile size (the card says which; the runtime refuses others with a clear message). A graph is
serialised in memory as one protobuf, so models over 2 GB (none of TerraMind v1's) cannot be
exported. Models may sit on any device; the export check runs ONNX Runtime on the CPU.
The TorchScript exporter is used (``dynamo=False``: the dynamo exporter fails on
``scaled_dot_product_attention`` here), opset 17 by default.

Card fields besides the common ones (onnx_card.py): segmentation: ``config``
(``SegmentationConfig.to_dict()``), ``modalities``, ``classes``, ``num_classes``,
``no_data_replace``, ``tile_size [H, W]``, each input's ``modality``/``bands``/``mean``/``std``;
tokenizers: ``spec`` (the catalogue card), ``kind``, ``modality``, ``bands``, ``mean``/``std``
(v1 statistics), ``classes`` (LULC), ``in_channels``, ``patch_size``, ``levels``, ``vocab_size``,
``image_size``, ``token_grid``, ``companion`` (the other graph's file name) and, on the DiVAE
denoiser, ``alphas_cumprod`` (the DDIM table) and ``num_train_timesteps``. Every card has
``export_check``: the maximum relative deviation ``max|ort - torch| / max|torch|`` measured at
export on seeded standard-normal inputs (batch 2) with ONNX Runtime on the CPU.

Command line (worker environment)::

    python -m <plugin>.models.backends.onnx_export segmentation MODEL_FILE [--config YAML] --out FILE.onnx
        [--tile-size 224] [--id NAME] [--classes TEXT] [--opset 17]
    python -m <plugin>.models.backends.onnx_export tokenizer MODEL_ID --out FOLDER [--weights PATH]
        [--untrained] [--catalogue FOLDER] [--image-size 224] [--opset 17]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import BackendUnavailableError, ConfigError, TerraMindError
from ..core.job import ModelRequest
from ..core.progress import NullProgress, Progress
from .onnx_card import (
    CARD_FORMAT,
    CARD_KEY,
    CARD_VERSION,
    DIVAE_DENOISER,
    SEGMENTATION,
    TOKENIZER_ENCODER,
    VQVAE_DECODER,
    PathLike,
    io_entry,
    plugin_version,
)  # fmt: skip
from .onnx_graphs import (
    DENOISER_INPUTS,
    ENCODER_OUTPUTS,
    DenoiserGraph,
    SegmentationGraph,
    TokenizerEncoderGraph,
    VQVAEDecoderGraph,
    exportable_pooling,
)  # fmt: skip

DEFAULT_OPSET = 17
EXPORT_BATCH = 2  # traced batch size (not 1, so that nothing specialises on a singleton batch)
CHECK_SEED = 0


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailableError(
            "exporting to ONNX needs the 'onnx' package in the worker's Python: pip install onnx"
        ) from None
    return onnx


def _size(value: int | Sequence[int], what: str, multiple: int) -> tuple[int, int]:
    values = [value] if isinstance(value, int) else [int(v) for v in value]
    if len(values) not in (1, 2):
        raise ConfigError(f"{what} must be one number (square) or two (height, width); got {value}")
    h, w = values[0], values[-1]
    if h < multiple or w < multiple or h % multiple or w % multiple:
        rule = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise ConfigError(f"{what} must be {rule}; got {h}x{w}")
    return h, w


def _sha256(path: str | None) -> str | None:
    if path and Path(path).is_file():
        from ..segmentation.checkpoint import file_sha256

        return file_sha256(path)
    return None


def _common_card(graph: str, model_id: str, title: str, inputs: list, outputs: list, opset: int) -> dict[str, Any]:
    return {
        "format": CARD_FORMAT, "format_version": CARD_VERSION, "graph": graph, "model_id": model_id, "title": title,
        "inputs": inputs, "outputs": outputs, "opset": opset, "plugin_version": plugin_version(),
        "torch_version": torch.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # fmt: skip


def _trace(graph: nn.Module, args: tuple, input_names: list[str], output_names: list[str], opset: int) -> bytes:
    """The TorchScript-exported ONNX bytes of ``graph`` with a dynamic batch axis on every input and output."""
    batch_axes = {n: {0: "batch"} for n in [*input_names, *output_names] if n != "timestep"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), exportable_pooling(graph):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*dynamo.*")
        torch.onnx.export(graph.eval(), args, buffer, input_names=input_names, output_names=output_names,
                          dynamic_axes=batch_axes, opset_version=opset, do_constant_folding=True, dynamo=False)  # fmt: skip
    return buffer.getvalue()


def _check_against_torch(graph: nn.Module, args: tuple, onnx_bytes: bytes, names: list[str]) -> dict[str, float]:
    """``max|ort - torch| / max|torch|`` per float output, ONNX Runtime on the CPU (``onnx_session``)."""
    from .onnx_session import import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.cpu().numpy() for i, a in zip(session.get_inputs(), args)}
    ours = session.run(None, feeds)
    with torch.no_grad():
        ref = graph(*args)
    ref = [ref] if torch.is_tensor(ref) else list(ref)
    out = {}
    for name, o, r in zip(names, ours, ref):
        r = r.cpu().numpy()
        if np.issubdtype(r.dtype, np.floating):
            out[name] = float(np.abs(o.astype(np.float64) - r).max() / max(float(np.abs(r).max()), 1e-30))
        else:
            out[f"{name}_mismatch_fraction"] = float((o != r).mean())
    return out


def _write(onnx_bytes: bytes, card: dict[str, Any], path: Path) -> Path:
    """Check the model, embed ``card`` in its metadata and write it atomically.

    The card (with ``producer_*`` and ``doc_string``) is serialised as a ModelProto of those fields
    alone and appended to the exporter's bytes: protobuf parsing merges concatenated messages
    (repeated fields extend, later scalars win), so the graph is never parsed or copied in Python —
    which matters for the 1 GB tokenizer graphs."""
    onnx = _import_onnx()
    onnx.checker.check_model(onnx_bytes)
    extra = onnx.ModelProto()
    extra.producer_name, extra.producer_version = "terramind_qgis", str(card["plugin_version"])
    extra.doc_string = f"{card['title']} ({card['graph']}); model card in metadata_props['{CARD_KEY}']"
    entry = extra.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            f.write(onnx_bytes)
            f.write(extra.SerializeToString())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _example(shape: Sequence[int], seed: int, device: torch.device) -> torch.Tensor:
    """Seeded standard-normal example input (drawn on the CPU, then moved to the model's device)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).to(device)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def export_segmentation(
    model: nn.Module,
    path: PathLike,
    *,
    tile_size: int | Sequence[int] = 224,
    model_id: str | None = None,
    title: str = "",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` (a ``SegmentationModel``) as one ONNX graph with its card; returns the path."""
    if getattr(model, "is_stochastic", False):
        raise ConfigError(
            f"'{model.config.backbone}' is a TiM model: it samples tokens at random on every run, which a "
            "deterministic ONNX graph cannot reproduce; export a model without TiM, or run it with the torch backend"
        )
    h, w = _size(tile_size, "the tile size (height and width)", 1)
    cfg, names = model.config, list(model.input_names)
    graph = SegmentationGraph(model.net, names)
    device = _device(model.net)
    # a multi-temporal graph serves the dates the model was trained with: (B, C, T, H, W)
    dates = [(cfg.temporal.trained_dates or 1)] if cfg.temporal is not None else []
    shapes = [[len(s.bands), *dates, h, w] for s in cfg.inputs]
    args = tuple(_example((EXPORT_BATCH, *shape), CHECK_SEED + i, device) for i, shape in enumerate(shapes))
    onnx_bytes = _trace(graph, args, names, ["logits"], opset)
    model_id = model_id or model.provenance.model_id
    inputs = [io_entry(s.name, [-1, *shape], modality=s.modality, bands=list(s.bands), mean=list(s.mean),
                       std=list(s.std)) for s, shape in zip(cfg.inputs, shapes)]  # fmt: skip
    card = _common_card(SEGMENTATION, model_id, title or model_id, inputs,
                        [io_entry("logits", [-1, cfg.num_classes, h, w])], opset)  # fmt: skip
    card.update(
        modalities=[s.modality for s in cfg.inputs], tile_size=[h, w], num_classes=cfg.num_classes,
        dates=dates[0] if dates else None,
        no_data_replace=cfg.no_data_replace, classes=[asdict(c) for c in model.classes], config=cfg.to_dict(),
        source={"checkpoint": model.provenance.checkpoint, "config": model.provenance.config,
                "format": model.provenance.format, "sha256": _sha256(model.provenance.checkpoint)},
        export_check=_check_against_torch(graph, args, onnx_bytes, ["logits"]),
    )  # fmt: skip
    return _write(onnx_bytes, card, Path(path))


def export_tokenizer(
    tokenizer: nn.Module,
    folder: PathLike,
    *,
    image_size: int | Sequence[int] = 224,
    model_id: str | None = None,
    source_file: PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    file_names: tuple[str, str] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, Path]:
    """Write ``<id>.encoder.onnx`` and ``<id>.decoder.onnx`` for a loaded tokenizer; returns both paths.

    ``source_file``: the weights file it was loaded from (its SHA-256 goes into the card);
    defaults to ``tokenizer.weights_source['model']`` when that is a local file.
    ``file_names``: (encoder, decoder) file names in ``folder`` instead of the default ones (each
    card names the other file). ``progress`` hears which graph is being exported (0-50-100 %).
    """
    progress = progress or NullProgress()
    from ..core import catalogue
    from ..core.modalities import get_modality

    model_id = model_id or str(tokenizer.model_id)
    spec = catalogue.get(str(tokenizer.model_id))
    kind, cfg = spec.config.kind, spec.config  # type: ignore[union-attr]
    h, w = _size(image_size, "the image size (height and width)", 32 if kind == "divae" else cfg.patch_size)
    grid = (h // cfg.patch_size, w // cfg.patch_size)
    c, latent = cfg.in_channels, cfg.latent_dim
    modality = get_modality(str(spec.modality))
    source = str(source_file) if source_file else str((getattr(tokenizer, "weights_source", None) or {}).get("model", ""))
    encoder_name, decoder_name = file_names or (f"{model_id}.encoder.onnx", f"{model_id}.decoder.onnx")
    if encoder_name == decoder_name or Path(encoder_name).name != encoder_name or Path(decoder_name).name != decoder_name:
        raise ConfigError(f"the encoder and decoder need two different file names in one folder, got {file_names}")
    files = {"encoder": encoder_name, "decoder": decoder_name}
    base = _common_card(TOKENIZER_ENCODER, model_id, spec.title, [], [], opset)
    base.update(
        spec=spec.to_dict(), kind=kind, modality=modality.name, bands=list(modality.bands),
        mean=list(modality.mean) if not modality.categorical else None,
        std=list(modality.std) if not modality.categorical else None,
        classes=[asdict(k) for k in modality.classes], in_channels=c, patch_size=cfg.patch_size,
        levels=list(cfg.levels), vocab_size=cfg.vocab_size, image_size=[h, w], token_grid=list(grid),
        source={"checkpoint": source or None, "sha256": _sha256(source)},
    )  # fmt: skip

    progress.info(f"exporting the encoder graph of '{model_id}' ({files['encoder']})")
    encoder = TokenizerEncoderGraph(tokenizer)
    device = _device(tokenizer)
    x = _example((EXPORT_BATCH, c, h, w), CHECK_SEED, device)
    enc_bytes = _trace(encoder, (x,), ["image"], list(ENCODER_OUTPUTS), opset)
    out = Path(folder)
    enc_card = {**base, "companion": files["decoder"],
                "inputs": [io_entry("image", [-1, c, h, w])],
                "outputs": [io_entry("latents", [-1, latent, *grid]), io_entry("quant", [-1, latent, *grid]),
                            io_entry("tokens", [-1, *grid], "int32")],
                "export_check": _check_against_torch(encoder, (x,), enc_bytes, list(ENCODER_OUTPUTS))}  # fmt: skip
    enc_path = _write(enc_bytes, enc_card, out / files["encoder"])
    del enc_bytes  # one graph in memory at a time
    progress.set_progress(50.0)
    progress.info(f"exporting the decoder graph of '{model_id}' ({files['decoder']})")

    with torch.no_grad():
        quant = encoder(x)[1]  # (B, L, h, w)
    if kind == "divae":
        decoder: nn.Module = DenoiserGraph(tokenizer)
        timestep = torch.tensor([999], dtype=torch.long, device=device)
        args: tuple = (_example((EXPORT_BATCH, c, h, w), CHECK_SEED + 1, device), timestep, quant)
        names, outputs = list(DENOISER_INPUTS), [io_entry("x0", [-1, c, h, w])]
        inputs = [io_entry("sample", [-1, c, h, w]), io_entry("timestep", [1], "int64"),
                  io_entry("quant", [-1, latent, *grid])]  # fmt: skip
        extra = {"graph": DIVAE_DENOISER, "num_train_timesteps": cfg.num_train_timesteps,
                 "alphas_cumprod": [float(v) for v in tokenizer.noise_scheduler.alphas_cumprod.tolist()]}  # fmt: skip
    else:
        decoder, args, names = VQVAEDecoderGraph(tokenizer), (quant,), ["quant"]
        inputs, outputs = [io_entry("quant", [-1, latent, *grid])], [io_entry("logits", [-1, c, h, w])]
        extra = {"graph": VQVAE_DECODER}
    out_name = [o["name"] for o in outputs]
    dec_bytes = _trace(decoder, args, names, out_name, opset)
    dec_card = {**base, **extra, "companion": files["encoder"], "inputs": inputs, "outputs": outputs,
                "export_check": _check_against_torch(decoder, args, dec_bytes, out_name)}  # fmt: skip
    dec_path = _write(dec_bytes, dec_card, out / files["decoder"])
    progress.set_progress(100.0)
    return enc_path, dec_path


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m terramind_qgis.models.backends.onnx_export",
                                description="Export TerraMind models to ONNX files that carry their model card.")  # fmt: skip
    sub = p.add_subparsers(dest="what", required=True)
    seg = sub.add_parser("segmentation", help="a fine-tuned segmentation model (not TiM)")
    seg.add_argument("model", help="Lightning .ckpt, state dict (.pt/.safetensors) or plugin model card (.json)")
    seg.add_argument("--config", help="the TerraTorch YAML the model was trained with")
    seg.add_argument("--out", required=True, help="the .onnx file to write")
    seg.add_argument("--tile-size", type=int, nargs="+", default=[224], help="H [W] the graph is made for (default 224)")
    seg.add_argument("--id", default=None, help="model id for the card (default: the file name stem)")
    seg.add_argument("--classes", default=None, help="'0: Others #D9D9D9; 1: Flood #1F77B4'")
    tok = sub.add_parser("tokenizer", help="a tokenizer: <id>.encoder.onnx + <id>.decoder.onnx")
    tok.add_argument("model_id", help="catalogue id, e.g. terramind_v1_tokenizer_s2l2a")
    tok.add_argument("--out", required=True, help="folder for the two graphs")
    tok.add_argument("--weights", default=None, help="weights file or folder (default: the catalogue's Hub source)")
    tok.add_argument("--untrained", action="store_true", help="deterministic untrained weights (testing only)")
    tok.add_argument("--catalogue", action="append", default=[], help="folder of extra JSON model cards")
    tok.add_argument("--image-size", type=int, nargs="+", default=[224], help="H [W] the graphs are made for")
    for q in (seg, tok):
        q.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; prints the written file(s), one per line. Exit 1 on a plugin error."""
    args = _parser().parse_args(argv)
    try:
        if args.what == "segmentation":
            from ..segmentation.checkpoint import load_segmentation_model

            model = load_segmentation_model(args.model, args.config, classes=args.classes)
            written = [export_segmentation(model, args.out, tile_size=args.tile_size, model_id=args.id, opset=args.opset)]
        else:
            from .. import build
            from ..core import catalogue
            from ..weights.hub import resolve_weights

            for folder in args.catalogue:
                catalogue.load_cards(folder)
            tok = build.load_tokenizer(ModelRequest(args.model_id, weights=args.weights, untrained=args.untrained))
            source = None if args.untrained else resolve_weights(catalogue.get(args.model_id), args.weights).path
            written = list(export_tokenizer(tok, args.out, image_size=args.image_size, source_file=source, opset=args.opset))
    except TerraMindError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stdout.write("".join(f"{p}\n" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
