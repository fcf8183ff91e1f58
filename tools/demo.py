"""The TerraMind demo (``make demo``): the real pipeline on the bundled Sentinel-2 patch, and a picture.

Inside a headless QGIS it runs, through ``processing.run`` exactly as the toolbox does:

1. ``terramind:reconstructwithtokenizer`` on ``resources/sample/S2L2A_282D_485L_3_3.tif`` (the
   S2L2A tokenizer), with the difference raster;
2. ``terramind:generatemodalities`` from the same patch to Sentinel-1 GRD, DEM and land cover
   (TerraMind 1.0 ``--model-size``, default tiny);

writes the GeoTIFFs (with their ``.qml`` styles) to ``--out`` (default ``demo-output/``) and renders
``terramind_demo.png``: the input and every styled output side by side, with titles.

Weights: ``--weights DIR`` (or ``TERRAMIND_WEIGHTS_DIR``) names a folder with the official
checkpoint files (``TerraMind_v1_tiny.pt``, ``TerraMind_Tokenizer_S2L2A.pt``, ``..._S1GRD.pt``,
``..._DEM.pt``, ``..._LULC.pt``); otherwise they come from the Hugging Face cache or are
downloaded. When they cannot be had, the demo says so in one line and runs the same pipeline with
the same model sizes on deterministic UNTRAINED weights (``--untrained`` forces this): every file
it writes then has UNTRAINED in its name, in its layer titles and in its GeoTIFF tags.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample" / "S2L2A_282D_485L_3_3.tif"
GENERATED = ("S1GRD", "DEM", "LULC")  # generation order: each output sees the ones before it
LOG = logging.getLogger("terramind.demo")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--weights", default=os.environ.get("TERRAMIND_WEIGHTS_DIR"),
                   help="folder with the official checkpoint files (default: $TERRAMIND_WEIGHTS_DIR, else the Hub)")
    p.add_argument("--untrained", action="store_true", help="use deterministic untrained weights (testing only)")
    p.add_argument("--model-size", default="tiny", choices=("tiny", "small", "base", "large"))
    p.add_argument("--timesteps", type=int, default=10, help="DDIM steps of the diffusion decoders (default 10)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p.parse_args(argv)


def _start_qgis():
    sys.path.insert(0, str(REPO / ".pluginpath"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    from terramind_qgis.processing_algorithms.provider import TerraMindProvider

    provider = TerraMindProvider()
    app.processingRegistry().addProvider(provider)
    return app, provider


def _hub_reachable(timeout: float = 5.0) -> bool:
    """A quick TCP check of the Hub (skipped behind a proxy, where only a real request can tell)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _official_weights_missing(model_ids: list[str]) -> str | None:
    """None when every official file is in the Hugging Face cache or could be downloaded, else why not."""
    from terramind_qgis.models.core import catalogue
    from terramind_qgis.models.core.errors import TerraMindError
    from terramind_qgis.models.weights import hub

    specs = [catalogue.get(m) for m in model_ids]
    offline = hub.hub_offline()
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # first look in the cache only
    missing = []
    try:
        for spec in specs:
            try:
                hub.resolve_weights(spec)
            except TerraMindError:
                missing.append(spec)
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
    if not missing:
        return None
    first = missing[0].weights.filename
    if offline:
        return f"HF_HUB_OFFLINE is set and {first} is not in the Hugging Face cache"
    if not _hub_reachable():
        return f"huggingface.co cannot be reached and {first} is not in the Hugging Face cache"
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    for spec in missing:
        LOG.info("downloading %s from Hugging Face (%s)", spec.weights.filename, spec.weights.repo_id)
        try:
            hub.resolve_weights(spec)
        except TerraMindError as e:
            return str(e).split(". To provide it locally")[0]
    return None


def _run(args: argparse.Namespace, out: Path, untrained: bool, weights: str | None) -> dict[str, str]:
    import processing

    tag = "_UNTRAINED" if untrained else ""
    shared = {"UNTRAINED": untrained, "TIMESTEPS": args.timesteps, "SEED": 0, "DEVICE": args.device,
              **({"WEIGHTS": weights} if weights else {})}
    source = out / "input_S2L2A.tif"
    shutil.copy(SAMPLE, source)
    source.chmod(0o644)
    LOG.info("reconstructing the S2L2A patch with terramind_v1_tokenizer_s2l2a%s", " (UNTRAINED)" if untrained else "")
    rec = processing.run("terramind:reconstructwithtokenizer", {
        "INPUT": str(source), "MODALITY": "S2L2A", **shared,
        "OUTPUT": str(out / f"reconstruction_S2L2A{tag}.tif"), "DIFFERENCE": str(out / f"difference_S2L2A{tag}.tif")})
    LOG.info("PSNR per band (dB): %s", ", ".join(f"{b} {v:.1f}" for b, v in rec["PSNR"].items()))
    LOG.info("generating %s with terramind_v1_%s%s", ", ".join(GENERATED), args.model_size, " (UNTRAINED)" if untrained else "")
    gen = processing.run("terramind:generatemodalities", {
        "INPUT_S2L2A": str(source), "OUTPUTS": list(GENERATED), "MODEL": f"terramind_v1_{args.model_size}", **shared,
        **{f"OUTPUT_{m}": str(out / f"generated_{m}{tag}.tif") for m in GENERATED}})
    paths = {"input": str(source), "reconstruction": rec["OUTPUT"], "difference": rec["DIFFERENCE"]}
    paths.update({m: gen[f"OUTPUT_{m}"] for m in GENERATED})
    return paths


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout)
    args = _arguments(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TERRAMIND_PYTHON", sys.executable)  # the worker: this (project) interpreter
    app, provider = _start_qgis()
    try:
        untrained, weights = args.untrained, args.weights
        if weights and not Path(weights).is_dir():
            LOG.error("--weights %s is not a folder", weights)
            return 2
        if not untrained and not weights:
            needed = ["terramind_v1_tokenizer_s2l2a", f"terramind_v1_{args.model_size}",
                      *(f"terramind_v1_tokenizer_{m.lower()}" for m in GENERATED)]
            reason = _official_weights_missing(needed)
            if reason:
                LOG.warning("Official TerraMind weights are not reachable (%s); running the same pipeline with "
                            "deterministic UNTRAINED weights - every output is named and tagged UNTRAINED.", reason)
                untrained = True
        paths = _run(args, out, untrained, weights)
        from demo_render import render_demo  # tools/demo_render.py (this folder is on sys.path)

        warning = " — UNTRAINED weights, outputs not meaningful" if untrained else ""
        title = f"TerraMind 1.0 {args.model_size} + tokenizers{warning}"
        picture = render_demo(paths, out / f"terramind_demo{'_UNTRAINED' if untrained else ''}.png", title, untrained)
        LOG.info("wrote %s and the GeoTIFFs in %s", picture, out)
        return 0
    finally:
        app.processingRegistry().removeProvider(provider)
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main())
