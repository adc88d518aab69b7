"""The ``tinylsm bench`` command (also ``python -m tinylsm.bench``): its
options, the run from the header to the notes, and its exit statuses."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, TextIO

import tinylsm

from .. import _progress
from .._args import EXIT_USAGE, ArgumentParser, size_arg
from . import chart, notes, report, rows
from .data import SUSTAINED_PER_KEY, Data, frame_size
from .durable import SYNC_SECONDS
from .engines import ENGINE_CLASSES, ENGINES, Engine
from .rows import WORKLOADS
from .workloads import Session

EPILOG = """\
examples:
  %(prog)s                        1,000,000 keys of 8 bytes, values of 8 bytes
  %(prog)s -n 20000               a quick run (a few seconds)
  %(prog)s -n 100000 --key-size 16 --value-size 100 --workloads insert,get,scan
  %(prog)s --dir /mnt/ssd         put the files on another file system
  %(prog)s -n 20000 --workloads sustained --sustained-count 2000000
                                  2,000,000 timed inserts, the log rolling over
  %(prog)s --chart bench.svg      the table, and a chart of it (needs matplotlib)

workloads: """ + ", ".join(WORKLOADS) + """
ratios: (2.50x) after a peer's figure means tinylsm does 2.5 times better
(faster, or fewer bytes); below 1, the peer does better.
"""


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _names(choices: Sequence[str], what: str) -> Callable[[str], List[str]]:
    """argparse type for a comma-separated list of ``choices`` (or "all")."""
    def parse(text: str) -> List[str]:
        names = [w.strip() for w in text.split(",") if w.strip()]
        if names == ["all"]:
            return list(choices)
        bad = [w for w in names if w not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or repr(text)}; choose from {', '.join(choices)}")
        return names
    return parse


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The options of ``tinylsm bench``, with one-line usage errors."""
    p = ArgumentParser(
        prog=prog,
        description="Run tinylsm and its peers (dict, sqlite3, and lmdb when installed) "
                    "on the same generated data and print rates and ratios.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--count", type=_positive, default=1_000_000, metavar="N",
                   help="number of keys (default 1,000,000)")
    p.add_argument("--key-size", type=_positive, default=8, metavar="K",
                   help="key size in bytes (default 8)")
    p.add_argument("--value-size", type=size_arg, default=8, metavar="V",
                   help="value size in bytes (default 8)")
    p.add_argument("--workloads", type=_names(list(WORKLOADS), "workload"),
                   default=list(WORKLOADS), metavar="LIST",
                   help="comma-separated workloads to run (default all)")
    p.add_argument("--engines", type=_names(ENGINES, "engine"), default=list(ENGINES),
                   metavar="LIST",
                   help="comma-separated stores to run: " + ", ".join(ENGINES)
                   + " (default all; tinylsm always runs)")
    p.add_argument("--dir", metavar="DIR",
                   help="make the temporary directory inside DIR (default: the system's)")
    p.add_argument("--range-queries", type=_positive, default=10_000, metavar="Q",
                   help="range queries to run (default 10,000)")
    p.add_argument("--range-length", type=_positive, default=100, metavar="L",
                   help="items per range query (default 100)")
    p.add_argument("--sync-count", type=_positive, default=2000, metavar="S",
                   help="inserts in the insert+flush workload (default 2000; it stops "
                        f"after {SYNC_SECONDS:g} s per store anyway)")
    p.add_argument("--sustained-count", type=_positive, default=None, metavar="C",
                   help=f"inserts in the sustained workload (default {SUSTAINED_PER_KEY} "
                        "times N: 6,000,000 for the default N, whose log rolls over "
                        "into an sstable about 3.8 times at 8/8)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    p.add_argument("--chart", metavar="FILE",
                   help="also draw the rates and ratios into FILE (.svg, .png or .pdf; "
                        "needs matplotlib)")
    return p


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run the workloads ``args`` asks for and print the report to ``out``
    (default stdout); the files go to a temporary directory, removed after."""
    out = out or sys.stdout
    root = tempfile.mkdtemp(prefix="tinylsm-bench-", dir=args.dir)
    try:
        # flushed before any progress bar starts on stderr, which may be the
        # same terminal: the bar then has a line of its own
        print("\n".join(report.header(args.count, args.key_size, args.value_size, root)),
              file=out, flush=True)
        session = _session(args, root)
        try:
            figures = session.run(args.workloads)
        finally:
            session.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    shown = [e for e in session.engines if any(e in per for per in figures.values())]
    labels = rows.labels(args.count, args.range_length)
    table = report.render(figures, args.workloads, shown, labels)
    print("\n".join(table + [""] + notes.notes(session, args.workloads, shown)), file=out,
          flush=True)
    if args.chart:
        chart.draw(args.chart, figures, args.workloads, shown, labels,
                   report.title(args.count, args.key_size, args.value_size))
        print(f"chart written to {args.chart}", file=sys.stderr)
    return 0


def _session(args: argparse.Namespace, root: str) -> Session:
    """Generate the data and make the engines (tinylsm first) that can run
    here; the others are noted as skipped."""
    _progress.announce(f"generating data ({args.count:,} keys) ...")
    bar = _progress.bar(desc="generating data", unit="step")
    try:
        data = Data(args.count, args.key_size, args.value_size, args.seed,
                    args.range_queries, args.range_length, min(args.sync_count, args.count),
                    args.sustained_count)
    finally:
        bar.close()
    skipped: List[str] = []
    engines: Dict[str, Engine] = {}
    for name in ["tinylsm"] + [e for e in args.engines if e != "tinylsm"]:
        why = ENGINE_CLASSES[name].unavailable(args.key_size, root)
        if why:
            skipped.append(why)
        else:
            engines[name] = ENGINE_CLASSES[name](data, root)
    session = Session(data, engines)
    session.notes.extend(skipped)
    return session


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run the comparison with ``argv`` (default ``sys.argv[1:]``), ``prog``
    naming the command in messages; returns the exit status: 0, 1 for an
    error during the run, 2 for bad arguments, 130 when interrupted."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.count > 256 ** args.key_size:
            parser.error(f"-n {args.count}: only {256 ** args.key_size:,} distinct keys of "
                         f"{args.key_size} bytes exist")
        if args.sustained_count is not None and args.sustained_count > 256 ** args.key_size:
            parser.error(f"--sustained-count {args.sustained_count}: only "
                         f"{256 ** args.key_size:,} distinct keys of {args.key_size} bytes exist")
        if args.dir is not None and not os.path.isdir(args.dir):
            parser.error(f"--dir {args.dir}: no such directory")
        if args.chart is not None:
            why = chart.unavailable(args.chart)
            if why:
                parser.error(why)
        frame_size(args.key_size, args.value_size)
    except ValueError as exc:  # sizes tinylsm refuses
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run(args)
    except (ValueError, OSError, tinylsm.Error) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
