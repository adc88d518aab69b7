"""Helpers every test module shares: a directory's snapshot, and the
environment of a child Python process that imports the tinylsm under test."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, Union

import tinylsm

#: The checkout's root (the directory holding ``tinylsm/`` and ``tests/``).
REPO = Path(__file__).resolve().parent.parent
#: The folder this process imported ``tinylsm`` from: the checkout after an
#: editable install, site-packages when the tests of an unpacked sdist run
#: against an installed wheel (whose source folder lacks compiled modules).
IMPORTED_FROM = Path(tinylsm.__file__).resolve().parent.parent


def snapshot(path: Union[str, "os.PathLike[str]"], mtimes: bool = False) -> Dict[str, object]:
    """Everything under ``path``, to prove that nothing changed.

    Regular files map to their bytes, directories to ``b""`` (their names end
    in ``/``), anything else (a FIFO, a socket, a link) to its kind; it never
    opens anything but a regular file, so a FIFO cannot block it.  With
    ``mtimes`` every value is ``(value, mtime_ns)``, ``path`` itself included.
    """
    root = os.fspath(path)
    out: Dict[str, object] = {}
    if mtimes:
        out["./"] = (b"", os.lstat(root).st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISREG(st.st_mode):
                value: object = Path(full).read_bytes()
            elif stat.S_ISDIR(st.st_mode):
                rel, value = rel + "/", b""
            else:
                value = stat.filemode(st.st_mode)[0]
            out[rel] = (value, st.st_mtime_ns) if mtimes else value
    return out


def child_env(**overrides: str) -> Dict[str, str]:
    """``os.environ`` for a child interpreter that imports the same tinylsm
    as this process: its folder is put before (never instead of) an
    inherited PYTHONPATH."""
    env = dict(os.environ)
    env.update(overrides)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(IMPORTED_FROM), env.get("PYTHONPATH")]))
    return env
