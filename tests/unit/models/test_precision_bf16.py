"""bf16 on the CPU: the CPU's native bf16 support named in the info message, and the diffusion UNets'
weights cast once at load (models/runtime/device.py ``cpu_bf16_support``, ``prepare_decoders``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramind_qgis.models.core.configs import TokenizerConfig
from terramind_qgis.models.runtime.device import cpu_bf16_support, cpu_precision_text, prepare_decoders, select_device
from terramind_qgis.models.runtime.tokenizer import TorchTokenizer
from terramind_qgis.models.tokenizers import build_tokenizer
from terramind_qgis.models.tokenizers.unet import GroupNorm32
from terramind_qgis.models.weights.untrained import fill_module_

SMALL = dict(enc_dim=64, enc_depth=2, enc_heads=2, dec_dim=64, dec_depth=2, dec_heads=2, unet_channels=32,
             unet_res_blocks=1)  # fmt: skip
CFG = TokenizerConfig(kind="divae", in_channels=2, **SMALL)
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN3 = "flags\t\t: fpu sse2 avx2 fma\n"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def divae():
    return fill_module_(build_tokenizer(CFG)).eval()


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_bf16_support(ZEN4) == "AVX512-BF16"
    assert cpu_bf16_support(SAPPHIRE) == "AMX-BF16"
    assert cpu_bf16_support(ZEN3) is None
    assert cpu_bf16_support("") is None


def test_the_info_message_states_the_precision_used() -> None:
    assert cpu_precision_text("fp32", "AVX512-BF16") == "fp32"
    assert cpu_precision_text("bf16", "AVX512-BF16") == "bf16 (autocast; the CPU has AVX512-BF16)"
    assert "emulated and usually slower than fp32" in cpu_precision_text("bf16", None)
    choice = select_device("cpu", "bf16")
    assert choice.facts["bf16_native"] == cpu_bf16_support()
    assert choice.description.endswith(cpu_precision_text("bf16", cpu_bf16_support()))
    assert select_device("cpu").description.endswith("precision fp32")


def test_prepared_unet_weights_change_nothing_under_autocast() -> None:
    """Casting the UNet once stays within bf16 rounding of per-call autocast casts; fp32 is left alone.

    Not bit-identical: with bf16 weights oneDNN picks other kernels (another accumulation order), and
    the UNet's ~50 layers turn that into a few bf16 ulps — as large as the bf16-vs-fp32 deviation."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, 64, 64)).astype(np.float32))
    plain, prepared = divae(), divae()
    assert prepare_decoders(plain, select_device("cpu")) == 0  # fp32: nothing cast
    assert plain.decoder.input_blocks[0][0].weight.dtype == torch.float32
    choice = select_device("cpu", "bf16")
    assert prepare_decoders(prepared, choice) == 1
    assert prepared.decoder.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert prepared.encoder.blocks[0].attn.qkv.weight.dtype == torch.float32  # the encoder keeps its weights
    assert all(m.weight.dtype == torch.float32 for m in prepared.decoder.modules() if isinstance(m, GroupNorm32))
    with torch.inference_mode(), choice.autocast():
        tokens = plain.tokenize(x)
        ref = plain.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(0))
        out = prepared.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        fp32 = plain.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.equal(out, fp32)  # bf16 really ran
    assert float((out - fp32).abs().mean()) < 0.03 and float((ref - fp32).abs().mean()) < 0.03  # in [-1, 1] units
    assert float((out - ref).abs().mean()) < 0.03


def test_the_torch_tokenizer_prepares_its_decoder_once() -> None:
    from terramind_qgis.models.core.catalogue import get

    tok = divae()
    tok.weights_source, tok.untrained = {"model": "untrained"}, True  # what models/build.py sets on load
    TorchTokenizer(tok, select_device("cpu", "bf16"), get("terramind_v1_tokenizer_s1grd"))
    assert tok.decoder.out[2].weight.dtype == torch.bfloat16
