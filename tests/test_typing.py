"""Typed for real (issue 15): ``mypy --strict`` passes on the package and on
a user program, a misuse gets messages that name ``Lsm``, the stubs of the
compiled modules match them (``stubtest``), and the pure twins are annotated
as the stubs are.

The mypy checks need mypy (in the ``test`` extra) and skip without it.  They
are static, the same in both builds; ``stubtest`` imports the compiled
modules, and skips where TINYLSM_PUREPYTHON=1 installed none.
"""
from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import tinylsm
from conftest import load_twin

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
#: The folder that holds the tinylsm under test: this checkout, or an install.
HOME = Path(tinylsm.__file__).resolve().parents[1]

# What a user gets for a misuse, and the types results have: one line of
# code each, with the message mypy gives for it (the first line of it; a
# "reveal_type" line gives the revealed type).  Every message names Lsm,
# the class users hold, and none the internal base class StoreCore.
MISUSE = [
    ('db.insert("abcd", b"xy")',
     'Argument 1 to "insert" of "Lsm" has incompatible type "str"; expected "Buffer"'),
    ("db.insert(b\"abcd\", None)",
     'Argument 2 to "insert" of "Lsm" has incompatible type "None"; expected "Buffer"'),
    ('db["abcd"] = b"xy"', 'Invalid index type "str" for "Lsm"; expected type "Buffer"'),
    ('del db["abcd"]',
     'Argument 1 to "__delitem__" of "Lsm" has incompatible type "str"; expected "Buffer"'),
    ('db.get("abcd")', 'No overload variant of "get" of "Lsm" matches argument type "str"'),
    ("db.remove(1)",
     'Argument 1 to "remove" of "Lsm" has incompatible type "int"; expected "Buffer"'),
    ('db.insert_if_absent(b"abcd", "xy")',
     'Argument 2 to "insert_if_absent" of "Lsm" has incompatible type "str"; '
     'expected "Buffer"'),
    ('db.setdefault("abcd", b"xy")',
     'Argument 1 to "setdefault" of "Lsm" has incompatible type "str"; expected "Buffer"'),
    ('db.get_many(["abcd"])', 'List item 0 has incompatible type "str"; expected "Buffer"'),
    ('db.range(prefix="a")',
     'Argument "prefix" to "range" of "Lsm" has incompatible type "str"; '
     'expected "Buffer | None"'),
    ("db.key_size = 3", 'Property "key_size" defined in "Lsm" is read-only'),
    ('db.write_packed("abcdxy")',
     'Argument 1 to "write_packed" of "Lsm" has incompatible type "str"; expected "Buffer"'),
    ("reveal_type(db.insert(bytearray(b\"abcd\"), memoryview(b\"xy\")))",
     'Revealed type is "bytes | None"'),
    ('reveal_type(db.get(b"abcd"))', 'Revealed type is "bytes | None"'),
    ('reveal_type(db.get(b"abcd", 0))', 'Revealed type is "bytes | int"'),
    ('reveal_type(db.get(b"abcd", b"zz"))', 'Revealed type is "bytes"'),
    ('reveal_type(db[array.array("b", b"abcd")])', 'Revealed type is "bytes"'),
    ('reveal_type(db.pop(bytearray(b"abcd"), None))', 'Revealed type is "bytes | None"'),
    ('reveal_type(db.get_many([b"abcd"]))', 'Revealed type is "list[bytes | None]"'),
    ("reveal_type(db.range())", 'Revealed type is "Iterator[tuple[bytes, bytes]]"'),
    ("reveal_type(iter(db))", 'Revealed type is "Iterator[bytes]"'),
    ("reveal_type(db.items())", 'Revealed type is "ItemsView[bytes, bytes]"'),
    ('reveal_type(db.export(prefix=bytearray(b"ab")))',
     'Revealed type is "Iterator[memoryview[int]]"'),
    ("reveal_type(db.stats().space_amp)", 'Revealed type is "float"'),
]


def _mypy(*args: str, cwd: Path, env: dict | None = None) -> str:
    """Run mypy; its report, which must not be a crash or a usage error."""
    proc = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def mypy_cache(request, tmp_path_factory):
    """mypy's cache, kept in pytest's (a second run here is quicker), or a
    fresh one when pytest keeps none (-p no:cacheprovider)."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e .[test])")
    cache = getattr(request.config, "cache", None)
    return str(cache.mkdir("mypy") if cache is not None else tmp_path_factory.mktemp("mypy"))


def test_the_package_passes_mypy_strict(mypy_cache):
    """``mypy`` with the project's settings (pyproject.toml: strict, for Python
    3.9, the package, its bench and cli), as a developer runs it."""
    out = _mypy("--cache-dir", mypy_cache, cwd=ROOT)
    assert out.strip().startswith("Success: no issues found"), out


def test_a_user_program_passes_mypy_strict_and_misuse_names_lsm(mypy_cache, tmp_path):
    """A user's ``mypy --strict`` (no settings of ours: run from elsewhere)
    passes typing_sample.py, and reports each misuse as ``MISUSE`` says,
    naming Lsm.  The tinylsm under test is a checkout (then on MYPYPATH, so
    that any error inside it is reported too) or an install (found as one)."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text("import array\nimport tinylsm\n\n"
                      "db = tinylsm.open('db', key_size=4, value_size=2)\n"
                      + "".join(code + "\n" for code, _ in MISUSE))
    first = 5  # the line of MISUSE[0]
    env = dict(os.environ)
    if HOME == ROOT:
        env["MYPYPATH"] = str(ROOT)
    out = _mypy("--strict", "--cache-dir", mypy_cache, "--no-error-summary",
                str(TESTS / "typing_sample.py"), misuse.name, cwd=tmp_path, env=env)
    assert "StoreCore" not in out, out
    got = {}
    for line in out.splitlines():
        where, _, message = line.partition(": ")
        assert where.startswith(f"{misuse.name}:"), f"not in the misuse file: {line}"
        kind, _, message = message.partition(": ")
        if kind in ("error", "note") and not message.startswith("    "):
            number = int(where.rsplit(":", 1)[1])
            message = re.sub(r"\s+\[[a-z-]+\]$", "", message)  # the error code
            message = re.sub(r"\b(builtins|typing)\.", "", message)
            message = _new_unions(message)
            got.setdefault(number, message)
    want = {first + i: message for i, (_, message) in enumerate(MISUSE)}
    assert got == want


def _new_unions(message: str) -> str:
    """``Union[A, B]`` and ``Optional[A]`` spelled ``A | B`` and ``A | None``,
    as mypy spells them unless the Python it checks for is older than 3.10."""
    while True:
        new = re.sub(r"\bUnion\[([^][]*)\]", lambda m: m.group(1).replace(", ", " | "), message)
        new = re.sub(r"\bOptional\[([^][]*)\]", r"\1 | None", new)
        if new == message:
            return new
        message = new


def test_the_sample_program_runs(tmp_path, capsys):
    """typing_sample.py is a real program: it runs, in this build."""
    runpy.run_path(str(TESTS / "typing_sample.py"))["main"](str(tmp_path))
    assert "closed:" in capsys.readouterr().out


def test_the_stubs_match_the_compiled_modules(tmp_path):
    """``stubtest``: _codec.pyi and _map.pyi against the compiled modules,
    with tests/stubtest_allowlist.txt for what the stubs leave out on
    purpose (each line says why)."""
    load_twin("_codec", "cython")  # skips where none was built, on purpose
    load_twin("_map", "cython")
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e .[test])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HOME)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(ROOT / "pyproject.toml"),
         "--allowlist", str(TESTS / "stubtest_allowlist.txt"), "tinylsm._codec", "tinylsm._map"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the pure twins are annotated as the stubs are ---------------------------------


def _annotations(tree: ast.Module) -> dict:
    """``{"name" or "Class.name": (parameters, return)}`` of every function,
    each annotation as source text (overloads: the overloads, in order)."""
    found: dict = {}

    def visit(body: list, prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{node.name}.")
            elif isinstance(node, ast.FunctionDef):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                sig = ([(a.arg, _text(a.annotation)) for a in args
                        if a.arg not in ("self", "cls")], _text(node.returns))
                overload = any(ast.unparse(d) == "overload" for d in node.decorator_list)
                entry = found.setdefault(prefix + node.name, [])
                if overload or not entry:
                    entry.append(sig)

    visit(tree.body, "")
    return found


def _text(annotation: ast.expr | None) -> str | None:
    """An annotation as source text, a quoted one unquoted.  A type alias of
    a stub only is private there (``_Change``: stubtest would look for it
    at run time); the twin's has the name without the underscore."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return re.sub(r"\b_Change\b", "Change", ast.unparse(annotation))


@pytest.mark.parametrize("module", ["_codec", "_map"])
def test_the_pure_twin_is_annotated_as_the_stub(module):
    """Each function or method the stub declares has the same parameter and
    return annotations (as written) in the pure-Python twin, where it has it
    (the compiled map's test hooks are only in the stub)."""
    package = ROOT / "tinylsm"
    stub = _annotations(ast.parse((package / f"{module}.pyi").read_text()))
    twin = _annotations(ast.parse((package / f"{module}_py.py").read_text()))
    shared = sorted(set(stub) & set(twin))
    assert len(shared) >= 15
    for name in shared:
        assert twin[name] == stub[name], name
    if module == "_map":  # made by __cinit__ there, so its stub declares __new__
        (new_params, _), = stub["SortedMap.__new__"]
        (init_params, _), = twin["SortedMap.__init__"]
        assert new_params == init_params
