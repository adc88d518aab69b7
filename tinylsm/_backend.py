"""The one place that chooses the compiled modules or their pure-Python twins.

Each accelerated piece is a twin pair: ``_codec.pyx`` / ``_codec_py.py`` (log
and sstable encoding) and ``_map.pyx`` / ``_map_py.py`` (the sorted map and
the store's hot paths).  ``TINYLSM_PUREPYTHON`` decides, at build time (see
``setup.py``, which reads ``switch`` from this file) and at import time:

* ``1``: the pure-Python twins (nothing is compiled at build time);
* ``0``: the compiled modules, which must be built;
* unset (or empty): what was installed.  ``setup.py`` records a pure
  install by writing the module ``_pure_build.py`` beside this one (and
  deletes it when it compiles), so a package installed with
  ``TINYLSM_PUREPYTHON=1`` runs pure without the variable, while one that
  meant to compile and lacks its compiled modules is an error;
* anything else is an error that says so.

A compiled module that is missing or fails to import is an ``ImportError``
that names the folder it was looked for in and the likely cause, never a
silent fallback: a silent fallback ships the slow path without anyone
knowing (msgpack-python's issue #481).

This module imports nothing from the package, so that ``setup.py`` can load
it on its own.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Mapping, Optional

VARIABLE = "TINYLSM_PUREPYTHON"
#: The module ``setup.py`` writes into a pure build (see ``record_build``).
PURE_RECORD = "_pure_build.py"
#: The twin pairs: compiled module -> pure-Python module.
PAIRS = {"_codec": "_codec_py", "_map": "_map_py"}


def switch(environ: Mapping[str, str]) -> Optional[bool]:
    """``TINYLSM_PUREPYTHON`` parsed strictly: True (pure), False (compiled)
    or None (unset: what was installed)."""
    value = environ.get(VARIABLE, "")
    if value == "":
        return None
    if value in ("0", "1"):
        return value == "1"
    raise ImportError(
        f"{VARIABLE}={value!r}: expected 1 (the pure-Python twins), 0 (the compiled "
        "modules) or unset (what was installed)")


def recorded_pure(package_dir: str) -> bool:
    """Whether the package in ``package_dir`` was built pure on purpose."""
    return os.path.exists(os.path.join(package_dir, PURE_RECORD))


def record_build(package_dir: str, pure: bool) -> None:
    """Record, for the package in ``package_dir``, whether it is built pure
    (``setup.py`` calls this before it builds)."""
    path = os.path.join(package_dir, PURE_RECORD)
    if not pure:
        if os.path.exists(path):
            os.unlink(path)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write('"""Written by setup.py: this copy of tinylsm was built with '
                f'{VARIABLE}=1,\nso it uses the pure-Python twins unless '
                f'{VARIABLE}=0 says otherwise."""\n')


def _installed_elsewhere(package_dir: str) -> Optional[str]:
    """Another ``tinylsm`` on ``sys.path`` than the one in ``package_dir``
    (a source folder shadowing an installed copy), if there is one."""
    here = os.path.realpath(package_dir)
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "tinylsm", "__init__.py")
        if os.path.exists(candidate) and os.path.realpath(os.path.dirname(candidate)) != here:
            return os.path.dirname(candidate)
    return None


def missing_message(name: str, package_dir: str, asked: bool) -> str:
    """What to say when the compiled module ``name`` is not in ``package_dir``."""
    head = (f"tinylsm's compiled module {name} is not built in {package_dir}"
            + (f" ({VARIABLE}=0 asks for it)" if asked else ""))
    other = _installed_elsewhere(package_dir)
    if other is not None:
        return (f"{head}. That folder looks like a source folder shadowing the tinylsm "
                f"installed in {other}: run from another folder, or run the tests with "
                "`pytest` rather than `python -m pytest` (which puts the current folder "
                f"first), or build in place with `pip install -e .`")
    return (f"{head}. If this is a source folder, build it with `pip install -e .` "
            f"(needs a C compiler), or install without compiling with "
            f"`{VARIABLE}=1 pip install .`; if it is an install, reinstall it")


def _load(compiled: str, pure: bool, asked: bool) -> ModuleType:
    name = f"{__package__}.{compiled}"
    if pure:
        return importlib.import_module(f"{__package__}.{PAIRS[compiled]}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise ImportError(missing_message(name, os.path.dirname(__file__), asked)) from exc


if TYPE_CHECKING:  # types come from the real code of the twins
    from . import _codec_py as codec
    from . import _map_py as maps

    BACKEND: str
elif __package__:  # not when setup.py loads this file on its own
    _asked = switch(os.environ)
    _pure = _asked if _asked is not None else recorded_pure(os.path.dirname(__file__))
    codec = _load("_codec", _pure, _asked is False)
    maps = _load("_map", _pure, _asked is False)

    #: ``"cython"`` or ``"python"``: which modules this process loaded.
    BACKEND = "python" if codec.__name__.endswith("_py") else "cython"

__all__ = ["BACKEND", "codec", "maps", "record_build", "recorded_pure", "switch"]
