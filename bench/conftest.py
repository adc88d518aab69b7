"""Fixtures of the codec benchmarks, and a table of speed-ups at the end.

Run with ``pytest bench/`` (the default test path is ``tests/`` only).
"""
from __future__ import annotations

import importlib
import os

import pytest

CODEC_MODULES = {
    "cython-codec": "tinylsm._codec",
    "python-codec": "tinylsm._codec_py",
}

_MEANS = pytest.StashKey[dict]()


def pytest_configure(config):
    config.stash[_MEANS] = {}


@pytest.fixture(params=sorted(CODEC_MODULES), scope="session")
def codec(request):
    """Each codec implementation in turn; the compiled one may be skipped
    only when TINYLSM_PUREPYTHON asks for pure Python."""
    try:
        return importlib.import_module(CODEC_MODULES[request.param])
    except ImportError:
        if os.environ.get("TINYLSM_PUREPYTHON", "") not in ("", "0"):
            pytest.skip(f"{request.param}: compiled codec not built (TINYLSM_PUREPYTHON set)")
        raise


@pytest.fixture
def record_mean(request):
    """``record_mean(group, benchmark)`` after a run keeps its mean time, so
    the summary can set the two codecs of a group side by side."""
    means = request.config.stash[_MEANS]
    codec_id = request.node.callspec.params["codec"]

    def record(group, benchmark):
        if benchmark.stats is not None:  # None under --benchmark-disable
            means.setdefault(group, {})[codec_id] = benchmark.stats.stats.mean

    return record


def pytest_terminal_summary(terminalreporter, config):
    means = config.stash.get(_MEANS, {})
    rows = [(g, m) for g, m in sorted(means.items()) if len(m) == 2]
    if not rows:
        return
    terminalreporter.section("codec speed-up (mean python / mean cython)")
    width = max(len(g) for g, _ in rows)
    terminalreporter.write_line(
        f"{'benchmark'.ljust(width)}  {'cython ms':>10}  {'python ms':>10}  {'ratio':>7}"
    )
    for group, m in rows:
        c, p = m["cython-codec"], m["python-codec"]
        terminalreporter.write_line(
            f"{group.ljust(width)}  {c * 1e3:10.1f}  {p * 1e3:10.1f}  {p / c:6.1f}x"
        )


# -- engine benchmarks (test_engine_bench.py): a table of the engines' own figures

_RATES = pytest.StashKey[dict]()


@pytest.fixture
def engine_rates(request):
    """``engine_rates(row, label, unit, engine, value)`` keeps a figure an
    engine method measured itself, for the table at the end of the run;
    ``row`` is a workload of ``tinylsm.bench.WORKLOADS`` or one of the rows
    of ``tinylsm.bench.rows.ROWS``, which give the order of the table."""
    rates = request.config.stash.setdefault(_RATES, {})

    def record(row, label, unit, engine, value):
        rates.setdefault((row, label, unit), {})[engine] = value

    return record


class _EngineSummary:
    """Prints the engines' figures side by side, as ``tinylsm bench`` does."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter, config):
        rates = config.stash.get(_RATES, {})
        if not rates:
            return
        import tinylsm
        from tinylsm.bench import report
        from tinylsm.bench.engines import ENGINES
        from tinylsm.bench.rows import SUBROWS, WORKLOADS

        order = [sub or w for w in WORKLOADS for sub in SUBROWS.get(w, ("",))]
        engines = [e for e in ENGINES if any(e in r for r in rates.values())]
        rows = [["workload", "unit", *engines]]
        for (row, label, unit), per_engine in sorted(
                rates.items(), key=lambda kv: order.index(kv[0][0]) if kv[0][0] in order
                else len(order)):
            rows.append([label, unit, *(report.fmt(per_engine.get(e), unit) for e in engines)])
        terminalreporter.section(
            f"engine figures, measured by tinylsm.bench's methods (median of rounds; "
            f"codec: {tinylsm.BACKEND}; key/value bytes: "
            f"{os.environ.get('TINYLSM_BENCH_KV', '8/8')})")
        for line in report.layout(rows):
            terminalreporter.write_line(line)


def pytest_sessionstart(session):
    session.config.pluginmanager.register(_EngineSummary(), "tinylsm-engine-summary")
