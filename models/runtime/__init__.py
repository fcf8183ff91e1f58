"""The runtime seam: numpy in, numpy out, whichever engine runs the model.

A job picks its backend once (``backend.choose_backend``: torch, or ONNX Runtime for exported
graphs) and its device (``device``); the worker's tasks then talk only to these wrappers:

- ``segmenter``: ``logits(raw inputs, seed) -> (B, K, T, T)`` of a fine-tuned segmentation model;
- ``tokenizer``: ``tokenize(standardised image) -> ids`` and ``decode_tokens(ids, size, steps, noise)``;
- ``generator``: TerraMind any-to-any generation (torch only).

Each wrapper carries ``info`` (``RuntimeInfo``: model id, revision, weights provenance) for the
outputs' metadata. Seeds come from ``models/core/seeds.py``. Nothing here imports the worker.
"""
