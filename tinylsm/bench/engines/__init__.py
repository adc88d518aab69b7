"""The engine adapters, one module each, by the name ``--engines`` knows
them by (see ``base.py`` for what an engine is)."""
from __future__ import annotations

from typing import Dict, Type

from .base import Engine
from .dict_engine import DictEngine
from .disk_engine import DiskEngine
from .lmdb_engine import LmdbEngine
from .sqlite_engine import SqliteEngine
from .tinylsm_engine import TinyLsmEngine

#: name -> class, in the order of the table's columns (tinylsm first).
ENGINE_CLASSES: Dict[str, Type[Engine]] = {
    "tinylsm": TinyLsmEngine, "dict": DictEngine, "sqlite3": SqliteEngine,
    "lmdb": LmdbEngine, "disk": DiskEngine,
}

ENGINES = tuple(ENGINE_CLASSES)

__all__ = ["ENGINES", "ENGINE_CLASSES", "DictEngine", "DiskEngine", "Engine", "LmdbEngine",
           "SqliteEngine", "TinyLsmEngine"]
