"""Reference checkpoint layouts: state-dict keys and shapes of every catalogue model in terratorch.

Dev tool, run with the reference venv (terratorch 1.2.11)::

    PYTHONPATH=.pluginpath /root/.cache/terramind-reference-venv/bin/python tools/goldens/checkpoint_layouts.py

Writes ``tests/goldens/layouts/<catalogue id>.json``. Every model is built without allocating its
weights (parameters are moved to the meta device as they are registered, because the
reference computes with CPU tensors and buffers while constructing, which a plain ``torch.device("meta")``
context would break):

- the six tokenizers, from the registry functions (``pretrained=False``): their state dict is the
  checkpoint layout (``build_vqvae`` loads the official files strictly);
- ``terramind_v1_{tiny,small,base,large}``:
  * ``backbone``: the registry's ``TerraMindViT`` with the six raw modalities;
  * ``generation``: ``*_generate`` with input S2L2A and all six image outputs (key ``sampler.model.*``;
    its ``tokenizer.*`` keys are the tokenizer layouts and are only listed by internal key);
  * ``tim``: ``*_tim`` with the six raw modalities and TiM modality LULC (chained default);
  * ``official``: the encoder–decoder ``TerraMind`` with every v1 modality embedding (raw and
    tokenized inputs, the six image outputs, coords) — the most likely key set of the released
    ``TerraMind_v1_*.pt`` files, whose exact contents could not be checked (no official file was reachable offline).

Each listing maps key → shape; ``buffers`` names the persistent buffers (pos_emb, LayerNorm bias),
``shared`` the groups of keys that name one tensor in the reference module.
"""

from __future__ import annotations

import contextlib
import json
import re
from functools import partial
from importlib.metadata import version
from pathlib import Path

import terratorch  # noqa: F401  (registers the models)
import torch
from torch import nn

torch.set_float32_matmul_precision("highest")

from terratorch.models.backbones.terramind.model import terramind_register as reg  # noqa: E402
from terratorch.models.backbones.terramind.model.modality_info import MODALITY_INFO  # noqa: E402
from terratorch.models.backbones.terramind.model.terramind import (  # noqa: E402
    TerraMind,
    build_modality_embeddings,
    build_output_modality_embeddings,
)
from terratorch.models.backbones.terramind.model.tm_utils import LayerNorm  # noqa: E402
from terratorch.models.backbones.terramind.tokenizer import tokenizer_register as tok_reg  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "goldens" / "layouts"
RAW = ["S2L2A", "S2L1C", "S2RGB", "S1GRD", "S1RTC", "DEM"]
OUTPUTS = ["S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC"]
TOKENIZERS = ["s2l2a", "s1grd", "s1rtc", "dem", "ndvi", "lulc"]
# The registry's constructor arguments (terramind_register.py) for the encoder–decoder.
SIZES = {
    "tiny": dict(dim=192, num_heads=3, encoder_depth=12, decoder_depth=4, bias=True, gated=False),
    "small": dict(dim=384, num_heads=6, encoder_depth=12, decoder_depth=6, bias=True, gated=False),
    "base": dict(dim=768, num_heads=12, encoder_depth=12, decoder_depth=12, bias=False, gated=True),
    "large": dict(dim=1024, num_heads=16, encoder_depth=24, decoder_depth=24, bias=False, gated=True),
}


@contextlib.contextmanager
def meta_weights():
    """Move every parameter to the meta device as it is registered (buffers are small and stay:
    the reference computes with some of them while constructing)."""
    reg_param = nn.Module.register_parameter

    def register_parameter(self, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        reg_param(self, name, param)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = reg_param


def listing(module: nn.Module, skip_prefix: str | None = None) -> dict:
    """Keys → shapes, persistent buffer names and shared-tensor groups of ``module``."""
    sd = module.state_dict(keep_vars=True)
    keep = [k for k in sd if not (skip_prefix and k.startswith(skip_prefix))]
    buffers = {n for n, _ in module.named_buffers(remove_duplicate=False)}
    by_id: dict[int, list[str]] = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False)):
        if name in keep:
            by_id.setdefault(id(t), []).append(name)
    return {
        "state_dict": {k: list(sd[k].shape) for k in keep},
        "buffers": sorted(k for k in keep if k in buffers),
        "shared": sorted(sorted(g) for g in by_id.values() if len(g) > 1),
        "num_tensors": len(keep),
    }


def tokenizer_layout(name: str) -> dict:
    builder = getattr(tok_reg, f"terramind_v1_tokenizer_{name}")
    with meta_weights():
        model = builder(pretrained=False)
    out = listing(model)
    out["class"] = type(model).__name__
    out["built_with"] = f"terramind_v1_tokenizer_{name}(pretrained=False)"
    return out


def official_encdec(size: str) -> TerraMind:
    a = SIZES[size]
    enc, _ = build_modality_embeddings(
        MODALITY_INFO, RAW + ["LULC", "NDVI", "coords"], cond_modalities=["S2L2A", "S1GRD", "S1RTC", "DEM"],
        img_size=224, dim=a["dim"], patch_size=16,
    )  # fmt: skip
    dec, _ = build_output_modality_embeddings(MODALITY_INFO, OUTPUTS + ["coords"], img_size=224, dim=a["dim"], patch_size=16)
    return TerraMind(
        encoder_embeddings=enc, decoder_embeddings=dec, modality_info=MODALITY_INFO, dim=a["dim"],
        encoder_depth=a["encoder_depth"], decoder_depth=a["decoder_depth"], num_heads=a["num_heads"], mlp_ratio=4,
        qkv_bias=a["bias"], proj_bias=a["bias"], mlp_bias=a["bias"], num_register_tokens=0,
        norm_layer=partial(LayerNorm, eps=1e-6, bias=False), act_layer=nn.SiLU if a["gated"] else nn.GELU,
        gated_mlp=a["gated"],
    )  # fmt: skip


def terramind_layout(size: str) -> dict:
    out = {}
    with meta_weights():
        backbone = getattr(reg, f"terramind_v1_{size}")(modalities=list(RAW), pretrained=False)
    out["backbone"] = {"modalities": RAW, "merge_method": "mean", **listing(backbone)}
    del backbone
    with meta_weights():
        build_generate = getattr(reg, f"terramind_v1_{size}_generate")
        gen = build_generate(modalities=["S2L2A"], output_modalities=list(OUTPUTS), pretrained=False)
    out["generation"] = {
        "inputs": ["S2L2A"], "outputs": OUTPUTS, "tokenizers": sorted(gen.tokenizer.keys()),
        **listing(gen, skip_prefix="tokenizer."),
    }  # fmt: skip
    del gen
    with meta_weights():
        tim = getattr(reg, f"terramind_v1_{size}_tim")(modalities=list(RAW), tim_modalities=["LULC"], pretrained=False)
    out["tim"] = {
        "modalities": RAW, "tim_modalities": ["LULC"], "tokenizers": sorted(tim.tokenizer.keys()),
        **listing(tim, skip_prefix="tokenizer."),
    }  # fmt: skip
    del tim
    with meta_weights():
        official = official_encdec(size)
    out["official"] = {"modalities": RAW + ["LULC", "NDVI", "coords"], "outputs": OUTPUTS + ["coords"], **listing(official)}
    return out


def write_json(path: Path, data: dict) -> None:
    """Indented JSON with each shape on one line (one key per line: reviewable diffs)."""
    text = json.dumps(data, indent=1)
    text = re.sub(r"\[\s+([-\d,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"reference": f"terratorch {version('terratorch')}", "torch": torch.__version__}
    for name in TOKENIZERS:
        data = {"id": f"terramind_v1_tokenizer_{name}", **meta, **tokenizer_layout(name)}
        write_json(OUT / f"{data['id']}.json", data)
    for size in SIZES:
        data = {"id": f"terramind_v1_{size}", **meta, **terramind_layout(size)}
        write_json(OUT / f"{data['id']}.json", data)
    for path in sorted(OUT.glob("*.json")):
        print(f"{path.name}: {path.stat().st_size // 1024} KiB")  # noqa: T201  (dev tool output)


if __name__ == "__main__":
    main()
