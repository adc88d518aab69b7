"""Shared fixtures: both codec implementations, golden data, Hypothesis
profiles, and the chunk size recovery reads files in."""
from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

from tinylsm import _logread
import tinylsm
from tinylsm._backend import PAIRS, recorded_pure, switch

# CI gets bounded example counts so the suite stays well inside its time
# budget; TINYLSM_HYPOTHESIS=thorough asks for a long local run.
settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(
    os.environ.get("TINYLSM_HYPOTHESIS", "ci" if os.environ.get("CI") else "dev")
)

#: The two builds every twin test runs against.
BUILDS = ("cython", "python")


def load_twin(module: str, build: str):
    """``tinylsm.<module>`` (``"_codec"`` or ``"_map"``) of one build; the
    compiled one may be skipped only in a pure install (built with
    TINYLSM_PUREPYTHON=1, which built nothing), saying so."""
    name = f"tinylsm.{module}" if build == "cython" else f"tinylsm.{PAIRS[module]}"
    try:
        return importlib.import_module(name)
    except ImportError:
        if build == "cython" and (switch(os.environ)
                                  or recorded_pure(os.path.dirname(tinylsm.__file__))):
            pytest.skip(f"{name}: not built (a pure install, TINYLSM_PUREPYTHON=1)")
        raise


@pytest.fixture(params=BUILDS, ids=[f"{b}-codec" for b in BUILDS], scope="session")
def codec(request):
    """Each codec in turn: every codec test runs against both builds."""
    return load_twin("_codec", request.param)


@pytest.fixture(scope="session")
def both_codecs():
    """The compiled and the pure-Python codec together, for parity tests."""
    return load_twin("_codec", "cython"), load_twin("_codec", "python")


@pytest.fixture(params=BUILDS, ids=[f"{b}-map" for b in BUILDS], scope="session")
def Map(request):
    """Each sorted map class in turn."""
    return load_twin("_map", request.param).SortedMap


@pytest.fixture(scope="session")
def both_maps():
    """The compiled and the pure-Python map classes, for parity runs."""
    return load_twin("_map", "cython").SortedMap, load_twin("_map", "python").SortedMap


#: Run every test with recovery reading files this many bytes at a time
#: (``TINYLSM_TEST_CHUNK_SIZE=7 pytest``): a tiny size makes log frames,
#: batch headers, batches and zstd blocks straddle chunk boundaries.
CHUNK_VARIABLE = "TINYLSM_TEST_CHUNK_SIZE"

#: The chunk sizes of the ``chunk_size`` fixture: the default, and one so
#: small that every frame of the exhaustive tests' logs (at most 23 bytes)
#: straddles a boundary or sits alone in a read of its own.
CHUNK_SIZES = (None, 7)


@pytest.fixture(autouse=True)
def _chunk_size_from_environment(monkeypatch):
    value = os.environ.get(CHUNK_VARIABLE)
    if value:
        monkeypatch.setattr(_logread, "CHUNK_SIZE", int(value))


@pytest.fixture(params=CHUNK_SIZES, ids=lambda size: f"chunk-{size or 'default'}")
def chunk_size(request, monkeypatch):
    """Each test that asks for it runs with the default chunk size and with a
    tiny one (see CHUNK_SIZES); returns the size in use."""
    if request.param is not None:
        monkeypatch.setattr(_logread, "CHUNK_SIZE", request.param)
    return _logread.CHUNK_SIZE


@pytest.fixture(autouse=True, scope="session")
def _neutral_working_directory(tmp_path_factory):
    """Run the session from an empty folder: a child interpreter started
    with ``-c`` or ``-m`` puts its working directory first on ``sys.path``,
    and in an unpacked sdist that is a source folder without compiled
    modules, which would shadow the tinylsm under test (see ``child_env``)."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)
