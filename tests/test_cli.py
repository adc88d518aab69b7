"""The ``tinylsm`` command, run as ``python -m tinylsm`` in a subprocess.

The subprocess inherits the environment (``TINYLSM_PUREPYTHON`` included)
and imports tinylsm from this checkout.  Every run is checked for its exit
status and for the absence of a traceback.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Tuple

import pytest
import zstandard

import tinylsm
from tinylsm import _meta, cli, sstable
from tinylsm._backend import codec

import golden
from helpers import child_env

REPO = Path(__file__).resolve().parent.parent


def env() -> Dict[str, str]:
    return child_env()


def run(*args, cwd=None, status=None) -> subprocess.CompletedProcess:
    """Run ``python -m tinylsm ARGS``; check ``status`` when given."""
    out = subprocess.run([sys.executable, "-m", "tinylsm", *map(str, args)],
                         capture_output=True, text=True, env=env(), cwd=cwd, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr
    if status is not None:
        assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    return out


def one_error_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert re.match(r"tinylsm( bench| \w+)?: error: ", lines[0]), lines[0]
    return lines[0]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def key(i: int) -> bytes:
    return i.to_bytes(8, "big")


def val(i: int) -> bytes:
    return (i * 1000003).to_bytes(8, "little")


@pytest.fixture
def store(tmp_path) -> Path:
    """A closed tinylsm store (K=8, V=8) of keys 0..99 with value val(i),
    spread over sstables and the log, key 50 removed."""
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=8, value_size=8,
                      config=tinylsm.Config(max_log_length=600)) as db:
        for i in range(100):
            db[key(i)] = val(i)
            db.flush()
        del db[key(50)]
    return path


def expected_store() -> Dict[bytes, bytes]:
    return {key(i): val(i) for i in range(100) if i != 50}


# -- help ------------------------------------------------------------------------------


def test_help_shows_an_example_per_command():
    out = run("--help", status=0)
    assert "examples:" in out.stdout and "exit status:" in out.stdout
    for command in ("stats", "get", "dump", "verify", "compact", "bench"):
        assert re.search(rf"^  tinylsm {command} \S", out.stdout, re.M), command
    for command in ("stats", "get", "dump", "verify", "compact"):
        sub = run(command, "--help", status=0)
        assert re.search(rf"^  tinylsm {command} \S", sub.stdout, re.M), command
        assert "--key-size" in sub.stdout
    bench = run("bench", "--help", status=0)
    assert "usage: tinylsm bench" in bench.stdout
    assert "tinylsm bench -n 20000" in bench.stdout


def test_bench_module_runs_alone():
    out = subprocess.run([sys.executable, "-m", "tinylsm.bench", "--help"],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert out.returncode == 0 and "python -m tinylsm.bench -n 20000" in out.stdout


def test_version():
    out = run("--version", status=0)
    assert out.stdout.strip() == f"tinylsm {tinylsm.__version__} (codec: {tinylsm.BACKEND})"


def test_main_in_process(tmp_path, capsys):
    assert cli.main(["stats", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tinylsm"] == "tinylsm.cli:main"
    # tqdm is optional (progress bars only): in the bench extra, not required
    assert not any(d.startswith("tqdm") for d in project["dependencies"])
    bench = {re.match(r"[\w.-]+", d).group() for d in project["optional-dependencies"]["bench"]}
    assert bench >= {"lmdb", "tqdm"}


# -- usage errors: one line, status 2 ----------------------------------------------------


@pytest.mark.parametrize("args, message", [
    ((), "required: COMMAND"),
    (("frobnicate",), "invalid choice"),
    (("dump",), "required: DIR"),
    (("get", "{db}", "zz"), "not hexadecimal"),
    (("get", "{db}", "0102"), "16 hex digits"),
    (("get", "{db}", "12", "--int", "middle"), "invalid choice"),
    (("get", "{db}", str(1 << 64), "--int", "big"), "does not fit in 8"),
    (("get", "{db}", "seven", "--int", "big"), "not an integer"),
    (("dump", "{db}", "--start", "xyz"), "--start 'xyz' is not hexadecimal"),
    (("dump", "{db}", "--limit", "-1"), "expected 0 or more"),
    (("dump", "{db}", "--raw", "--format", "json"), "--format does not apply"),
    (("stats", "{db}", "--key-size", "4", "--value-size", "4"), "records key size 8"),
    (("stats", "{db}", "--key-size", "4"), "records key size 8 and value size 8, not "
                                            "--key-size 4: leave"),
    (("stats", "{db}", "--value-size", "9"), "not --value-size 9: leave"),
    (("stats", "{db}", "--key-size", "8", "--value-size", "9"),
     "not --key-size 8 and --value-size 9"),
    (("stats", "{missing}"), "no such directory"),
    (("stats", "{file}"), "not a directory"),
    (("verify", "{empty}"), "not a tinylsm or tiny-lsm store"),
    (("compact", "{empty}"), "not a tinylsm or tiny-lsm store"),
    (("bench", "-n", "0"), "expected at least 1"),
    (("bench", "--workloads", "insert,fly"), "unknown workload fly"),
    (("bench", "--key-size", "1", "-n", "300"), "only 256 distinct keys"),
])
def test_usage_errors(tmp_path, store, args, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    paths = dict(db=store, missing=tmp_path / "missing", file=tmp_path / "file",
                 empty=tmp_path / "empty")
    before = snapshot(tmp_path)
    out = run(*(a.format(**paths) for a in args), status=2)
    assert message in one_error_line(out), out.stderr
    assert out.stdout == ""
    assert snapshot(tmp_path) == before  # not even compact created anything


def test_one_line_for_usage_errors_of_commands(tmp_path, store):
    line = one_error_line(run("get", store, "zz", status=2))
    assert "KEY 'zz'" in line
    line = one_error_line(run("stats", tmp_path / "missing", status=2))
    assert str(tmp_path / "missing") in line


def test_rust_directory_needs_sizes(tmp_path):
    db = golden.copy_db("basic_k8_v8", tmp_path)
    for command in ("stats", "verify", "dump", "compact"):
        line = one_error_line(run(command, db, status=2))
        assert "--key-size K --value-size V" in line
    line = one_error_line(run("get", db, "00" * 8, status=2))
    assert "records no key and value sizes" in line
    for option in ("--key-size", "--value-size"):  # one size is not enough
        line = one_error_line(run("stats", db, option, 8, status=2))
        assert "--key-size K --value-size V" in line
    # the wrong sizes are caught too, by the first log frame
    line = one_error_line(run("stats", db, "--key-size", 4, "--value-size", 4, status=2))
    assert "are these the sizes" in line
    assert sorted(p.name for p in db.iterdir()) == ["log", "sstables"]


# -- locked --------------------------------------------------------------------------------


class BusyWriter:
    """The store open for writing in this process, with a thread writing,
    flushing and rolling the log over while the CLI reads it."""

    def __init__(self, path: Path) -> None:
        self.db = tinylsm.open(path, config=tinylsm.Config(max_log_length=4000))
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 1000
        while not self.stop.is_set():
            self.db[key(i)] = val(i)
            i += 1
            if i % 10 == 0:
                self.db.flush()
        self.written = i - 1000

    def __enter__(self) -> "BusyWriter":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.db.close()


LIVE_NOTE = "is live (a writer has it open): this is a snapshot"


@pytest.mark.parametrize("args", [("stats",), ("get", key(7).hex()), ("dump",), ("verify",),
                                  ("stats", "--json")])
def test_read_commands_on_a_live_store(store, args):
    with BusyWriter(store) as busy:
        out = run(args[0], store, *args[1:], status=0)
        busy.db.stats()  # the writer is undisturbed
    assert busy.written > 0 and busy.db.stats is not None
    if args[0] == "get":
        assert out.stdout == val(7).hex() + "\n" and LIVE_NOTE in out.stderr
    elif args[0] == "dump":
        lines = dict(line.split() for line in out.stdout.splitlines())
        for i in range(100):  # every key of before the writer opened, as it was
            assert lines.get(key(i).hex()) == (None if i == 50 else val(i).hex())
        assert LIVE_NOTE in out.stderr
    elif args[0] == "verify":
        assert "live: a writer has the store open" in out.stdout
        assert out.stdout.rstrip().splitlines()[-1].startswith("clean:"), out.stdout
    elif args[1:] == ("--json",):
        data = json.loads(out.stdout)
        assert data["live"] is True and data["keys"] >= 99
    else:
        assert "(live: a writer has it open; the figures are a snapshot)" in out.stdout
        keys = int(re.search(r"^keys\s+([\d,]+)$", out.stdout, re.M).group(1).replace(",", ""))
        assert keys >= 99


def test_read_commands_say_nothing_of_liveness_on_a_closed_store(store):
    assert "live" not in run("get", store, key(7).hex(), status=0).stderr
    assert json.loads(run("stats", store, "--json", status=0).stdout)["live"] is False


def test_compact_is_refused_beside_a_live_writer(store):
    before = snapshot(store)
    with tinylsm.open(store) as writer:
        line = one_error_line(run("compact", store, status=3))
        writer.stats()
    assert "already open for writing" in line and "compact needs the store to itself" in line
    assert snapshot(store) == before


def test_compact_beside_a_reader(store):
    """A reader holds no lock once open: compact runs, and the reader keeps
    its snapshot until it refreshes."""
    with tinylsm.open(store, readonly=True) as reader:
        before = dict(reader.items())
        run("compact", store, status=0)
        assert dict(reader.items()) == before
        assert reader.refresh() is True
        assert dict(reader.items()) == before
    assert len(list((store / "sstables").iterdir())) == 1


def test_one_size_is_checked_against_the_record(store):
    """A store that records its sizes needs none on the command line; one
    given alone is checked against the record, like a pair."""
    whole = run("stats", store, status=0).stdout
    assert run("stats", store, "--key-size", "8", status=0).stdout == whole
    assert run("stats", store, "--value-size", "8", status=0).stdout == whole
    assert run("get", store, "00" * 8, "--value-size", "8", status=0).stdout


def test_counts_of_one_are_singular(tmp_path, capsys):
    """A count of one reads "1 frame", "1 byte", "1 key", never "1 frames";
    other counts keep their plural."""
    path = tmp_path / "one"
    with tinylsm.open(path, key_size=1, value_size=0) as db:
        db[b"k"] = b""
    assert cli.main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    frame = codec.frame_size(1, 0)
    assert re.search(r"^key size\s+1 byte$", out, re.M), out
    assert re.search(r"^value size\s+0 bytes$", out, re.M), out
    assert re.search(r"^live data\s+1 byte \(", out, re.M), out
    assert re.search(rf"^log\s+{frame} bytes, 1 frame of {frame} bytes$", out, re.M), out
    assert re.search(r"^sstables\s+0 files, 0 bytes$", out, re.M), out
    (path / "sstables" / "7-tmp").write_bytes(b"h")  # an unfinished write of 1 byte
    assert cli.main(["stats", str(path)]) == 0
    assert re.search(r"^  7-tmp\s+1 byte  unfinished", capsys.readouterr().out, re.M)
    assert cli.main(["compact", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"(0 sstables, log of {frame} bytes) for 1 key, space amp" in out, out
    assert re.search(r"\(1 sstable, log of 0 bytes\) for 1 key, space amp", out), out
    assert cli.main(["get", str(path), "a"]) == 2
    assert "has 1 hex digit; keys of this store are 1 byte = 2 hex digits" in \
        capsys.readouterr().err
    assert cli.main(["get", str(path), "256", "--int", "big"]) == 2
    assert "does not fit in 1 unsigned byte" in capsys.readouterr().err


# -- stats ----------------------------------------------------------------------------------


def test_stats(store):
    before = snapshot(store)
    out = run("stats", store, status=0)
    assert out.stderr == ""  # and no progress bar: stderr is not a terminal
    files = sorted((store / "sstables").iterdir())
    assert files
    assert re.search(r"^keys\s+99$", out.stdout, re.M), out.stdout
    assert re.search(r"^key size\s+8 bytes$", out.stdout, re.M)
    assert re.search(rf"^sstables\s+{len(files)} files?, ", out.stdout, re.M)
    for f in files:
        assert re.search(rf"^  {f.name}\s+{f.stat().st_size:,} bytes$", out.stdout, re.M)
    on_disk = sum(f.stat().st_size for f in files) + (store / "log").stat().st_size
    assert re.search(rf"^on disk\s+{on_disk:,} bytes", out.stdout, re.M)
    assert re.search(rf"^space amp\s+{on_disk / (99 * 16):.2f} ", out.stdout, re.M)
    assert snapshot(store) == before


def test_stats_json(store):
    data = json.loads(run("stats", store, "--json", status=0).stdout)
    files = sorted((store / "sstables").iterdir())
    assert data["keys"] == 99 and data["key_size"] == 8 and data["value_size"] == 8
    assert [s["name"] for s in data["sstables"]] == [f.name for f in files]
    assert [s["bytes"] for s in data["sstables"]] == [f.stat().st_size for f in files]
    assert data["log_bytes"] == (store / "log").stat().st_size
    assert data["on_disk_bytes"] == data["log_bytes"] + sum(f.stat().st_size for f in files)
    assert data["space_amp"] == pytest.approx(data["on_disk_bytes"] / (99 * 16))


def test_stats_of_rust_golden_sstables(tmp_path):
    sc = golden.load("sstables_k8_v8")
    db = golden.copy_db(sc, tmp_path)
    before = snapshot(db)
    out = run("stats", db, "--key-size", 8, "--value-size", 8, status=0)
    assert re.search(rf"^keys\s+{len(sc.data):,}$", out.stdout, re.M)
    for name, size in sc.sstables.items():
        assert re.search(rf"^  {name}\s+{size:,} bytes$", out.stdout, re.M)
    assert re.search(rf"^log\s+{sc.log_bytes:,} bytes", out.stdout, re.M)
    assert snapshot(db) == before


def test_stats_shows_torn_tail(tmp_path):
    sc = golden.load("torn_log_k8_v8")
    db = golden.copy_db(sc, tmp_path)
    out = run("stats", db, "--key-size", 8, "--value-size", 8, status=0)
    torn = sc.log_bytes - sc.log_bytes_after_recover
    assert f"torn tail of {torn} bytes" in out.stdout
    data = json.loads(run("stats", db, "--key-size", 8, "--value-size", 8, "--json",
                          status=0).stdout)
    assert data["log_torn_bytes"] == torn and data["log_bytes"] == sc.log_bytes
    assert (db / "log").stat().st_size == sc.log_bytes  # not cut


# -- get and dump -------------------------------------------------------------------------------


def test_get(store):
    assert run("get", store, key(7).hex(), status=0).stdout == val(7).hex() + "\n"
    assert run("get", store, "0x" + key(7).hex().upper(), status=0).stdout == val(7).hex() + "\n"
    for seven in ("7", "007", "0x7"):
        out = run("get", store, seven, "--int", "big", status=0)
        assert out.stdout == f"{int.from_bytes(val(7), 'big')}\n"
    out = run("get", store, str(int.from_bytes(key(7), "little")), "--int", "little", status=0)
    assert out.stdout == f"{int.from_bytes(val(7), 'little')}\n"


def test_get_absent_key(store):
    out = run("get", store, key(50).hex(), status=1)
    assert out.stdout == "" and "not found" in out.stderr
    run("get", store, "50", "--int", "big", status=1)


def test_get_from_rust_golden(tmp_path):
    sc = golden.load("basic_k16_v4")
    db = golden.copy_db(sc, tmp_path)
    for k, v in list(sc.data.items())[::97]:
        out = run("get", db, k.hex(), "--key-size", 16, "--value-size", 4, status=0)
        assert out.stdout == v.hex() + "\n"


def test_dump_hex(store):
    out = run("dump", store, status=0)
    assert out.stdout.splitlines() == [f"{k.hex()} {v.hex()}"
                                       for k, v in sorted(expected_store().items())]
    assert out.stderr == ""


def test_dump_range_limit_json_int(store):
    out = run("dump", store, "--start", key(45).hex(), "--stop", key(55).hex(), status=0)
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        key(i).hex() for i in range(45, 55) if i != 50]
    out = run("dump", store, "--start", 45, "--stop", 55, "--int", "big", "--limit", 3,
              "--format", "json", status=0)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"key": i, "value": int.from_bytes(val(i), "big")} for i in (45, 46, 47)]
    out = run("dump", store, "--format", "json", "--limit", 2, status=0)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"key": key(i).hex(), "value": val(i).hex()} for i in (0, 1)]
    assert run("dump", store, "--limit", 0, status=0).stdout == ""


def test_dump_of_every_golden_matches_expected(tmp_path):
    for name in golden.scenario_names():
        sc = golden.load(name)
        db = golden.copy_db(sc, tmp_path)
        before = snapshot(db)
        out = run("dump", db, "--key-size", sc.key_size, "--value-size", sc.value_size,
                  status=0)
        assert out.stdout.splitlines() == [f"{k.hex()} {v.hex()}"
                                           for k, v in sorted(sc.data.items())], name
        assert snapshot(db) == before, name


def test_dump_into_a_closed_pipe(tmp_path):
    path = tmp_path / "big"
    with tinylsm.open(path, key_size=8, value_size=8) as db:
        db.write_batch([(key(i), val(i)) for i in range(20000)])  # ~680 kB of output
    proc = subprocess.Popen([sys.executable, "-m", "tinylsm", "dump", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) != 0  # it could not write everything
    assert first.decode().split() == [key(0).hex(), val(0).hex()]
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr


def run_raw(*args, status: int = 0) -> bytes:
    """``python -m tinylsm ARGS`` with its stdout as bytes (``dump --raw``)."""
    out = subprocess.run([sys.executable, "-m", "tinylsm", *map(str, args)],
                         capture_output=True, env=env(), timeout=600)
    assert b"Traceback" not in out.stderr, out.stderr
    assert out.returncode == status, (out.returncode, out.stderr)
    return out.stdout


def test_dump_raw(store, tmp_path):
    want = sorted(expected_store().items())
    assert run_raw("dump", store, "--raw") == b"".join(k + v for k, v in want)
    assert run_raw("dump", store, "--raw", "--limit", 3) == b"".join(k + v for k, v in want[:3])
    assert run_raw("dump", store, "--raw", "--limit", 0) == b""
    assert run_raw("dump", store, "--raw", "--limit", 1000) == run_raw("dump", store, "--raw")
    got = run_raw("dump", store, "--raw", "--start", 45, "--stop", 55, "--int", "big")
    assert got == b"".join(key(i) + val(i) for i in range(45, 55) if i != 50)
    # what write_packed takes: a copy of the store
    with tinylsm.open(tmp_path / "copy", key_size=8, value_size=8) as db:
        db.write_packed(run_raw("dump", store, "--raw"))
        assert dict(db.items()) == expected_store()


def test_dump_raw_in_chunks(tmp_path, monkeypatch, capsysbinary):
    """More records than a chunk: every chunk whole, the limit cut inside one."""
    monkeypatch.setattr(cli, "RAW_CHUNK", 7)
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=8, value_size=8) as db:
        db.write_batch([(key(i), val(i)) for i in range(100)])
    for limit, count in ((None, 100), (23, 23), (3, 3)):
        args = ["dump", str(path), "--raw"] + ([] if limit is None else ["--limit", str(limit)])
        assert cli.main(args) == 0
        assert capsysbinary.readouterr().out == b"".join(key(i) + val(i) for i in range(count))


def test_dump_raw_on_a_live_store(store):
    with BusyWriter(store) as busy:
        out = subprocess.run([sys.executable, "-m", "tinylsm", "dump", str(store), "--raw"],
                             capture_output=True, env=env(), timeout=600)
    assert out.returncode == 0 and busy.written > 0, out.stderr
    assert LIVE_NOTE in out.stderr.decode()
    got = {out.stdout[i:i + 8]: out.stdout[i + 8:i + 16] for i in range(0, len(out.stdout), 16)}
    assert len(out.stdout) % 16 == 0 and list(got) == sorted(got)
    for i in range(100):  # every key of before the writer opened, as it was
        assert got.get(key(i)) == (None if i == 50 else val(i))


def test_dump_raw_refuses_a_terminal_and_a_format(store, monkeypatch, capsys):
    assert "--format does not apply" in one_error_line(
        run("dump", store, "--raw", "--format", "hex", status=2))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert cli.main(["dump", str(store), "--raw"]) == 2
    err = capsys.readouterr().err
    assert "--raw writes binary records: redirect the output to a file or a pipe" in err


def test_dump_raw_on_a_real_terminal(store):
    proc, terminal = on_terminal("dump", store, "--raw")
    assert proc.returncode == 2
    assert b"redirect the output to a file or a pipe" in terminal
    assert key(1) + val(1) not in terminal


# -- verify ----------------------------------------------------------------------------------


def verify(db: Path, *args, status: int) -> list:
    before = snapshot(db)
    out = run("verify", db, *args, status=status)
    assert snapshot(db) == before  # verify changes nothing
    assert out.stderr == ""  # no progress bar off a terminal, no warnings
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("clean: " if status == 0 else "NOT CLEAN: "), lines[-1]
    return lines


@pytest.mark.parametrize("name", golden.scenario_names())
def test_verify_golden(tmp_path, name):
    sc = golden.load(name)
    db = golden.copy_db(sc, tmp_path)
    lines = verify(db, "--key-size", sc.key_size, "--value-size", sc.value_size,
                   status=1 if sc.damaged else 0)
    assert f"recovery: ok: a read-only open recovers {len(sc.data):,} keys" in lines
    for name in sc.sstables:
        assert any(line.startswith(f"sstables/{name}: ok: ") for line in lines), lines


def test_verify_torn_log(tmp_path):
    sc = golden.load("torn_log_k8_v8")
    db = golden.copy_db(sc, tmp_path)
    lines = verify(db, "--key-size", 8, "--value-size", 8, status=1)
    log_line = next(line for line in lines if line.startswith("log: "))
    assert log_line.startswith("log: TORN TAIL: 10 bytes of a cut-off frame at offset 22,050")
    assert "cuts the log to 22,050 bytes" in log_line
    assert lines[-1] == "NOT CLEAN: torn log tail (10 bytes after offset 22,050)"


def test_verify_torn_batch(tmp_path):
    db = golden.copy_db("torn_batch_k8_v8", tmp_path)
    lines = verify(db, "--key-size", 8, "--value-size", 8, status=1)
    log_line = next(line for line in lines if line.startswith("log: "))
    assert "TORN TAIL" in log_line
    assert "the write_batch of 45 items starting at offset 5,271" in log_line
    assert lines[-1] == "NOT CLEAN: torn log tail (383 bytes after offset 5,271)"


@pytest.mark.parametrize("name, index, offset, reason", [
    ("corrupt_log_k8_v8", 120, 2520, "checksum mismatch"),
    ("corrupt_pad_k2_v3", 77, 1001, "non-zero padding"),
    ("corrupt_tombstone_k8_v8", 100, 2100, "non-zero value in a tombstone"),
])
def test_verify_corrupt_log(tmp_path, name, index, offset, reason):
    sc = golden.load(name)
    db = golden.copy_db(sc, tmp_path)
    lines = verify(db, "--key-size", sc.key_size, "--value-size", sc.value_size, status=1)
    log_line = next(line for line in lines if line.startswith("log: "))
    assert log_line.startswith(f"log: CORRUPT: frame #{index} at offset {offset:,}: {reason}")
    assert lines[-1] == f"NOT CLEAN: corrupt log frame #{index} at offset {offset} ({reason})"


def test_verify_zero_filled_tail(store):
    """Zeros after the log are a writer's preallocated space: clean."""
    with open(store / "log", "ab") as f:
        f.write(bytes(50))
    lines = verify(store, status=0)
    assert any(line.startswith("log: ok: ") and "then 50 zero bytes a writer wrote ahead"
               in line for line in lines), lines


def test_verify_torn_frame_then_zeros(store):
    """A frame cut by a crash in preallocated space: a torn tail."""
    frame = codec.frame_size(8, 8)
    with open(store / "log", "ab") as f:
        f.write(b"\x01" * (frame // 2) + bytes(100))
    lines = verify(store, status=1)
    zeros = 100 - (frame - frame // 2)  # after the torn frame's own bytes
    assert any(line.startswith("log: TORN TAIL: a torn frame at offset ") and
               f"then {zeros} zero bytes" in line and "cuts the log" in line
               for line in lines), lines


def test_verify_tinylsm_store_is_clean(store):
    lines = verify(store, status=0)
    assert lines[0] == f"{store}: key size 8, value size 8 (from {_meta.META_NAME})"
    assert lines[-1].endswith(", 99 keys")
    n = len(list((store / "sstables").iterdir()))
    assert sum(line.startswith("sstables/") for line in lines) == n


def _last_sstable(db: Path) -> Path:
    return sorted((db / "sstables").glob("0" * 8 + "*"))[-1]


def test_verify_flipped_byte_in_golden_sstable(tmp_path):
    """Flip one byte of a copy of a Rust-written sstable: verify names the
    file and the first bad record, as the decoder sees it."""
    sc = golden.load("sstables_k8_v8")
    db = golden.copy_db(sc, tmp_path)
    target = _last_sstable(db)
    data = bytearray(target.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    scan = codec.decode_sstable(sstable.decompress(bytes(data), "x"), 8, 8)
    assert scan.status == "corrupt"  # this byte lands inside a record
    lines = verify(db, "--key-size", 8, "--value-size", 8, status=1)
    rel = f"sstables/{target.name}"
    assert (f"{rel}: CORRUPT: record {scan.error_index} of {scan.expected}: {scan.reason}"
            in "\n".join(lines))
    assert (f"corrupt {rel} (record {scan.error_index} of {scan.expected}: {scan.reason})"
            in lines[-1])
    assert any(line.startswith("recovery: FAILS: CorruptionError") for line in lines)


def test_verify_damaged_record_names_it(tmp_path):
    """Change the checksum of record 17 and compress again (a finished frame,
    which the Rust crate reads too): the report names record 17."""
    db = golden.copy_db("sstables_k8_v8", tmp_path)
    target = _last_sstable(db)
    payload = bytearray(sstable.decompress(target.read_bytes(), str(target)))
    rsize = codec.record_size(8, 8)
    payload[8 + 17 * rsize] ^= 0x01  # first checksum byte of record 17
    target.write_bytes(zstandard.ZstdCompressor().compress(bytes(payload)))
    lines = verify(db, "--key-size", 8, "--value-size", 8, status=1)
    count = int.from_bytes(payload[:8], "little")
    assert f"sstables/{target.name}: CORRUPT: record 17 of {count}: checksum mismatch" in (
        "\n".join(lines))


def test_verify_garbage_sstable(store):
    target = _last_sstable(store)
    target.write_bytes(b"this is not zstd at all" * 10)
    lines = verify(store, status=1)
    line = next(x for x in lines if x.startswith(f"sstables/{target.name}: "))
    assert line.startswith(f"sstables/{target.name}: CORRUPT: zstd stream is damaged")


def test_verify_empty_sstable(store):
    """tiny-lsm's in-place flush can leave an empty sstable after a crash."""
    target = store / "sstables" / sstable.sstable_name(0xFFFF)
    target.write_bytes(b"")
    lines = verify(store, status=1)
    assert any(x.startswith(f"sstables/{target.name}: CUT SHORT: 0 of ?") for x in lines)


def test_verify_bad_sstable_name_and_tmp(store):
    (store / "sstables" / "abc").write_bytes(b"")
    lines = verify(store, status=1)
    assert any(x.startswith("sstables/abc: BAD NAME") for x in lines)
    assert "bad sstable name sstables/abc" in lines[-1]
    (store / "sstables" / "abc").unlink()
    (store / "sstables" / "7-tmp").write_bytes(b"half")
    lines = verify(store, status=0)  # an unfinished write loses nothing
    assert any(x.startswith("sstables/7-tmp: note: ") for x in lines)


def test_verify_wrong_sizes_hint(tmp_path):
    db = golden.copy_db("basic_k8_v8", tmp_path)
    lines = verify(db, "--key-size", 4, "--value-size", 4, status=1)
    assert "is the store's key size 4 and value size 4?" in "\n".join(lines)


def test_verify_unreadable_metadata(store):
    (store / _meta.META_NAME).write_text("{not json")
    out = run("verify", store, status=1)
    assert out.stdout.splitlines()[-1] == f"NOT CLEAN: {_meta.META_NAME} is unreadable"


# -- compact -------------------------------------------------------------------------------


def test_compact(store):
    n_before = len(list((store / "sstables").iterdir()))
    assert n_before > 1
    out = run("compact", store, status=0)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("before: ") and f"{n_before} sstables" in lines[0]
    assert lines[1].startswith("after:  ") and "(1 sstable, log of 0 bytes) for 99 keys" \
        in lines[1]
    assert len(list((store / "sstables").iterdir())) == 1
    with tinylsm.open(store, readonly=True) as db:
        assert dict(db.items()) == expected_store()
    verify(store, status=0)


def test_compact_rust_golden(tmp_path):
    sc = golden.load("sstables_k8_v8")
    db = golden.copy_db(sc, tmp_path)
    out = run("compact", db, "--key-size", 8, "--value-size", 8, status=0)
    assert f"note: recorded the sizes in {_meta.META_NAME}" in out.stdout
    with tinylsm.open(db, readonly=True) as store:
        assert dict(store.items()) == sc.data
    # merged into one (tinylsm merges into the lowest id of the run)
    assert [p.name for p in (db / "sstables").iterdir() if p.name != ".gitkeep"] == [
        min(sc.sstables)]


# -- bench ---------------------------------------------------------------------------------


def test_bench_small_run(tmp_path):
    chart = tmp_path / "bench.svg"
    drawn = importlib.util.find_spec("matplotlib") is not None
    extra = ("--chart", chart) if drawn else ()
    out = run("bench", "-n", 300, "--range-queries", 20, "--sync-count", 20, *extra, status=0)
    lines = out.stdout.splitlines()
    from tinylsm.bench import WORKLOADS

    header = next(i for i, line in enumerate(lines) if line.startswith("workload "))
    assert re.split(r"\s{2,}", lines[header])[:4] == ["workload", "unit", "tinylsm", "dict"]
    for name, (label, unit, _) in WORKLOADS.items():
        label = {"batch": "write_batch of 300", "import": "write_packed of 300"}.get(name, label)
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, (label, out.stdout)
        cells = re.split(r"\s{2,}", row)
        assert cells[1] == unit and cells[2] != "-", row  # tinylsm measured every one
    assert "disk = os.write + os.fsync" in out.stdout
    # figures and ratios only: the project's targets are its own checks
    assert not re.search(r"\b(met|MISSED|target|goal)\b", out.stdout), out.stdout
    # stderr is no terminal here: no bars; a line as each workload begins,
    # and one with its figures as it ends
    err = out.stderr.splitlines()
    assert err[0] == "generating data (300 keys) ..."
    assert err[1::2][:len(WORKLOADS)] == [f"running {name} ..." for name in WORKLOADS]
    for name, line in zip(WORKLOADS, err[2::2]):
        assert re.fullmatch(rf"{name}: tinylsm \S+.* \(\d+\.\d s\)", line), line
    if drawn:
        assert err[-1] == f"chart written to {chart}"
        svg = chart.read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        for text in ("insert one by one", "get, random order", "dict", "sqlite3",
                     "tinylsm / peer", "300 keys of 8 B"):
            assert text in svg, text
    else:
        assert len(err) == 1 + 2 * len(WORKLOADS)


def test_bench_selected_workloads_and_engines():
    out = run("bench", "-n", 50, "--workloads", "get,scan", "--engines", "dict",
              "--key-size", 3, "--value-size", 0, status=0)
    table = [line for line in out.stdout.splitlines() if line.startswith(("get,", "full"))]
    assert len(table) == 2
    assert "sqlite3" not in out.stdout.split("\n\n")[1]


def test_bench_does_not_import_the_cli():
    """cli.py imports the runner (lazily, for ``tinylsm bench``), never the
    other way round; tqdm is optional."""
    code = ("import sys; sys.modules['tqdm'] = None\n"  # as if tqdm were not installed
            "import tinylsm.bench\n"
            "assert 'tinylsm.cli' not in sys.modules, 'tinylsm.bench imports tinylsm.cli'\n"
            "sys.exit(tinylsm.bench.main(['-n', '50', '--workloads', 'get', '--engines', "
            "'dict'], prog='bench'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[:2] == ["generating data (50 keys) ...", "running get ..."]
    assert re.fullmatch(r"get: tinylsm \S+, dict \S+ ops/s \(\d+\.\d s\)",
                        out.stderr.splitlines()[2]), out.stderr


def test_bench_chart_refuses_early(tmp_path):
    out = run("bench", "-n", 50, "--chart", tmp_path / "bench.txt", status=2)
    assert "--chart" in out.stderr and "expected a file name ending in .svg, .png, .pdf" \
        in out.stderr and "'.txt'" in out.stderr
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if not installed
            "from tinylsm.bench import chart\n"
            "print(chart.unavailable('x.svg'))\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env(), timeout=60)
    assert got.stdout.startswith("--chart needs matplotlib, which is not installed"), got


def test_chart_figures_are_the_tables():
    from tinylsm.bench import chart

    figures = {"insert": {"tinylsm": 4e6, "dict": 8e6, "lmdb": 1e6},
               "reopen-log": {"tinylsm": 0.25, "sqlite3": 0.0125},
               "latency": {"tinylsm": 12.0},
               "memory": {"tinylsm": 30.0, "dict": 90.0}}
    names = ["insert", "reopen-log", "latency", "memory"]
    engines = ["tinylsm", "dict", "sqlite3", "lmdb"]
    assert chart.rates(figures, names, engines) == [("insert", figures["insert"])]
    assert chart.ratios(figures, names, engines) == [
        ("insert", {"dict": 0.5, "lmdb": 4.0}),
        ("reopen-log", {"sqlite3": 0.05}),  # lower is better: peer / tinylsm
        ("memory", {"dict": 3.0}),
    ]


def test_bench_runs_every_workload_it_lists():
    from tinylsm.bench import WORKLOADS, workloads

    assert list(workloads.RUNS) == list(WORKLOADS)


def test_bench_header_before_the_progress_bar():
    """On a terminal the header is printed whole before a bar starts, so
    that no bar lands on the same line."""
    proc, terminal = on_terminal("bench", "-n", 300, "--workloads", "get,scan",
                                 "--engines", "dict")
    text = terminal.decode()
    assert proc.returncode == 0, text
    head, bar, rest = text.partition("\rgenerating data")
    assert bar, text
    assert "300 keys of 8 B" in head and head.endswith("\r\n\r\n"), head
    assert "bench:" in rest and "running " not in text
    assert "full ordered scan" in rest


# -- progress --------------------------------------------------------------------------------


def on_terminal(*args, pipe_stdout: bool = False) -> Tuple[subprocess.CompletedProcess, bytes]:
    """Run ``python -m tinylsm ARGS`` with stderr (and stdout, unless
    ``pipe_stdout``) on a pseudo-terminal 100 columns wide, where tqdm draws
    its bars; returns the process and what the terminal received.  Skips
    the test where there are no pseudo-terminals or no tqdm."""
    pytest.importorskip("tqdm")
    if not hasattr(os, "openpty"):
        pytest.skip("no pseudo-terminals here")
    import fcntl
    import struct
    import termios
    import threading

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "tinylsm", *map(str, args)],
                              stdout=subprocess.PIPE if pipe_stdout else slave, stderr=slave,
                              env=env(), timeout=300)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc, b"".join(chunks)


def test_progress_bar_on_a_terminal(tmp_path):
    """With stderr on a terminal (a pseudo-terminal here) tqdm draws a bar."""
    db = golden.copy_db("sstables_k8_v8", tmp_path)
    proc, terminal = on_terminal("verify", db, "--key-size", "8", "--value-size", "8",
                                 pipe_stdout=True)
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines()[-1].startswith("clean: ")
    assert b"verify:" in terminal and b"file" in terminal


@pytest.mark.parametrize("value,shown", [(999_700.0, "1M"), (999_400.0, "999k"),
                                         (1_500.0, "1.5k"), (999.7, "1k"), (12.0, "12")])
def test_bench_rates_are_rounded_before_their_unit_is_chosen(value, shown):
    from tinylsm.bench.report import fmt
    assert fmt(value, "ops/s") == shown
