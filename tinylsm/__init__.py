"""tinylsm: an embedded, crash-safe LSM store for fixed-size keys and values.

It keeps every key in memory as a sorted map, logs each change to a
checksummed write-ahead log, and reads and writes the on-disk format of the
Rust crate ``tiny-lsm``.  ``BACKEND`` names the codec loaded: ``"cython"``,
or ``"python"`` when ``TINYLSM_PUREPYTHON=1`` asks for the pure-Python twin.

>>> import tinylsm, tempfile, os
>>> with tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=4, value_size=2) as db:
...     db[b"abcd"] = b"xy"
...     db.flush()
...     print(db[b"abcd"], len(db))
b'xy' 1
"""
from ._backend import BACKEND
from ._types import Buffer
from .config import Config, Stats
from .errors import (
    ClosedError,
    CompactionError,
    CorruptionError,
    Error,
    LockedError,
    LogFailedError,
    ReadOnlyError,
)
from .lsm import Lsm, open

__version__ = "0.1.0"

__all__ = [
    "BACKEND",
    "Buffer",
    "ClosedError",
    "CompactionError",
    "Config",
    "CorruptionError",
    "Error",
    "LockedError",
    "LogFailedError",
    "Lsm",
    "ReadOnlyError",
    "Stats",
    "__version__",
    "open",
]
