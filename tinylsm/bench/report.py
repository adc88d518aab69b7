"""The printed report: the header that says what ran where, figures in
their units, tinylsm's ratio to each peer, and the table's layout."""
from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional, Sequence

import tinylsm

from .rows import NO_RATIO_UNITS, SUBROWS, Figures, row


def header(count: int, key_size: int, value_size: int, root: str) -> List[str]:
    """The lines above the table: versions, machine, sizes, where the files go."""
    fs = file_system(root)
    return [
        _versions(),
        f"{_sizes(count, key_size, value_size)}, in {root}" + (f" ({fs})" if fs else ""),
        "",
    ]


def title(count: int, key_size: int, value_size: int) -> str:
    """The header in one line, without the directory (for the chart)."""
    return f"{_versions()}; {_sizes(count, key_size, value_size)}"


def _versions() -> str:
    return (f"tinylsm {tinylsm.__version__} (codec: {tinylsm.BACKEND}) on Python "
            f"{platform.python_version()}, {platform.system()} {platform.machine()}")


def _sizes(count: int, key_size: int, value_size: int) -> str:
    return f"{count:,} keys of {key_size} B, values of {value_size} B"


def file_system(path: str) -> str:
    """The type of the file system holding ``path`` (Linux), or ''."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return ""
    path = os.path.realpath(path)
    best = ("", "")
    for point, fstype in mounts:
        point = point.replace("\\040", " ")  # /proc/mounts escapes spaces
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, fstype)
    return best[1]


def fmt(value: Optional[float], unit: str) -> str:
    """A figure in its unit, short: "1.23M", "45.6 ms", "20.5 B"; "-" for none."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B/key":
        return f"{value:.1f} B"
    if unit == "us":
        return f"{value:,.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "inserts":
        return f"{value:,.0f}"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        # rounded first: 999,700 is "1M", not "1e+03k"
        if float(f"{value / scale:.3g}") >= 1:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_ratio(r: float) -> str:
    """A ratio with two decimals, or two significant digits below 1."""
    if r >= 100:
        return f"{r:.0f}x"
    return f"{r:.2f}x" if r >= 1 else f"{r:#.2g}x"


def ratio(tiny: float, peer: float, higher_is_better: bool) -> float:
    """How many times better tinylsm does than ``peer`` (above 1: better)."""
    if higher_is_better:
        return tiny / peer if peer else float("inf")
    return peer / tiny if tiny else float("inf")


def render(figures: Figures, workloads: Sequence[str], engines: Sequence[str],
           labels: Dict[str, str]) -> List[str]:
    """The table: one row per workload (and the rows it adds), tinylsm
    first, then each peer with tinylsm's ratio to it."""
    rows = [["workload", "unit", *engines]]
    for name in workloads:
        for sub in SUBROWS.get(name, ("",)):
            key = sub or name
            per_engine = figures.get(key, {})
            label, unit, higher = row(key)
            cells = [labels.get(key, label), unit]
            tiny = per_engine.get("tinylsm")
            for engine in engines:
                value = per_engine.get(engine)
                cell = fmt(value, unit)
                if (engine != "tinylsm" and value is not None and tiny is not None
                        and unit not in NO_RATIO_UNITS):
                    cell += f" ({fmt_ratio(ratio(tiny, value, higher))})"
                cells.append(cell)
            rows.append(cells)
    return layout(rows)


def layout(rows: Sequence[Sequence[str]]) -> List[str]:
    """Text lines of a table whose first row is the header: the first two
    columns (workload, unit) left-aligned, the figures right-aligned, a rule
    under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, cells in enumerate(rows):
        parts = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        parts += [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
