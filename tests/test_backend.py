"""The backend switch and the twin pairs: one module chooses, both twins of
each pair expose the same names with the same signatures."""
from __future__ import annotations

import inspect
import os
import shutil
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
    want_pure = pure if pure is not None else _backend.recorded_pure(_PACKAGE_DIR)
    assert tinylsm.BACKEND == ("python" if want_pure else "cython")
    assert _backend.codec.__name__ == ("tinylsm._codec_py" if want_pure else "tinylsm._codec")
    assert _backend.maps.__name__ == ("tinylsm._map_py" if want_pure else "tinylsm._map")
    assert isinstance(tinylsm.Lsm.__mro__[1], type)
    assert tinylsm.Lsm.__mro__[1] is _backend.maps.StoreCore


@pytest.mark.parametrize("value,backend", [("1", "python"), ("0", "cython"), ("", "cython")])
def test_each_value_in_a_fresh_process(value, backend):
    if not _compiled_built():
        pytest.skip("the compiled modules are not built in this install")
    if value == "" and _backend.recorded_pure(_PACKAGE_DIR):
        backend = "python"
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


_PACKAGE_DIR = os.path.dirname(tinylsm.__file__)


def _copy_without_compiled(tmp_path, pure_record: bool) -> str:
    """A copy of the package's Python files (an install, or a source folder,
    without compiled modules), with or without the record of a pure build;
    returns the folder to put on ``sys.path``."""
    root = tmp_path / "site"
    shutil.copytree(_PACKAGE_DIR, root / "tinylsm",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__",
                                                  _backend.PURE_RECORD))
    _backend.record_build(str(root / "tinylsm"), pure_record)
    return str(root)


def _import_copy(tmp_path, site: str, *extra_path: str, no_site: bool = False, **env: str):
    """Import the copy in ``site`` in a fresh interpreter; ``no_site``: without
    site-packages (``-S``), so that no installed tinylsm is in sight but the
    ones on ``extra_path`` (it fails before it would need zstandard)."""
    full = child_env(**env)
    if "TINYLSM_PUREPYTHON" not in env:
        full.pop("TINYLSM_PUREPYTHON", None)
    full["PYTHONPATH"] = os.pathsep.join((site,) + extra_path)
    code = "import tinylsm; print(tinylsm.BACKEND, tinylsm.__file__)"
    flags = ["-S"] if no_site else []
    return subprocess.run([sys.executable, *flags, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))


def test_record_build_writes_and_removes_the_record(tmp_path):
    _backend.record_build(str(tmp_path), True)
    assert _backend.recorded_pure(str(tmp_path))
    _backend.record_build(str(tmp_path), True)  # again: still one record
    assert _backend.recorded_pure(str(tmp_path))
    _backend.record_build(str(tmp_path), False)
    assert not _backend.recorded_pure(str(tmp_path))
    _backend.record_build(str(tmp_path), False)  # nothing to remove: fine
    assert os.listdir(tmp_path) == []


def test_a_pure_build_runs_pure_without_the_variable(tmp_path):
    site = _copy_without_compiled(tmp_path, pure_record=True)
    run = _import_copy(tmp_path, site)
    assert run.returncode == 0, run.stderr
    backend, path = run.stdout.split()
    assert backend == "python" and path.startswith(site)


def test_a_pure_build_still_obeys_zero(tmp_path):
    site = _copy_without_compiled(tmp_path, pure_record=True)
    run = _import_copy(tmp_path, site, no_site=True, TINYLSM_PUREPYTHON="0")
    assert run.returncode != 0
    assert "TINYLSM_PUREPYTHON=0 asks for it" in run.stderr
    assert os.path.join(site, "tinylsm") in run.stderr


def test_one_value_forces_the_twins_in_a_build_without_record(tmp_path):
    site = _copy_without_compiled(tmp_path, pure_record=False)
    run = _import_copy(tmp_path, site, TINYLSM_PUREPYTHON="1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "python"


def test_a_build_that_meant_to_compile_fails_loudly_naming_the_folder(tmp_path):
    site = _copy_without_compiled(tmp_path, pure_record=False)
    run = _import_copy(tmp_path, site, no_site=True)
    assert run.returncode != 0
    message = run.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: tinylsm's compiled module tinylsm._codec "
                              f"is not built in {os.path.join(site, 'tinylsm')}")
    assert "pip install -e ." in message and "TINYLSM_PUREPYTHON=1 pip install ." in message


def test_a_source_folder_shadowing_an_install_says_so(tmp_path):
    # the folder first on sys.path lacks compiled modules; another tinylsm
    # (this one) comes later on the path, as an installed copy would
    site = _copy_without_compiled(tmp_path, pure_record=False)
    run = _import_copy(tmp_path, site, os.path.dirname(_PACKAGE_DIR), no_site=True)
    assert run.returncode != 0
    message = run.stderr.strip().splitlines()[-1]
    assert "looks like a source folder shadowing the tinylsm installed in " \
        f"{_PACKAGE_DIR}" in message
    assert "`pytest` rather than `python -m pytest`" in message
