"""The in-memory sorted map in use: compiled, or the pure-Python twin.

Chosen by the same switch as the codec (``TINYLSM_PUREPYTHON=1``), and with
the same rule: a missing extension is an ``ImportError``, never a silent
fallback.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import PUREPYTHON, load_compiled

if TYPE_CHECKING or PUREPYTHON:
    from ._sortedmap_py import SortedMap, StoreCore
else:
    _impl = load_compiled("_map", "map")
    SortedMap, StoreCore = _impl.SortedMap, _impl.StoreCore

__all__ = ["SortedMap", "StoreCore"]
