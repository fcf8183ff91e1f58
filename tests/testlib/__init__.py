"""What the tests share: paths, tolerances, rasters, progress doubles, the HF cache, checkpoints, tasks.

Importable from every test folder as ``testlib`` (``tests/`` is on ``sys.path`` through its
conftest.py). One helper per need, here and nowhere else.
"""
