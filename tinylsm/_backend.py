"""The one place that chooses the compiled modules or their pure-Python twins.

Each accelerated piece is a twin pair: ``_codec.pyx`` / ``_codec_py.py`` (log
and sstable encoding) and ``_map.pyx`` / ``_map_py.py`` (the sorted map and
the store's hot paths).  ``TINYLSM_PUREPYTHON`` decides, at build time (see
``setup.py``, which reads ``switch`` from this file) and at import time:

* ``1``: the pure-Python twins (nothing is compiled at build time);
* ``0``: the compiled modules, which must be built;
* unset (or empty): what was installed: the compiled modules if they were
  built, the twins if the package was installed with ``TINYLSM_PUREPYTHON=1``
  (no compiled module at all);
* anything else is an error that says so.

A compiled module that exists but fails to import is an ``ImportError``,
never a silent fallback: a silent fallback ships the slow path without
anyone knowing (msgpack-python's issue #481).

This module imports nothing from the package, so that ``setup.py`` can load
it on its own.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Mapping, Optional

VARIABLE = "TINYLSM_PUREPYTHON"
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


def _load(compiled: str, pure: Optional[bool]) -> ModuleType:
    name = f"{__package__}.{compiled}"
    if pure:
        return importlib.import_module(f"{__package__}.{PAIRS[compiled]}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if pure is None and exc.name == name:
            # never built: the package was installed pure on purpose (a failed
            # compile fails the install, see setup.py)
            return importlib.import_module(f"{__package__}.{PAIRS[compiled]}")
        raise ImportError(
            f"tinylsm's compiled module {name} is not built (looked in "
            f"{os.path.dirname(__file__)}): reinstall with a C compiler "
            f"(pip install .), or set {VARIABLE}=1 to use the slower pure-Python "
            "twins on purpose") from exc


if TYPE_CHECKING:  # types come from the real code of the twins
    from . import _codec_py as codec
    from . import _map_py as maps

    BACKEND: str
elif __package__:  # not when setup.py loads this file on its own
    _pure = switch(os.environ)
    codec = _load("_codec", _pure)
    maps = _load("_map", _pure if _pure is not None else codec.__name__.endswith("_py"))

    #: ``"cython"`` or ``"python"``: which modules this process loaded.
    BACKEND = "python" if codec.__name__.endswith("_py") else "cython"

__all__ = ["BACKEND", "codec", "maps", "switch"]
