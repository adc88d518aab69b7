"""Shared fixtures: both codec implementations, golden data, Hypothesis profiles."""
from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

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

CODEC_MODULES = {
    "cython-codec": "tinylsm._codec",
    "python-codec": "tinylsm._codec_py",
}


def load_codec(name: str):
    """Import one codec implementation by its fixture id, or skip naming why."""
    try:
        return importlib.import_module(CODEC_MODULES[name])
    except ImportError as exc:
        if os.environ.get("TINYLSM_PUREPYTHON", "") not in ("", "0"):
            pytest.skip(f"{name}: compiled codec not built (TINYLSM_PUREPYTHON set)")
        raise exc


@pytest.fixture(params=sorted(CODEC_MODULES), scope="session")
def codec(request):
    """Each codec implementation in turn: every codec test runs against both."""
    return load_codec(request.param)


@pytest.fixture(scope="session")
def both_codecs():
    """The compiled and the pure-Python codec together, for parity tests."""
    return load_codec("cython-codec"), load_codec("python-codec")
