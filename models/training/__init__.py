"""Fine-tuning TerraMind on the user's own labels, TerraTorch-compatible both ways (issue 11).

Torch-free: ``split`` (chip windows, spatial-block splits), ``recipe`` (the run's typed config with
IBM's defaults), ``plan`` (recipe + dataset → TerraTorch task/data arguments and the model config).
``dataset`` (writer/reader of the TerraTorch ``GenericMultiModalDataModule`` layout) needs numpy
and rasterio. Everything else imports torch: ``chip_dataset`` (the torch Dataset), ``augment``
(D4), ``losses``, ``metrics``, ``network`` (the trainable model and its encode/decode split),
``features`` (frozen-backbone cache), ``step`` (train/val step), ``trainer`` (the loop), ``export``
(Lightning checkpoint, TerraTorch YAML, model card), ``history``/``curve_png`` (CSV and PNG).
Import the submodules directly; this ``__init__`` imports nothing.
"""
