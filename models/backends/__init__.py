"""Alternative inference backends: ONNX Runtime instead of PyTorch.

- ``onnx_card``: the model card embedded in every exported ``.onnx`` file, and a reader of an
  ONNX file's metadata that needs neither onnx nor onnxruntime (torch-free, numpy-free);
- ``onnx_export``: export a fine-tuned segmentation model or a tokenizer (needs torch + onnx),
  command line ``python -m <plugin>.models.backends.onnx_export``; its torch wrappers are in
  ``onnx_graphs``;
- ``onnx_session``: ONNX Runtime sessions (lazy import, execution-provider choice, card checks);
- ``onnx_ddim``: the DiVAE DDIM schedule and step in numpy;
- ``onnx_runtime``: ``OnnxSegmentationModel`` and ``OnnxTokenizer``, numpy in / numpy out, no torch;
- ``tasks``: the worker's predict functions for the ONNX backend.

Import the submodules directly; this ``__init__`` imports nothing.
"""
