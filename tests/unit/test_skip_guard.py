"""The skip guard (testlib/skip_guard.py) turns a skipped test into a failed run, e.g. a QGIS test
module that skips because a project file it needs moved — unless the test is marked ``may_skip``."""

from __future__ import annotations

from testlib.paths import TESTS

CONFTEST = f"import sys; sys.path.insert(0, {str(TESTS)!r}); pytest_plugins = ['testlib.skip_guard']\n"


def test_a_module_skipped_for_a_missing_file_fails_the_run(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_end_to_end="""
        import os, pytest
        pytestmark = pytest.mark.skipif(not os.path.exists("models/build.py"), reason="not there yet")

        def test_runs():
            assert True
        """)  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pytest_qgis")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*skipped tests fail this run*", "*test_end_to_end.py::test_runs*"])


def test_a_marked_skip_and_a_green_run_pass(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gpu="""
        import pytest

        @pytest.mark.may_skip("needs a GPU")
        def test_cuda():
            pytest.skip("no CUDA here")

        def test_cpu():
            assert 1 + 1 == 2
        """)  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pytest_qgis")
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=1)
