"""Golden tensors for ``models/terramind`` from the reference, terratorch 1.2.11 (a dev tool).

Run with the reference venv, from the repository root::

    PYTHONPATH=.pluginpath nice -n 5 /root/.cache/terramind-reference-venv/bin/python \
        tools/goldens/terramind.py --variants tiny base --e2e [--only CASE ...] [--out DIR]

(about 4-9 minutes and 6.5 GB at most on 2 cores; the committed files are what this command writes,
bit for bit).

What it does:

1. For each variant it builds the OFFICIAL checkpoint layout (the full encoder-decoder with every
   v1 encoder and decoder image embedding, keys without prefix), fills it with the rule of
   ``models/weights/untrained.py`` and saves it to ``/tmp/terramind_goldens/``. A second,
   "parameters-only" file drops the recomputable buffers (sin-cos ``pos_emb``, LayerNorm zero
   ``bias``).
2. It builds the reference wrappers through terratorch's registry functions with
   ``pretrained=True``; ``hf_hub_download`` is redirected to the files of step 1, so terratorch's own
   key mapping (``checkpoint_filter_fn*``) loads them. Tokenizers are stand-ins that record the
   ids the generation decodes; tokenized inputs (LULC, NDVI) go through the real reference
   tokenizers filled by the same rule, and the ids they produce are stored as test inputs.
3. It runs the cases on the real example patches (S1RTC stands in for S1GRD) with
   ``random.seed(python_seed)`` before each call and stores small arrays in
   ``tests/goldens/terramind/<variant>.npz`` plus ``cases.json`` (inputs, seeds, sampling, shapes)
   and ``layouts.json`` (state-dict keys and shapes, large included).

Logits and features are stored as summaries (per-row max / logsumexp / top-2 gap, per-token norms)
plus a few full rows, to keep the folder small. After each generation call the stand-in decoders
have drawn nothing, so ``noise_probe`` (the next 16 values of the global CPU RNG) is where the first
DiVAE start noise would come from. ``--e2e`` adds a pixel case with the real reference tokenizers
(tiny, S2L2A 128 x 128 → S1GRD, DEM, LULC, 1 DDIM step). Base runs batch 1 and fewer cases to
keep the tests within their time budget.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import sys
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
import terratorch  # noqa: F401  (sets float32 matmul precision to "medium")
import torch
from torch import nn

torch.set_float32_matmul_precision("highest")

from terratorch.models.backbones.terramind.model import terramind_register as reg  # noqa: E402
from terratorch.models.backbones.terramind.model.generate import GenerationSampler  # noqa: E402
from terratorch.models.backbones.terramind.model.modality_info import MODALITY_INFO  # noqa: E402
from terratorch.models.backbones.terramind.model.terramind import (  # noqa: E402
    TerraMind,
    build_modality_embeddings,
    build_output_modality_embeddings,
)
from terratorch.models.backbones.terramind.model.tm_utils import LayerNorm as RefLayerNorm  # noqa: E402

from terramind_qgis.models.weights.untrained import (  # noqa: E402
    deterministic_state_dict,
    deterministic_tensor,
    fill_module_,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "data" / "examples"
OUT = REPO / "tests" / "goldens" / "terramind"
TMP = Path("/tmp/terramind_goldens")
SCENES = ("282D_485L_3_3", "38D_378R_2_3")
ALL_INPUTS = ["S2L2A", "S2L1C", "S2RGB", "S1GRD", "S1RTC", "DEM", "LULC", "NDVI"]
ALL_OUTPUTS = ["S2L2A", "S1GRD", "S1RTC", "DEM", "LULC", "NDVI"]
VARIANT_KW = {
    "tiny": dict(dim=192, num_heads=3, encoder_depth=12, decoder_depth=4, mlp_ratio=4, qkv_bias=True,
                 proj_bias=True, mlp_bias=True, act_layer=nn.GELU, gated_mlp=False),
    "small": dict(dim=384, num_heads=6, encoder_depth=12, decoder_depth=6, mlp_ratio=4, qkv_bias=True,
                  proj_bias=True, mlp_bias=True, act_layer=nn.GELU, gated_mlp=False),
    "base": dict(dim=768, num_heads=12, encoder_depth=12, decoder_depth=12, mlp_ratio=4, qkv_bias=False,
                 proj_bias=False, mlp_bias=False, act_layer=nn.SiLU, gated_mlp=True),
    "large": dict(dim=1024, num_heads=16, encoder_depth=24, decoder_depth=24, mlp_ratio=4, qkv_bias=False,
                  proj_bias=False, mlp_bias=False, act_layer=nn.SiLU, gated_mlp=True),
}  # fmt: skip
FEATURE_LAYERS = (2, 5, 8, 11)
FEATURE_ROWS = (0, 13, 57, 98, 150, 195)
LOGIT_ROWS = (0, 97)
LAYOUT_CASES = {"gen_default", "gen_multi", "vit_mean", "vit_concat", "vit_bands", "tim_lulc", "tim_chain2",
                "tim_unchained"}


# ----------------------------------------------------------------------------- data
def read(modality: str, scenes=SCENES, crop: tuple[int, int] | None = None) -> torch.Tensor:
    """Real patches as float32 ``(B, C, H, W)`` (top-left crop ``(H, W)`` if given)."""
    arrays = []
    for scene in scenes:
        with rasterio.open(EXAMPLES / modality / f"{scene}.tif") as src:
            arrays.append(src.read().astype(np.float32))
    x = torch.from_numpy(np.stack(arrays))
    return x if crop is None else x[..., : crop[0], : crop[1]].contiguous()


def standardized(x: torch.Tensor, key: str, band_indices=None) -> torch.Tensor:
    mean, std = reg.v1_pretraining_mean[key], reg.v1_pretraining_std[key]
    if band_indices is not None:
        mean, std = [mean[i] for i in band_indices], [std[i] for i in band_indices]
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (x.to(torch.float32) - mean_t) / std_t


# ----------------------------------------------------------------------------- official checkpoints
_CKPT_CACHE: dict[str, dict[str, torch.Tensor]] = {}
_REAL_TORCH_LOAD = torch.load


@contextlib.contextmanager
def meta_device():
    """Build on ``meta`` (no memory); terratorch calls ``.item()`` on ``torch.linspace``, kept on CPU."""
    real_linspace = torch.linspace
    torch.linspace = lambda *a, **k: real_linspace(*a, **{**k, "device": "cpu"})
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.linspace = real_linspace


def _official_meta_model(variant: str) -> nn.Module:
    kw = dict(VARIANT_KW[variant])
    with meta_device():
        enc, _ = build_modality_embeddings(MODALITY_INFO, ALL_INPUTS, cond_modalities=ALL_OUTPUTS, img_size=224,
                                           dim=kw["dim"], patch_size=16)
        dec, _ = build_output_modality_embeddings(MODALITY_INFO, ALL_OUTPUTS, img_size=224, dim=kw["dim"], patch_size=16)
        return TerraMind(encoder_embeddings=enc, decoder_embeddings=dec, modality_info=MODALITY_INFO,
                         norm_layer=partial(RefLayerNorm, eps=1e-6, bias=False), num_register_tokens=0, **kw)


def official_layout(variant: str) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in _official_meta_model(variant).state_dict().items()}


def official_checkpoint(variant: str, params_only: bool = False) -> str:
    """Fill the official layout by the rule; returns the path terratorch will 'download'."""
    path = TMP / f"TerraMind_v1_{variant}{'_params' if params_only else ''}.pt"
    if str(path) in _CKPT_CACHE:
        return str(path)
    model = _official_meta_model(variant)
    recomputable = set()
    for name, module in model.named_modules():
        if isinstance(module, RefLayerNorm):
            recomputable.add(f"{name}.bias")
        if hasattr(module, "pos_emb"):
            recomputable.add(f"{name}.pos_emb")
    shapes = {k: v.shape for k, v in model.state_dict().items() if not (params_only and k in recomputable)}
    full_path = TMP / f"TerraMind_v1_{variant}.pt"
    if params_only and str(full_path) in _CKPT_CACHE:
        sd = {k: v for k, v in _CKPT_CACHE[str(full_path)].items() if k in shapes}
    else:
        sd = deterministic_state_dict(shapes)
    TMP.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    _CKPT_CACHE[str(path)] = sd
    return str(path)


def _cached_torch_load(f, *args, **kwargs):
    if isinstance(f, (str, Path)) and str(f) in _CKPT_CACHE:
        return _CKPT_CACHE[str(f)]
    return _REAL_TORCH_LOAD(f, *args, **kwargs)


torch.load = _cached_torch_load
_CURRENT_CKPT = {"path": None}
reg.hf_hub_download = lambda repo_id, filename, **kw: _CURRENT_CKPT["path"]


@contextlib.contextmanager
def checkpoint(path: str):
    _CURRENT_CKPT["path"] = path
    try:
        yield
    finally:
        _CURRENT_CKPT["path"] = None


# ----------------------------------------------------------------------------- tokenizer stand-ins
_REAL_FACTORIES = dict(reg.tokenizer_dict["v1"])
_REAL_TOKENIZERS: dict[str, nn.Module] = {}
OUT_CHANNELS = {"tok_sen2l2a@224": 12, "tok_sen1grd@224": 2, "tok_sen1rtc@224": 2, "tok_dem@224": 1,
                "tok_ndvi@224": 1, "tok_lulc@224": 10}  # fmt: skip


def real_tokenizer(key: str) -> nn.Module:
    """The reference tokenizer of ``key``, filled by the rule (official tokenizer layout = its keys)."""
    if key not in _REAL_TOKENIZERS:
        tok = _REAL_FACTORIES[key](pretrained=False)
        fill_module_(tok)
        _REAL_TOKENIZERS[key] = tok.eval()
    return _REAL_TOKENIZERS[key]


class StandIn(nn.Module):
    """Records the ids terratorch encodes/decodes; decodes to zeros unless ``E2E`` is set."""

    patch_size = 16
    log: list = []
    e2e = False

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def encode(self, x, device=None):
        out = real_tokenizer(self.key).encode(x)
        StandIn.log.append(("encode", self.key, out[-1].clone()))
        return out

    def decode_tokens(self, tok, image_size=None, timesteps=50, verbose=False):
        StandIn.log.append(("decode", self.key, tok.clone()))
        if StandIn.e2e:
            return real_tokenizer(self.key).decode_tokens(tok, image_size=image_size, timesteps=timesteps, verbose=verbose)
        return torch.zeros(tok.shape[0], OUT_CHANNELS[self.key], image_size[1], image_size[0])


for _key in list(reg.tokenizer_dict["v1"]):
    reg.tokenizer_dict["v1"][_key] = (lambda k: (lambda pretrained=False, **kw: StandIn(k)))(_key)


# ----------------------------------------------------------------------------- tracing the sampler
TRACE: dict[str, list] = {"perm": [], "logits": [], "generated": []}
_orig_roar = GenerationSampler.forward_mask_decoder_roar
_orig_sample = GenerationSampler.sample_tokens_batched
_orig_generate = GenerationSampler.generate


def _roar(self, *args, **kwargs):
    out = _orig_roar(self, *args, **kwargs)
    TRACE["perm"].append(out[-1][0].clone())
    return out


def _sample(self, logits, *args, **kwargs):
    TRACE["logits"].append(logits.detach().clone())
    return _orig_sample(self, logits, *args, **kwargs)


def _generate(self, mod_dict, schedule, *args, **kwargs):
    out = _orig_generate(self, mod_dict, schedule, *args, **kwargs)
    TRACE["generated"].append({s["target_domain"]: out[s["target_domain"]]["tensor"].clone() for s in schedule})
    return out


GenerationSampler.forward_mask_decoder_roar = _roar
GenerationSampler.sample_tokens_batched = _sample
GenerationSampler.generate = _generate


def reset_trace() -> None:
    for v in TRACE.values():
        v.clear()
    StandIn.log.clear()


# ----------------------------------------------------------------------------- storage helpers
class Store:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: dict[str, dict] = {}

    def put(self, case: str, name: str, value) -> None:
        a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        self.arrays[f"{case}/{name}"] = a


def logits_summary(store: Store, case: str, step: int, logits: torch.Tensor, perm: torch.Tensor, full_rows: bool):
    """Logits ``(B, N, V)`` in π order → position order summaries."""
    pos = torch.empty_like(logits).index_copy_(1, perm, logits)  # (B, N, V)
    top2 = torch.topk(pos, 2, dim=-1).values
    store.put(case, f"step{step}/rowmax", top2[..., 0])
    store.put(case, f"step{step}/gap", top2[..., 0] - top2[..., 1])
    store.put(case, f"step{step}/lse", torch.logsumexp(pos, dim=-1))
    store.put(case, f"step{step}/argmax", pos.argmax(-1).to(torch.int32))
    if full_rows:
        store.put(case, f"step{step}/rows", pos[:, list(LOGIT_ROWS)])


def features_summary(store: Store, case: str, out) -> None:
    for layer, t in enumerate(out):
        if isinstance(t, dict):
            for name, v in t.items():
                store.put(case, f"L{layer}/{name}/norm", v.norm(dim=-1))
                if layer in FEATURE_LAYERS:
                    store.put(case, f"L{layer}/{name}/rows", v[:, [r for r in FEATURE_ROWS if r < v.shape[1]]])
        else:
            store.put(case, f"L{layer}/norm", t.norm(dim=-1))
            if layer in FEATURE_LAYERS:
                store.put(case, f"L{layer}/rows", t[:, [r for r in FEATURE_ROWS if r < t.shape[1]]])


def ordered(record_inputs: dict) -> list:
    """Inputs as ``[[name, spec], ...]``: the order is the encoder's token order, so it must survive JSON."""
    return [[name, spec] for name, spec in record_inputs.items()]


def layout_of(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("tokenizer.")}


# ----------------------------------------------------------------------------- cases
def generation_case(store: Store, variant: str, case: str, inputs: dict, outputs: list[str], py_seed: int,
                    temps=1.0, top_p=0.8, top_k=0, params_only=False, full_rows=False, record_inputs=()):
    """One generation call; stores sampled ids, π, logits summaries, tokenized-input ids."""
    builder = getattr(reg, f"terramind_v1_{variant}_generate")
    with checkpoint(official_checkpoint(variant, params_only)):
        model = builder(modalities=list(inputs), output_modalities=outputs, pretrained=True, standardize=True,
                        temps=temps, top_p=top_p, top_k=top_k).eval()
    reset_trace()
    random.seed(py_seed)
    with torch.no_grad():
        model({k: v.clone() for k, v in inputs.items()}, timesteps=2)
    # The stand-in decoders draw nothing: the global CPU RNG now sits where the first DiVAE noise is drawn.
    store.put(case, "noise_probe", torch.randn(16))
    keys = [model.mod_name_mapping[o] for o in outputs]
    generated = TRACE["generated"][-1]
    for step, (name, key) in enumerate(zip(outputs, keys)):
        store.put(case, f"tokens/{name}", generated[key].to(torch.int32))
        store.put(case, f"perm/{name}", TRACE["perm"][step].to(torch.int32))
        logits_summary(store, case, step, TRACE["logits"][step], TRACE["perm"][step], full_rows)
    for kind, key, ids in StandIn.log:
        if kind == "encode":
            store.put(case, f"input_ids/{key}", ids.to(torch.int32))
    store.cases[case] = dict(kind="generation", variant=variant, outputs=outputs, python_seed=py_seed,
                             call_seed=random.Random(py_seed).randint(-(2**31), 2**31 - 1),
                             temperature=temps, top_p=top_p, top_k=top_k, params_only=params_only,
                             inputs=ordered(record_inputs))
    if case in LAYOUT_CASES:
        store.layouts[case] = layout_of(model)
    del model
    gc.collect()


def backbone_case(store: Store, variant: str, case: str, modalities: list[str], inputs: dict, merge, bands=None,
                  params_only=False, record_inputs=()):
    builder = getattr(reg, f"terramind_v1_{variant}")
    with checkpoint(official_checkpoint(variant, params_only)):
        model = builder(modalities=modalities, pretrained=True, merge_method=merge, bands=bands)
    if merge == "concat":  # not in official files (terratorch leaves it uninitialised): fill by the rule
        model.missing_mod_token.data.copy_(deterministic_tensor("missing_mod_token", model.missing_mod_token.shape))
    model.eval()
    reset_trace()
    with torch.no_grad():
        out = model({k: v.clone() for k, v in inputs.items()})
    features_summary(store, case, out)
    for kind, key, ids in StandIn.log:
        if kind == "encode":
            store.put(case, f"input_ids/{key}", ids.to(torch.int32))
    store.cases[case] = dict(kind="backbone", variant=variant, modalities=modalities, merge=merge, bands=bands,
                             params_only=params_only, inputs=ordered(record_inputs))
    if case in LAYOUT_CASES:
        store.layouts[case] = layout_of(model)
    del model
    gc.collect()


def tim_case(store: Store, variant: str, case: str, modalities: list[str], tim: list[str], inputs: dict, py_seed: int,
             merge="mean", chained=True, record_inputs=()):
    builder = getattr(reg, f"terramind_v1_{variant}_tim")
    with checkpoint(official_checkpoint(variant)):
        model = builder(modalities=modalities, tim_modalities=tim, pretrained=True, merge_method=merge,
                        tim_chained_generations=chained).eval()
    reset_trace()
    random.seed(py_seed)
    with torch.no_grad():
        out = model({k: v.clone() for k, v in inputs.items()})
    features_summary(store, case, out)
    generated = TRACE["generated"][-1]
    for name in tim:
        store.put(case, f"tim_tokens/{name}", generated[model.mod_name_mapping[name]].to(torch.int32))
    for step, name in enumerate(tim):
        store.put(case, f"perm/{name}", TRACE["perm"][step].to(torch.int32))
    store.cases[case] = dict(kind="tim", variant=variant, modalities=modalities, tim_modalities=tim, merge=merge,
                             chained=chained, python_seed=py_seed,
                             call_seed=random.Random(py_seed).randint(-(2**31), 2**31 - 1),
                             inputs=ordered(record_inputs))
    if case in LAYOUT_CASES:
        store.layouts[case] = layout_of(model)
    del model
    gc.collect()


def run_variant(variant: str, only: set[str] | None, e2e: bool) -> Store:
    store = Store()
    store.layouts = {}
    full = variant == "tiny"
    scenes = SCENES if full else SCENES[:1]  # base: batch 1 to keep the tests fast
    want = (lambda c: only is None or c in only)
    s2l2a = read("S2L2A", scenes)
    s2l1c, s1rtc, dem = read("S2L1C", scenes), read("S1RTC", scenes), read("DEM", scenes)

    one = scenes[:1]  # secondary generation cases: batch 1 (the tests' time budget)
    if want("gen_default"):
        generation_case(store, variant, "gen_default", {"S2L2A": s2l2a}, ["S1GRD", "DEM", "LULC"], 11,
                        full_rows=True, record_inputs={"S2L2A": {"scenes": scenes, "raw": True}})
    if full and want("gen_topk"):
        generation_case(store, variant, "gen_topk", {"S2L2A": read("S2L2A", one)}, ["S1GRD", "DEM", "LULC"], 12,
                        temps=0.5, top_p=0.3, top_k=50, record_inputs={"S2L2A": {"scenes": one, "raw": True}})
    if full and want("gen_greedy"):
        generation_case(store, variant, "gen_greedy", {"S2L2A": read("S2L2A", one)}, ["S1GRD", "DEM", "LULC"], 13,
                        temps=0.0, record_inputs={"S2L2A": {"scenes": one, "raw": True}})
    if full and want("gen_multi"):
        generation_case(store, variant, "gen_multi",
                        {"S1RTC": read("S1RTC", one), "DEM": read("DEM", one), "LULC": read("LULC", one)},
                        ["S2L2A", "NDVI"], 14,
                        record_inputs={"S1RTC": {"scenes": one, "raw": True}, "DEM": {"scenes": one, "raw": True},
                                       "LULC": {"ids": "input_ids/tok_lulc@224"}})
    if full and want("gen_small_grid"):  # 12 x 12 tokens, sin-cos tables recomputed, NDVI tokenized input
        generation_case(store, variant, "gen_small_grid",
                        {"S2L2A": read("S2L2A", one, crop=(192, 192)), "NDVI": read("NDVI", one, crop=(192, 192))},
                        ["S1RTC", "LULC"], 16, params_only=True,
                        record_inputs={"S2L2A": {"scenes": one, "raw": True, "crop": [192, 192]},
                                       "NDVI": {"ids": "input_ids/tok_ndvi@224"}})

    grd = {"S2L1C": standardized(s2l1c, "untok_sen2l1c@224"), "S1GRD": standardized(s1rtc, "untok_sen1grd@224")}
    grd_rec = {"S2L1C": {"scenes": scenes, "key": "untok_sen2l1c@224"},
               "S1GRD": {"scenes": scenes, "file": "S1RTC", "key": "untok_sen1grd@224"}}
    merges = ["mean", "max", "concat", "dict", None] if full else ["mean", "concat"]
    for merge in merges:
        case = f"vit_{merge}"
        if want(case):
            backbone_case(store, variant, case, ["S2L1C", "S1GRD"], grd, merge, record_inputs=grd_rec)
    if want("vit_concat_missing"):
        backbone_case(store, variant, "vit_concat_missing", ["S2L1C", "S1GRD"], {"S2L1C": grd["S2L1C"]}, "concat",
                      record_inputs={"S2L1C": grd_rec["S2L1C"]})
    bands = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    idx = [reg.PRETRAINED_BANDS["untok_sen2l2a@224"].index(b) for b in bands]
    if full and want("vit_bands"):
        backbone_case(store, variant, "vit_bands", ["S2L2A"],
                      {"S2L2A": standardized(s2l2a[:, idx], "untok_sen2l2a@224", idx)}, "mean",
                      bands={"S2L2A": bands},
                      record_inputs={"S2L2A": {"scenes": scenes, "key": "untok_sen2l2a@224", "band_indices": idx}})
    if full and want("vit_nonsquare"):
        crop = (224, 160)
        backbone_case(store, variant, "vit_nonsquare", ["S2L2A", "DEM"],
                      {"S2L2A": standardized(read("S2L2A", scenes, crop=crop), "untok_sen2l2a@224"),
                       "DEM": standardized(read("DEM", scenes, crop=crop), "untok_dem@224")}, None,
                      record_inputs={"S2L2A": {"scenes": scenes, "key": "untok_sen2l2a@224", "crop": list(crop)},
                                     "DEM": {"scenes": scenes, "key": "untok_dem@224", "crop": list(crop)}})
    if full and want("vit_params_only"):
        rgb = read("S2RGB", scenes)
        backbone_case(store, variant, "vit_params_only", ["S2RGB", "S1RTC", "DEM"],
                      {"S2RGB": standardized(rgb, "untok_sen2rgb@224"), "S1RTC": standardized(s1rtc, "untok_sen1rtc@224"),
                       "DEM": standardized(dem, "untok_dem@224")}, "mean", params_only=True,
                      record_inputs={"S2RGB": {"scenes": scenes, "key": "untok_sen2rgb@224"},
                                     "S1RTC": {"scenes": scenes, "key": "untok_sen1rtc@224"},
                                     "DEM": {"scenes": scenes, "key": "untok_dem@224"}})
    if full and want("vit_tokenized"):
        backbone_case(store, variant, "vit_tokenized", ["S2L2A", "LULC"],
                      {"S2L2A": standardized(s2l2a, "untok_sen2l2a@224"), "LULC": read("LULC", scenes)}, "mean",
                      record_inputs={"S2L2A": {"scenes": scenes, "key": "untok_sen2l2a@224"},
                                     "LULC": {"ids": "input_ids/tok_lulc@224"}})

    if want("tim_lulc"):
        tim_case(store, variant, "tim_lulc", ["S2L1C", "S1GRD"], ["LULC"], grd, 21, record_inputs=grd_rec)
    grd1 = {k: v[:1] for k, v in grd.items()}  # secondary TiM cases: batch 1
    grd1_rec = {k: dict(v, scenes=one) for k, v in grd_rec.items()}
    if full and want("tim_chain2"):
        tim_case(store, variant, "tim_chain2", ["S2L1C", "S1GRD"], ["LULC", "NDVI"], grd1, 22, record_inputs=grd1_rec)
    if full and want("tim_unchained"):
        tim_case(store, variant, "tim_unchained", ["S2L1C", "S1GRD"], ["LULC", "NDVI"], grd1, 22, chained=False,
                 record_inputs=grd1_rec)

    if e2e and full:
        _REAL_TOKENIZERS.clear()
        gc.collect()
        for key in ("tok_sen1grd@224", "tok_dem@224", "tok_lulc@224"):
            real_tokenizer(key)  # built (random init uses the global RNG) before the seeded call
        StandIn.e2e = True
        e2e_inputs = {"S2L2A": read("S2L2A", scenes=SCENES[:1], crop=(128, 128))}
        builder = reg.terramind_v1_tiny_generate
        with checkpoint(official_checkpoint(variant)):
            model = builder(modalities=["S2L2A"], output_modalities=["S1GRD", "DEM", "LULC"], pretrained=True,
                            standardize=True).eval()
        reset_trace()
        random.seed(31)
        with torch.no_grad():
            out = model({k: v.clone() for k, v in e2e_inputs.items()}, timesteps=1)
        generated = TRACE["generated"][-1]
        for name in ["S1GRD", "DEM", "LULC"]:
            store.put("e2e", f"tokens/{name}", generated[model.mod_name_mapping[name]].to(torch.int32))
        store.put("e2e", "S1GRD", out["S1GRD"])
        store.put("e2e", "DEM", out["DEM"])
        store.put("e2e", "LULC_argmax", out["LULC"].argmax(1).to(torch.uint8))
        store.put("e2e", "LULC_window", out["LULC"][:, :, 40:72, 40:72])
        store.cases["e2e"] = dict(kind="e2e", variant=variant, outputs=["S1GRD", "DEM", "LULC"], python_seed=31,
                                  call_seed=random.Random(31).randint(-(2**31), 2**31 - 1), timesteps=1,
                                  inputs=ordered({"S2L2A": {"scenes": scenes[:1], "raw": True, "crop": [128, 128]}}))
        StandIn.e2e = False
        del model
        _REAL_TOKENIZERS.clear()
        gc.collect()
    return store


def large_layouts() -> dict:
    """Reference wrapper layouts of the large variant, built on the meta device (no weights)."""
    with meta_device():
        gen = reg.terramind_v1_large_generate(modalities=["S2L2A"], output_modalities=["S1GRD", "DEM", "LULC"])
        vit = reg.terramind_v1_large(modalities=["S2L1C", "S1GRD"], merge_method="concat")
        tim = reg.terramind_v1_large_tim(modalities=["S2L1C", "S1GRD"], tim_modalities=["LULC"])
    return {"gen_default": layout_of(gen), "vit_concat": layout_of(vit), "tim_lulc": layout_of(tim)}


def reference_facts() -> dict:
    return {
        "v1_pretraining_mean": reg.v1_pretraining_mean,
        "v1_pretraining_std": reg.v1_pretraining_std,
        "pretrained_bands": reg.PRETRAINED_BANDS,
        "modality_ids": {k: MODALITY_INFO[k]["id"] for k in MODALITY_INFO if k.startswith(("tok_", "untok_"))},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "base"])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--e2e", action="store_true", help="also the pixel end-to-end case (tiny; heavy)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cases_path, layouts_path = out / "cases.json", out / "layouts.json"
    cases = json.loads(cases_path.read_text()) if cases_path.exists() else {}
    layouts = json.loads(layouts_path.read_text()) if layouts_path.exists() else {}
    for variant in args.variants:
        store = run_variant(variant, set(args.only) if args.only else None, args.e2e)
        npz = out / f"{variant}.npz"
        old = dict(np.load(npz)) if npz.exists() and args.only else {}
        old = {k: v for k, v in old.items() if k.split("/", 1)[0] not in store.cases}  # re-run cases: no stale arrays
        old.update(store.arrays)
        np.savez_compressed(npz, **old)
        cases.setdefault(variant, {}).update(store.cases)
        layouts.setdefault(variant, {}).update(store.layouts)
        layouts[variant]["official"] = official_layout(variant)
        _CKPT_CACHE.clear()
        gc.collect()
        print(f"{variant}: {len(store.cases)} cases, {len(store.arrays)} arrays -> {npz}", file=sys.stderr)
    # large: key layouts only (built on meta)
    if "large" not in layouts:
        layouts["large"] = {"official": official_layout("large"), **large_layouts()}
    cases["reference"] = reference_facts()
    cases["torch"] = torch.__version__
    cases_path.write_text(json.dumps(cases, indent=1))
    layouts_path.write_text(json.dumps(layouts, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
