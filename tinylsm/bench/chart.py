"""The benchmark as a picture: ``tinylsm bench --chart FILE`` draws each
engine's rates, and tinylsm's ratio to each peer, from the figures of the
run just printed (matplotlib, an optional extra: ``pip install matplotlib``).

The format follows the file's suffix (``.svg``, ``.png``, ``.pdf``)."""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .report import fmt, fmt_ratio, ratio
from .rows import NO_RATIO_UNITS, SUBROWS, Figures, row

#: The units of the left panel: how many per second (higher is better).
RATE_UNITS = ("ops/s", "items/s", "keys/s", "queries/s")
#: File suffixes matplotlib writes without extra packages.
FORMATS = (".svg", ".png", ".pdf")
#: One colour per engine, the same in both panels.
COLOURS = {"tinylsm": "#1f6feb", "dict": "#8c959f", "sqlite3": "#bf8700",
           "lmdb": "#8250df", "disk": "#57606a"}


def unavailable(path: str) -> str:
    """Why ``path`` cannot be drawn here ('' when it can): an unknown
    suffix, or matplotlib not installed.  Checked before the run starts."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        return (f"--chart {path}: expected a file name ending in "
                f"{', '.join(FORMATS)}, got {suffix or 'no suffix'!r}")
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return ("--chart needs matplotlib, which is not installed: pip install matplotlib "
                "(or the bench extra, see the README)")
    return ""


def _rows(figures: Figures, workloads: Sequence[str]) -> List[str]:
    """Every row this run has figures for, in the table's order."""
    names = []
    for name in workloads:
        for sub in SUBROWS.get(name, ("",)):
            key = sub or name
            if figures.get(key):
                names.append(key)
    return names


def rates(figures: Figures, workloads: Sequence[str], engines: Sequence[str]
          ) -> List[Tuple[str, Dict[str, float]]]:
    """(row, engine -> rate) for the rows measured in operations per second."""
    out = []
    for key in _rows(figures, workloads):
        if row(key).unit in RATE_UNITS:
            values = {e: v for e, v in figures[key].items() if e in engines and v}
            if values:
                out.append((key, values))
    return out


def ratios(figures: Figures, workloads: Sequence[str], engines: Sequence[str]
           ) -> List[Tuple[str, Dict[str, float]]]:
    """(row, peer -> tinylsm's ratio to it, above 1 when tinylsm does better)
    for every row with a ratio in the table."""
    out = []
    for key in _rows(figures, workloads):
        label, unit, higher = row(key)
        tiny = figures[key].get("tinylsm")
        if unit in NO_RATIO_UNITS or not tiny:
            continue
        values = {e: ratio(tiny, v, higher) for e, v in figures[key].items()
                  if e != "tinylsm" and e in engines and v}
        if values:
            out.append((key, values))
    return out


def draw(path: str, figures: Figures, workloads: Sequence[str], engines: Sequence[str],
         labels: Dict[str, str], title: str) -> None:
    """Write the chart of ``figures`` to ``path``."""
    # imported by name, so that type checking passes the same whether the
    # optional matplotlib is installed or not: Any here either way (and
    # mypy does not read matplotlib's code, newer than Python 3.9 allows)
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # no screen needed, whatever the user's default
    # SVG text as text, not glyph outlines: smaller, searchable, selectable
    matplotlib.rcParams["svg.fonttype"] = "none"
    plt = importlib.import_module("matplotlib.pyplot")

    left, right = rates(figures, workloads, engines), ratios(figures, workloads, engines)
    height = 1.5 + 0.16 * max(_bars(left), _bars(right), 8)
    fig, (ax_rate, ax_ratio) = plt.subplots(1, 2, figsize=(14, height))
    _grouped(ax_rate, left, labels, engines, lambda v, key: fmt(v, row(key).unit))
    ax_rate.set_title("rate (per second; longer is better)")
    _grouped(ax_ratio, right, labels, [e for e in engines if e != "tinylsm"],
             lambda v, key: fmt_ratio(v))
    ax_ratio.axvline(1.0, color="black", linewidth=0.8)
    ax_ratio.set_title("tinylsm / peer (above 1x: tinylsm faster or smaller)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))
    fig.savefig(path)
    plt.close(fig)


def _bars(groups: List[Tuple[str, Dict[str, float]]]) -> int:
    return sum(len(values) + 1 for _, values in groups)


def _grouped(ax: Any, groups: List[Tuple[str, Dict[str, float]]], labels: Dict[str, str],
             engines: Sequence[str], text: Callable[[float, str], str]) -> None:
    """Horizontal bars on a log scale, one group per row, top to bottom."""
    y, ticks, names = 0.0, [], []
    seen = set()
    for key, values in groups:
        names.append(labels.get(key, row(key).label))
        ticks.append(y + (len(values) - 1) / 2)
        for engine in engines:
            if engine not in values:
                continue
            v = values[engine]
            ax.barh(-y, v, height=0.8, color=COLOURS.get(engine, "#444c56"),
                    label=None if engine in seen else engine)
            ax.text(v, -y, " " + text(v, key), va="center", fontsize=7)
            seen.add(engine)
            y += 1
        y += 1
    ax.set_xscale("log")
    ax.set_yticks([-t for t in ticks])
    ax.set_yticklabels(names, fontsize=8)
    ax.margins(x=0.25)
    if seen:
        ax.legend(fontsize=8, loc="lower right")
