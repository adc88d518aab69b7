"""The examples in the package's docstrings run, and give what they show."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinylsm

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(tinylsm.__path__, "tinylsm.")
    if m.name != "tinylsm.__main__"
)


@pytest.mark.parametrize("name", ["tinylsm"] + MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # a compiled twin not built in a pure install
        pytest.skip(f"{name}: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_there_are_examples():
    attempted = sum(doctest.testmod(importlib.import_module(name)).attempted
                    for name in ["tinylsm", "tinylsm.lsm"])
    assert attempted >= 10
