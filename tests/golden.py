"""Readers for tests/golden: databases written by the Rust tiny-lsm.

The directory is a verbatim copy of the project material ``shared/golden``
(see its README.md for how each database was made), kept in the repository
so that the tests run from any checkout.

Tests must open a copy (``copy_db``), because recovery may truncate a log.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

GOLDEN = Path(__file__).resolve().parent / "golden"

# One operation of ops.txt: ("I", key, value), ("R", key, None),
# ("B", [(key, value_or_None), ...]), ("F",), ("S", ms) or ("X",).
Op = Tuple


@dataclass
class Scenario:
    name: str
    path: Path
    key_size: int
    value_size: int
    config: Dict[str, int]
    log_bytes: int
    log_bytes_after_recover: int
    sstables: Dict[str, int]
    data: Dict[bytes, bytes]
    damaged: bool
    surviving_ops: Optional[int] = None
    ops: List[Op] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.path / "db"


def scenario_names() -> List[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "expected.txt").is_file())


def _config(words: List[str]) -> Dict[str, int]:
    return {k: int(v) for k, v in (w.split("=") for w in words)}


def load(name: str) -> Scenario:
    path = GOLDEN / name
    header: Dict[str, List[str]] = {}
    data: Dict[bytes, bytes] = {}
    sstables: Dict[str, int] = {}
    in_data = False
    for line in (path / "expected.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if in_data:
            k, v = line.split()
            data[bytes.fromhex(k)] = bytes.fromhex(v)
            continue
        words = line.split()
        if words[0] == "DATA":
            in_data = True
        elif words[0] == "FILE":
            sstables[words[1].split("/")[-1]] = int(words[2])
        else:
            header[words[0]] = words[1:]
    if len(data) != int(header["COUNT"][0]):
        raise AssertionError(f"{name}: COUNT does not match the DATA lines")
    surviving = header.get("SURVIVING_OPS")
    return Scenario(
        name=name,
        path=path,
        key_size=int(header["K"][0]),
        value_size=int(header["V"][0]),
        config=_config(header["CONFIG"]),
        log_bytes=int(header["LOG_BYTES"][0]),
        log_bytes_after_recover=int(header["LOG_BYTES_AFTER_RECOVER"][0]),
        sstables=sstables,
        data=data,
        damaged=surviving is not None,
        surviving_ops=int(surviving[0]) if surviving else None,
        ops=load_ops(path / "ops.txt"),
    )


def load_ops(path: Path) -> List[Op]:
    ops: List[Op] = []
    batch: Optional[List[Tuple[bytes, Optional[bytes]]]] = None
    want = 0
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("CONFIG"):
            continue
        words = line.split()
        if line.startswith("  "):
            if batch is None:
                raise AssertionError(f"{path}: batch item outside a batch: {line!r}")
            batch.append(_change(words))
            if len(batch) == want:
                ops.append(("B", batch))
                batch = None
            continue
        if batch is not None:
            raise AssertionError(f"{path}: batch cut short before {line!r}")
        if words[0] == "B":
            want = int(words[1])
            if want == 0:
                ops.append(("B", []))
            else:
                batch = []
        elif words[0] in ("I", "R"):
            k, v = _change(words)
            ops.append((words[0], k, v))
        elif words[0] == "S":
            ops.append(("S", int(words[1])))
        elif words[0] in ("F", "X"):
            ops.append((words[0],))
        else:
            raise AssertionError(f"{path}: unknown operation {line!r}")
    return ops


def _change(words: List[str]) -> Tuple[bytes, Optional[bytes]]:
    if words[0] == "I":
        return bytes.fromhex(words[1]), bytes.fromhex(words[2])
    return bytes.fromhex(words[1]), None


def copy_db(scenario: Union[Scenario, str], dest: Path) -> Path:
    """Copy a scenario's db/ to ``dest`` (writable) and return the copy."""
    if isinstance(scenario, str):
        scenario = load(scenario)
    target = Path(dest) / scenario.name
    shutil.copytree(scenario.db, target)
    for p in [target, *target.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return target
