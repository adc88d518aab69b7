"""Every example of README.md runs.

The ```python blocks and the ```console blocks run in README order, in one
temporary directory as the current directory, each Python block in a fresh
interpreter (a block that imports numpy only where numpy is installed: it is
no dependency of tinylsm).  In a console block, every ``$ tinylsm ...`` command runs (as
``python -m tinylsm``) and must exit 0; the lines after it, up to the next
``$``, are its expected output, where a line ``...`` stands for any number
of lines; one ending in ``> FILE`` writes its output to that file (in the
same directory) and shows none.  ``tinylsm bench`` commands are only parsed
(a real run takes minutes); other commands (``pip``, ``pytest``) are not
run here.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tinylsm import bench

from helpers import child_env

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

Block = Tuple[str, str, int]  # language, text, line number


def blocks(text: str) -> List[Block]:
    """The fenced blocks of a Markdown text, with the line each starts on."""
    out = []
    for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", text, re.M | re.S):
        out.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


def commands(block: str) -> List[Tuple[str, List[str]]]:
    """``$ command`` lines of a console block, each with its output lines."""
    out: List[Tuple[str, List[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def matches(expected: List[str], actual: List[str]) -> bool:
    """``expected`` equals ``actual``, a line ``...`` matching any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def env() -> Dict[str, str]:
    return child_env()


def test_readme_has_the_sections_and_commands():
    text = README.read_text()
    for heading in ("## Guarantees", "## Performance", "## Install and test",
                    "## Pure-Python mode", "## Quickstart", "## The API at a glance",
                    "## Durability", "## Command line"):
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), heading
    install = next(b for lang, b, _ in blocks(text) if "pip install" in b)
    assert install.splitlines() == ['$ pip install -e ".[test]"', "$ python -m pytest"]


def test_helpers_can_fail():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert not matches(["a"], ["a", "b"])
    assert [lang for lang, _, _ in blocks("```python\nx\n```\n```console\n$ y\n```\n")] == [
        "python", "console"]


def test_every_example_runs(tmp_path):
    ran = {"python": 0, "tinylsm": 0}
    for lang, text, line in blocks(README.read_text()):
        where = f"README.md block at line {line}"
        if lang == "python":
            if re.search(r"^import numpy", text, re.M) and not importlib.util.find_spec("numpy"):
                continue  # an example of NumPy with tinylsm, and no NumPy here
            out = subprocess.run([sys.executable, "-c", text], cwd=tmp_path, env=env(),
                                 capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, f"{where}:\n{out.stderr}"
            ran["python"] += 1
        elif lang == "console":
            for command, expected in commands(text):
                argv = shlex.split(command, comments=True)
                if argv[0] != "tinylsm":
                    continue
                ran["tinylsm"] += 1
                if argv[1:2] == ["bench"]:
                    bench.build_parser().parse_args(argv[2:])  # SystemExit if it is wrong
                    continue
                if argv[-2:-1] == [">"]:  # its output to a file
                    with open(tmp_path / argv[-1], "wb") as f:
                        out = subprocess.run([sys.executable, "-m", "tinylsm", *argv[1:-2]],
                                             cwd=tmp_path, env=env(), stdout=f,
                                             stderr=subprocess.PIPE, text=True, timeout=600)
                    out.stdout = ""
                else:
                    out = subprocess.run([sys.executable, "-m", "tinylsm", *argv[1:]],
                                         cwd=tmp_path, env=env(), capture_output=True,
                                         text=True, timeout=600)
                assert out.returncode == 0, f"{where}: {command}\n{out.stderr}"
                assert matches(expected, out.stdout.splitlines()), (
                    f"{where}: {command}\nexpected:\n" + "\n".join(expected)
                    + "\ngot:\n" + out.stdout)
        elif not lang:
            pytest.fail(f"{where}: a block without a language; mark it python, "
                        "console or text")
    assert ran["python"] >= 4 and ran["tinylsm"] >= 8, ran
