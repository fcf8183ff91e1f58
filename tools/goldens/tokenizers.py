"""Golden tensors for the six TerraMind v1 image tokenizers, made with the reference (terratorch 1.2.11).

Run with the reference venv (a dev tool; product code and tests never import terratorch)::

    PYTHONPATH=.pluginpath nice -n 5 /root/.cache/terramind-reference-venv/bin/python \
        tools/goldens/tokenizers.py [--out tests/goldens/tokenizers]

For each tokenizer the reference is built by its registry function with ``pretrained=True`` through
its own loading path (``build_vqvae``: ``hf_hub_download`` → ``torch.load(weights_only=True)`` →
``load_state_dict(strict=True)``), with ``hf_hub_download`` redirected to a temporary file holding
the checkpoint layout filled by ``models/weights/untrained.py``. It then runs on the real example
patches (tests/data/examples; only file and scene names are stored) and records:

(a) token ids and pre-rounding latents of the 4 scenes at 224 (every tokenizer);
(b) every DDIM step (UNet output and next sample) of one 10-step DEM decode from a stored noise;
(c) a 2-step decode at 224 of scene 0 for every DiVAE, noise from a seeded CPU generator;
(d) LULC logits at 224 (scene 0);
(e) the scheduler's alphas_cumprod and trailing timesteps for 1/3/7/10/50 steps;
(f) other sizes: DEM 256x256 (reflect-padded) and 160x224 (cropped) tokens and 1-step decodes, DEM
    tokens at 240 and the reference's failure to decode 240; LULC at 160x224 (tokens and logits);
(g) state-dict keys, shapes and dtypes of every tokenizer (layouts.json).

Inputs: ``((raw as float64) - mean) / std`` cast to float32 with the reference's v1 ``tok_*``
statistics (S1GRD uses the S1RTC patches as a stand-in); LULC: the uint8 class map as int64 ids.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import rasterio
import terratorch  # noqa: F401  (sets float32 matmul precision to "medium" as a side effect)
import torch

torch.set_float32_matmul_precision("highest")

import diffusers  # noqa: E402
from terratorch.models.backbones.terramind.model import terramind_register  # noqa: E402
from terratorch.models.backbones.terramind.tokenizer import tokenizer_register  # noqa: E402

from terramind_qgis.models.weights.untrained import deterministic_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")

# catalogue id -> (modality folder of the example patches, stats key, decode seed)
TOKENIZERS = {
    "terramind_v1_tokenizer_s2l2a": ("S2L2A", "tok_sen2l2a@224", 1001),
    "terramind_v1_tokenizer_s1grd": ("S1RTC", "tok_sen1grd@224", 1002),
    "terramind_v1_tokenizer_s1rtc": ("S1RTC", "tok_sen1rtc@224", 1003),
    "terramind_v1_tokenizer_dem": ("DEM", "tok_dem@224", 1004),
    "terramind_v1_tokenizer_ndvi": ("NDVI", "tok_ndvi@224", 1005),
    "terramind_v1_tokenizer_lulc": ("LULC", None, None),
}
DECODE_TIMESTEPS = 2
DDIM_TOKENIZER, DDIM_STEPS, DDIM_NOISE_SEED = "terramind_v1_tokenizer_dem", 10, 2024
SIZE_SEEDS = {"256x256": 3001, "160x224": 3002}
SCHEDULER_STEPS = (1, 3, 7, 10, 50)


def load_input(folder: str, stats_key: str | None) -> np.ndarray:
    """The 4 scenes as the tokenizer's input: standardized float32 (B, C, 224, 224) or int64 ids (B, H, W)."""
    arrays = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            arrays.append(src.read())
    raw = np.stack(arrays)  # (B, C, H, W)
    if stats_key is None:
        return raw[:, 0].astype(np.int64)  # (B, H, W) class ids
    mean = np.asarray(terramind_register.v1_pretraining_mean[stats_key], dtype=np.float64)
    std = np.asarray(terramind_register.v1_pretraining_std[stats_key], dtype=np.float64)
    return ((raw.astype(np.float64) - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def build_reference(model_id: str, tmpdir: str) -> tuple[torch.nn.Module, dict, dict]:
    """Reference tokenizer loaded strictly from a deterministic checkpoint; its layout and HF request."""
    factory = getattr(tokenizer_register, model_id)
    layout_model = factory(pretrained=False)  # (the reference cannot be built on the meta device)
    layout = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
              for k, v in layout_model.state_dict().items()}  # fmt: skip
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in layout_model.state_dict().items()}
    del layout_model
    path = os.path.join(tmpdir, f"{model_id}.pt")
    torch.save(deterministic_state_dict(shapes), path)
    requested: dict = {}

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        requested.update(repo_id=repo_id, filename=filename)
        return path

    original = tokenizer_register.hf_hub_download
    tokenizer_register.hf_hub_download = fake_download
    try:
        model = factory(pretrained=True).eval()
    finally:
        tokenizer_register.hf_hub_download = original
        os.remove(path)
    return model, layout, requested


def latents(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's pre-rounding latents: quant_proj(encoder(prepare_input(x)))."""
    return model.quant_proj(model.encoder(model.prepare_input(x)))


def record_steps(scheduler: object) -> list[dict]:
    """Wrap ``scheduler.step`` to record every call; returns the (growing) record list."""
    records: list[dict] = []
    original = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):  # noqa: ANN001, ANN202
        out = original(model_output, timestep, sample, *args, **kwargs)
        records.append({"timestep": int(timestep), "model_output": model_output.clone(),
                        "sample": sample.clone(), "prev_sample": out.prev_sample.clone()})  # fmt: skip
        return out

    scheduler.step = step
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "goldens" / "tokenizers"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    meta: dict = {
        "reference": {"terratorch": importlib.metadata.version("terratorch"), "torch": torch.__version__,
                      "diffusers": diffusers.__version__, "float32_matmul_precision": "highest",
                      "threads": torch.get_num_threads()},  # fmt: skip
        "scenes": list(SCENES),
        "input_recipe": "standardized = float32((float64(raw) - mean) / std) with the reference's "
        "v1_pretraining_mean/std[stats_key]; LULC: int64 class ids (B, H, W)",
        "decode_timesteps": DECODE_TIMESTEPS,
        "tokenizers": {},
    }
    layouts: dict = {}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmpdir:
        for model_id, (folder, stats_key, seed) in TOKENIZERS.items():
            t0 = time.time()
            model, layouts[model_id], requested = build_reference(model_id, tmpdir)
            x = torch.from_numpy(load_input(folder, stats_key))
            quant, _, tokens = model.encode(x)
            arrays = {"tokens": tokens.numpy(), "latents": latents(model, x).numpy()}
            entry = {"input_folder": folder, "stats_key": stats_key, "checkpoint_request": requested,
                     "class": type(model).__name__, "n_channels": model.n_channels}  # fmt: skip
            if stats_key is not None:
                entry["mean"] = list(terramind_register.v1_pretraining_mean[stats_key])
                entry["std"] = list(terramind_register.v1_pretraining_std[stats_key])
                generator = torch.Generator().manual_seed(seed)
                arrays["decode"] = model.decode_tokens(
                    tokens[:1], timesteps=DECODE_TIMESTEPS, generator=generator, verbose=False
                ).numpy()
                entry["decode_seed"] = seed
            else:
                arrays["logits_scene0"] = model.decode_tokens(tokens[:1]).numpy()
            if model_id == DDIM_TOKENIZER:
                _ddim_goldens(model, tokens[:1], out, meta)
                _size_goldens(model, x[:1], out, meta, "dem")
                _scheduler_goldens(model, out, meta)
            if model_id == "terramind_v1_tokenizer_lulc":
                _size_goldens(model, x[:1], out, meta, "lulc")
            np.savez_compressed(out / f"{model_id.rsplit('_', 1)[-1]}.npz", **arrays)
            entry["seconds"] = round(time.time() - t0, 1)
            meta["tokenizers"][model_id] = entry
            print(f"{model_id}: {entry['seconds']} s", file=sys.stderr)
            del model
    meta["seconds"] = round(time.time() - started, 1)
    (out / "goldens.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    (out / "layouts.json").write_text(json.dumps(layouts, indent=1) + "\n")


def _ddim_goldens(model: torch.nn.Module, tokens: torch.Tensor, out: Path, meta: dict) -> None:
    """(b) every step of one DDIM_STEPS-step decode from a stored start noise."""
    noise = torch.randn((1, model.n_channels, 224, 224), generator=torch.Generator().manual_seed(DDIM_NOISE_SEED))
    records = record_steps(model.noise_scheduler)
    result = model.decode_tokens(
        tokens, timesteps=DDIM_STEPS, generator=torch.Generator().manual_seed(DDIM_NOISE_SEED), verbose=False
    )
    del model.noise_scheduler.step  # back to the class method
    assert torch.equal(records[0]["sample"], noise), "the reference did not start from the stored noise"
    assert torch.equal(records[-1]["prev_sample"], result)
    np.savez_compressed(
        out / "ddim_steps.npz",
        tokens=tokens.numpy(),
        noise=noise.numpy(),
        timesteps=np.array([r["timestep"] for r in records], dtype=np.int64),
        model_output=torch.cat([r["model_output"] for r in records]).numpy(),
        prev_sample=torch.cat([r["prev_sample"] for r in records]).numpy(),
    )
    meta["ddim_steps"] = {"tokenizer": DDIM_TOKENIZER, "timesteps": DDIM_STEPS, "noise_seed": DDIM_NOISE_SEED,
                          "scene": SCENES[0]}  # fmt: skip


def _scheduler_goldens(model: torch.nn.Module, out: Path, meta: dict) -> None:
    """(e) the schedule table and the trailing timesteps."""
    scheduler = model.noise_scheduler
    arrays = {"alphas_cumprod": scheduler.alphas_cumprod.numpy(), "betas": scheduler.betas.numpy()}
    for n in SCHEDULER_STEPS:
        scheduler.set_timesteps(n, mode="trailing")
        arrays[f"timesteps_{n}"] = scheduler.timesteps.numpy()
    np.savez_compressed(out / "scheduler.npz", **arrays)
    meta["scheduler"] = {"steps": list(SCHEDULER_STEPS), "config": dict(scheduler.config)}


def _size_goldens(model: torch.nn.Module, x: torch.Tensor, out: Path, meta: dict, name: str) -> None:
    """(f) tokens and decodes at sizes other than 224."""
    inputs = {"160x224": x[..., :160, :]}
    if name == "dem":
        inputs["256x256"] = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (16, 16), (16, 16)), mode="reflect"))
    arrays, info = {}, {}
    for size, xs in inputs.items():
        _, _, tokens = model.encode(xs)
        arrays[f"{size}_tokens"] = tokens.numpy()
        arrays[f"{size}_latents"] = latents(model, xs).numpy()
        if name == "dem":
            generator = torch.Generator().manual_seed(SIZE_SEEDS[size])
            height, width = (int(v) for v in size.split("x"))
            arrays[f"{size}_decode"] = model.decode_tokens(
                tokens, image_size=(height, width), timesteps=1, generator=generator, verbose=False
            ).numpy()
            info[size] = {"seed": SIZE_SEEDS[size], "timesteps": 1}
        else:
            arrays[f"{size}_logits"] = model.decode_tokens(tokens).numpy()
    if name == "dem":
        x240 = torch.nn.functional.pad(x, (8, 8, 8, 8), mode="reflect")  # (1, 1, 240, 240)
        _, _, tokens = model.encode(x240)
        arrays["240x240_tokens"] = tokens.numpy()
        try:
            model.decode_tokens(tokens, timesteps=1, generator=torch.Generator().manual_seed(0), verbose=False)
            info["240x240"] = {"decode_error": None}
        # the reference fails here (terratorch 1.2.11 ``models/backbones/terramind/tokenizer/models/unet/unet.py``
        # ``PatchedUNetCondCat``)
        except Exception as e:
            info["240x240"] = {"decode_error": type(e).__name__, "message": str(e)[:300],
                               "where": traceback.extract_tb(e.__traceback__)[-1].name}  # fmt: skip
    np.savez_compressed(out / f"sizes_{name}.npz", **arrays)
    described = {"160x224": "rows 0..159 of scene 0", "256x256": "scene 0 reflect-padded by 16 (numpy)",
                 "240x240": "scene 0 reflect-padded by 8 (torch)"}  # fmt: skip
    sizes = [*inputs, *(["240x240"] if name == "dem" else [])]
    meta.setdefault("sizes", {})[name] = {"inputs": {k: described[k] for k in sizes}, **info}


if __name__ == "__main__":
    main()
