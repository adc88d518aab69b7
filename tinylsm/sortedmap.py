"""The in-memory sorted map in use: compiled, or the pure-Python twin.

Chosen by the same switch as the codec (``TINYLSM_PUREPYTHON=1``), and with
the same rule: a missing extension is an ``ImportError``, never a silent
fallback.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import PUREPYTHON

if TYPE_CHECKING or PUREPYTHON:
    from ._sortedmap_py import SortedMap, StoreCore
else:
    try:
        from ._map import SortedMap, StoreCore  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError(
            "tinylsm's compiled map (tinylsm._map) is not built: reinstall with "
            "a C compiler (pip install .), or set TINYLSM_PUREPYTHON=1 to use "
            "the slower pure-Python map on purpose"
        ) from exc

__all__ = ["SortedMap", "StoreCore"]
