"""The backend switch and the twin pairs: one module chooses, both twins of
each pair expose the same names with the same signatures."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

import tinylsm
from tinylsm import _backend

from conftest import load_twin
from helpers import child_env



def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout."""
    full = child_env(**env)
    if "TINYLSM_PUREPYTHON" not in env:
        full.pop("TINYLSM_PUREPYTHON", None)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("value,expected", [("", None), ("0", False), ("1", True)])
def test_switch_values(value, expected):
    assert _backend.switch({"TINYLSM_PUREPYTHON": value}) is expected
    assert _backend.switch({}) is None


@pytest.mark.parametrize("value", ["false", "true", "yes", " 1", "2", "on"])
def test_switch_refuses_anything_else(value):
    with pytest.raises(ImportError, match=r"expected 1 .* 0 .* or unset"):
        _backend.switch({"TINYLSM_PUREPYTHON": value})
    run = _python("import tinylsm", TINYLSM_PUREPYTHON=value)
    assert run.returncode != 0 and "expected 1 (the pure-Python twins)" in run.stderr


def test_loaded_modules_follow_the_switch():
    pure = _backend.switch(os.environ)
    compiled_built = _compiled_built()
    want_pure = pure if pure is not None else not compiled_built
    assert tinylsm.BACKEND == ("python" if want_pure else "cython")
    assert _backend.codec.__name__ == ("tinylsm._codec_py" if want_pure else "tinylsm._codec")
    assert _backend.maps.__name__ == ("tinylsm._map_py" if want_pure else "tinylsm._map")
    assert isinstance(tinylsm.Lsm.__mro__[1], type)
    assert tinylsm.Lsm.__mro__[1] is _backend.maps.StoreCore


@pytest.mark.parametrize("value,backend", [("1", "python"), ("0", "cython"), ("", "cython")])
def test_each_value_in_a_fresh_process(value, backend):
    if backend == "cython" and not _compiled_built():
        pytest.skip("the compiled modules are not built in this install")
    run = _python("import tinylsm; print(tinylsm.BACKEND)", TINYLSM_PUREPYTHON=value)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == backend


def _compiled_built() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(f"tinylsm.{m}") is not None for m in _backend.PAIRS)


# -- the twin pairs ------------------------------------------------------------------


def _params(fn):
    """Parameter names, kinds and defaults (annotations aside; the ``self``
    of a C slot is positional-only where Python's is not)."""
    return [(p.name, p.kind if p.name != "self" else None, p.default)
            for p in inspect.signature(fn).parameters.values()]


def _public(obj):
    return sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n)))


def test_codec_twins_have_the_same_functions_and_signatures():
    compiled, python = load_twin("_codec", "cython"), load_twin("_codec", "python")
    names = [n for n in _public(python) if inspect.isfunction(getattr(python, n))
             and getattr(python, n).__module__ == python.__name__]
    assert len(names) >= 15
    for name in names:
        assert _params(getattr(compiled, name)) == _params(getattr(python, name)), name


@pytest.mark.parametrize("cls", ["SortedMap", "StoreCore"])
def test_map_twins_have_the_same_methods_and_signatures(cls):
    compiled = getattr(load_twin("_map", "cython"), cls)
    python = getattr(load_twin("_map", "python"), cls)
    special = ["__len__", "__contains__", "__getitem__", "__setitem__", "__delitem__",
               "_attach", "_set_fast_cap", "_slow_insert", "_slow_remove",
               "_slow_insert_if_absent", "_invalidate", "_check"]
    names = _public(python) + [n for n in special if hasattr(python, n)]
    assert _public(compiled) == _public(python)
    for name in names:
        c, p = getattr(compiled, name), getattr(python, name)
        try:
            want = _params(p)
        except ValueError:  # a slot wrapper of object: nothing to compare
            continue
        got = _params(c)
        if name.startswith("__"):  # C slots take positional-only arguments
            got, want = [(n, d) for n, _, d in got], [(n, d) for n, _, d in want]
        assert got == want, f"{cls}.{name}"


_HIDE_COMPILED = """
import sys
class Hide:
    # an install that built nothing: the compiled modules are not there
    def find_spec(self, name, path=None, target=None):
        if name in ("tinylsm._codec", "tinylsm._map"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
"""


def test_unset_means_the_twins_when_nothing_was_built():
    run = _python(_HIDE_COMPILED + "import tinylsm; print(tinylsm.BACKEND)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "python"


def test_zero_demands_the_compiled_modules():
    run = _python(_HIDE_COMPILED + "import tinylsm", TINYLSM_PUREPYTHON="0")
    assert run.returncode != 0
    assert "tinylsm._codec is not built (looked in" in run.stderr
    assert "TINYLSM_PUREPYTHON=1" in run.stderr
