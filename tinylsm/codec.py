"""The codec in use: the compiled one, or the pure-Python twin on request.

``TINYLSM_PUREPYTHON=1`` in the environment at import time selects the
pure-Python twin.  Otherwise the compiled module is required: a missing
extension raises ``ImportError`` instead of falling back silently, because
a silent fallback ships the slow path without anyone knowing.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

PUREPYTHON = os.environ.get("TINYLSM_PUREPYTHON", "") not in ("", "0")


def load_compiled(module: str, what: str) -> ModuleType:
    """Import compiled ``tinylsm.<module>``, or fail saying what to do."""
    try:
        return importlib.import_module(f"tinylsm.{module}")
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError(
            f"tinylsm's compiled {what} (tinylsm.{module}) is not built: "
            "reinstall with a C compiler (pip install .), or set "
            f"TINYLSM_PUREPYTHON=1 to use the slower pure-Python {what} on purpose"
        ) from exc


if TYPE_CHECKING or PUREPYTHON:
    from . import _codec_py as impl
else:
    impl = load_compiled("_codec", "codec")

#: ``"cython"`` or ``"python"``: which codec this process loaded.
BACKEND = "python" if impl.__name__.endswith("_codec_py") else "cython"

frame_size = impl.frame_size
record_size = impl.record_size
crc = impl.crc
batch_crc = impl.batch_crc
encode_frame = impl.encode_frame
encode_log = impl.encode_log
scan_log = impl.scan_log
frame_records = impl.frame_records
pack_records = impl.pack_records
unpack_records = impl.unpack_records
encode_sstable = impl.encode_sstable
decode_sstable = impl.decode_sstable
sort_records = impl.sort_records
merge_runs = impl.merge_runs

__all__ = [
    "BACKEND",
    "frame_size",
    "record_size",
    "crc",
    "batch_crc",
    "encode_frame",
    "encode_log",
    "scan_log",
    "frame_records",
    "pack_records",
    "unpack_records",
    "encode_sstable",
    "decode_sstable",
    "sort_records",
    "merge_runs",
]
