"""Real kills: SIGKILL a writer process at random moments, again and again.

``kill_writer.py`` announces every operation before it issues it and every
acknowledged flush after it returns.  After each kill the store is reopened
here and must hold exactly the model after some prefix of the announced
operations that contains every acknowledged one (a batch counts whole).  The
next writer then goes on from that state, so the kills pile up on one store
through sstable flushes and background merges.

CI runs ``KILLS_CI`` kills; ``TINYLSM_TORTURE=N`` runs N.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import tinylsm
from helpers import child_env
from faults import report

HERE = Path(__file__).resolve().parent
WRITER = HERE / "kill_writer.py"
REPO = HERE.parent
KILLS_CI = 50
K, V = 8, 10


def _kills() -> int:
    return int(os.environ.get("TINYLSM_TORTURE", "0") or 0) or KILLS_CI


def _parse(out: bytes) -> Tuple[List[tuple], int]:
    """The operations announced (whole lines only) and how many were acked."""
    ops: List[tuple] = []
    acked = 0
    lines = out.split(b"\n")
    for raw in lines[:-1]:  # the last piece has no newline: cut by the kill
        words = raw.decode().split()
        if not words or words[0] == "READY":
            continue
        if words[0] == "ACK":
            acked = len(ops)
        elif words[0] == "I":
            ops.append(("I", bytes.fromhex(words[1]), bytes.fromhex(words[2])))
        elif words[0] == "R":
            ops.append(("R", bytes.fromhex(words[1])))
        elif words[0] == "B":
            items = []
            for item in words[2:]:
                a, b = item.split("=")
                items.append((bytes.fromhex(a), None if b == "-" else bytes.fromhex(b)))
            assert len(items) == int(words[1]), raw
            ops.append(("B", items))
        else:
            raise AssertionError(f"writer said {raw!r}")
    return ops, acked


def _apply(model: Dict[bytes, bytes], op: tuple) -> None:
    if op[0] == "I":
        model[op[1]] = op[2]
    elif op[0] == "R":
        model.pop(op[1], None)
    else:
        for a, b in op[1]:
            if b is None:
                model.pop(a, None)
            else:
                model[a] = b


def _one_kill(path: str, seed: int, rng: random.Random, stderr_path: Path) -> bytes:
    env = child_env()
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(WRITER), path, str(seed)],
                                stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO))
        chunks: List[bytes] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not ready.is_set() and b"READY\n" in b"".join(chunks):
                    ready.set()
            ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if rng.random() < 0.15:
            time.sleep(rng.uniform(0, 0.3))  # now and then, during start-up and recovery
        else:
            ready.wait(60)
            time.sleep(rng.uniform(0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the writer exited by itself ({proc.returncode}): "
                             + stderr_path.read_text()[-3000:])
    return b"".join(chunks)


def test_sigkill_writer_repeatedly(tmp_path, record_property):
    kills = _kills()
    rng = random.Random(int(os.environ.get("TINYLSM_KILL_SEED", "20240611")))
    path = str(tmp_path / "db")
    model: Dict[bytes, bytes] = {}
    survived = ops_total = acked_total = 0
    for round_no in range(kills):
        out = _one_kill(path, rng.randrange(1 << 30), rng, tmp_path / "writer.stderr")
        ops, acked = _parse(out)
        models = [dict(model)]
        for op in ops:
            _apply(model, op)
            models.append(dict(model))
        with tinylsm.open(path, key_size=K, value_size=V) as db:
            got = dict(db.items())
        match: Optional[int] = next(
            (j for j in range(len(ops), acked - 1, -1) if models[j] == got), None)
        assert match is not None, (
            f"kill {round_no + 1}: the reopened store is not the model after any "
            f"prefix of {acked}..{len(ops)} of the {len(ops)} announced operations"
        )
        model = models[match]
        survived += 1
        ops_total += len(ops)
        acked_total += acked
    tables = [n for n in os.listdir(os.path.join(path, "sstables")) if not n.startswith(".")]
    assert tables, "no sstable was ever flushed: the kills did not reach that code"
    report(record_property, "kills_survived", survived)
    report(record_property, "kill_ops_announced", ops_total)
    report(record_property, "kill_ops_acknowledged", acked_total)
    assert survived == kills
