"""A measured trial, not a product path: Winograd F(2x2, 3x3) for the UNet's 3x3 convolutions.

Winograd F(2,3) needs 16 multiplications per 2x2 output block and input channel instead of 36
(2.25x fewer FLOPs), paid for with an input and an output transform. Here the transforms are plain
torch ops on channels-last (NHWC) tensors and the 16 products one ``torch.bmm``; it is compared with
the direct convolution (NCHW and channels-last) on the UNet's dominant shapes, per precision, with
its error against a float64 convolution. ``bench_generation.py`` runs it as part (e); the worker
keeps direct convolutions unless this trial shows Winograd winning.

Dimensions: N batch, C input channels, K output channels, H = W feature map, T = N*(H/2)*(W/2) tiles.
"""

from __future__ import annotations

from functools import partial

from benchlib import best_time

SHAPES = ((256, 56), (512, 28), (512, 14))  # (channels, feature map) of the S1GRD UNet on 224² tiles


def weight_transform(w, dtype):
    """``G g G^T`` of conv weights ``(K, C, 3, 3)`` → ``(16, C, K)``."""
    import torch

    g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    u = torch.einsum("ij,kcjl,ml->imck", g, w.double(), g)  # (4, 4, C, K)
    return u.reshape(16, w.shape[1], w.shape[0]).contiguous().to(dtype)


def winograd_conv(x, u, bias):
    """3x3 convolution, padding 1, of ``x (N, H, W, C)`` (H, W even) with ``u`` from weight_transform."""
    import torch
    import torch.nn.functional as F

    n, h, w, c = x.shape
    th, tw, k = h // 2, w // 2, u.shape[2]
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    r = [xp[:, i : i + 2 * th : 2] for i in range(4)]  # rows of every 4x4 input tile
    rows = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]  # B^T d
    v = x.new_empty(16, n, th, tw, c)
    for i, t in enumerate(rows):  # (B^T d) B
        col = [t[:, :, j : j + 2 * tw : 2] for j in range(4)]
        torch.sub(col[0], col[2], out=v[4 * i])
        torch.add(col[1], col[2], out=v[4 * i + 1])
        torch.sub(col[2], col[1], out=v[4 * i + 2])
        torch.sub(col[1], col[3], out=v[4 * i + 3])
    m = torch.bmm(v.view(16, n * th * tw, c), u).view(4, 4, n, th, tw, k)  # (16, T, K) products
    y = x.new_empty(n, th, 2, tw, 2, k)
    for a, s in enumerate((m[0] + m[1] + m[2], m[1] - m[2] - m[3])):  # A^T m A
        torch.add(s[0] + s[1], s[2], out=y[:, :, a, :, 0])
        torch.sub(s[1] - s[2], s[3], out=y[:, :, a, :, 1])
    return y.view(n, h, w, k) + bias


def same(y):
    return y


def nhwc_to_nchw(y):
    return y.permute(0, 3, 1, 2)


def trial(batch: int = 4) -> dict:
    """Per precision and shape: GFLOP/s (direct FLOPs / time) of direct NCHW, direct channels-last and
    Winograd, and the max error of each relative to the float64 result's max magnitude."""
    import torch
    import torch.nn.functional as F

    out: dict = {"batch": batch, "shapes": {}}
    torch.manual_seed(0)
    with torch.no_grad():
        for channels, size in SHAPES:
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
            x = torch.randn(batch, channels, size, size)
            exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
            scale = float(exact.abs().max())
            flop = 2 * batch * size * size * channels * channels * 9
            row: dict = {}
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                nchw = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(dtype)
                nchw.load_state_dict(conv.state_dict())
                cl = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(dtype)
                cl.load_state_dict(conv.state_dict())
                cl = cl.to(memory_format=torch.channels_last)
                xn, xc = x.to(dtype), x.to(dtype).contiguous(memory_format=torch.channels_last)
                xh, u, b = xc.permute(0, 2, 3, 1), weight_transform(conv.weight, dtype), conv.bias.to(dtype)
                runs = {"direct_nchw": (partial(nchw, xn), same),
                        "direct_channels_last": (partial(cl, xc), same),
                        "winograd_f23": (partial(winograd_conv, xh, u, b), nhwc_to_nchw)}  # fmt: skip
                row[name] = {}
                for run, (fn, as_nchw) in runs.items():
                    seconds = best_time(fn)
                    err = float((as_nchw(fn()).double() - exact).abs().max()) / scale
                    row[name][run] = {"gflops": round(flop / seconds / 1e9, 1), "ms": round(seconds * 1e3, 1),
                                      "max_rel_error": float(f"{err:.2g}")}  # fmt: skip
            out["shapes"][f"{channels}ch_{size}px"] = row
    return out
