"""A measured trial, not a product path: the DiVAE UNet on ONNX Runtime (CPU) against torch.

The UNet of the S1GRD tokenizer is exported as the plugin's ONNX backend exports it
(``models/backends/onnx_graphs.py`` ``DenoiserGraph``, TorchScript exporter, opset 17) and run by
onnxruntime's CPU execution provider with every graph optimisation (its NCHWc convolution layout
included), on the same batch of 224² tiles as torch fp32; ``bench_generation.py`` runs it as part
(f). Generation keeps torch unless this trial shows onnxruntime faster.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchlib import best_time

OPSET = 17


def trial(tok, batch: int, threads: int) -> dict:
    """Seconds per UNet call (``batch`` tiles) for torch fp32 and onnxruntime, and their deviation."""
    import onnxruntime as ort
    import torch

    from terramind_qgis.models.backends.onnx_graphs import DenoiserGraph

    graph = DenoiserGraph(tok).eval()
    torch.manual_seed(0)
    sample = torch.randn(batch, tok.n_channels, 224, 224)
    timestep = torch.tensor([999], dtype=torch.int64)
    quant = torch.randn(batch, tok.latent_dim, 14, 14)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet.onnx"
        t = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(graph, (sample, timestep, quant), str(path), input_names=["sample", "timestep", "quant"],
                              output_names=["x0"], dynamic_axes={"sample": {0: "B"}, "quant": {0: "B"}, "x0": {0: "B"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)  # fmt: skip
        export_s = time.perf_counter() - t
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        feeds = {"sample": sample.numpy(), "timestep": timestep.numpy(), "quant": quant.numpy()}
        with torch.no_grad():
            ours = graph(sample, timestep, quant)
            torch_s = best_time(lambda: graph(sample, timestep, quant))
        ort_s = best_time(lambda: session.run(None, feeds))
        dev = float((torch.from_numpy(session.run(None, feeds)[0]) - ours).abs().max() / ours.abs().max())
    return {"batch": batch, "threads": threads, "onnxruntime": ort.__version__, "export_s": round(export_s, 1),
            "torch_fp32_s": round(torch_s, 3), "onnxruntime_fp32_s": round(ort_s, 3),
            "onnxruntime_speedup": round(torch_s / ort_s, 2), "max_rel_dev": float(f"{dev:.2g}")}  # fmt: skip
