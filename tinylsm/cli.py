"""The ``tinylsm`` command: look into stores, check them, compact them, and
compare tinylsm with its peers.

Every command that takes a store directory reads the key and value sizes
from its ``tinylsm.meta``; a directory written by the Rust crate records
none, and needs ``--key-size K --value-size V`` (for any other store, a size
given is checked against the record).  Only ``compact`` changes
anything on disk: the others open the store read-only.

Exit status: 0 success; 1 damage found (``verify``, or a corrupt store) or
key not found (``get``); 2 bad arguments (including a missing directory or
unknown sizes); 3 the store could not be read (locked by a writer, or an
operating-system error).  ``verify`` counts a torn log tail as damage: after
a crash it means changes that were not flushed are lost.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from itertools import islice
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import tinylsm

from . import _layout, _meta, _progress, _recovery, _verify, sstable
from ._args import ArgumentParser, size_arg
from ._backend import codec
from ._format import LOG_NAME, META_NAME, SSTABLE_DIR
from ._fs import DEFAULT as FILES
from ._gate import Gate
from ._logread import zeros
from ._text import noun, plural
from .errors import (
    CompactionError,
    CorruptionError,
    Error,
    LockedError,
    LogFailedError,
    ReadOnlyError,
)

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_READONLY = 4
EXIT_LOG_FAILED = 5
EXIT_COMPACTION_FAILED = 6

PROG = "tinylsm"

EXIT_HELP = """\
exit status: 0 success; 1 damage found (verify, or a corrupt store) or key not
found (get); 2 bad arguments, missing directory or unknown sizes; 3 the store
could not be read (locked by a writer, or an operating-system error); 4 the
store refused a change (read-only); 5 the log refused writes after a failed
fsync; 6 a compaction failed (the data is safe)."""

EXAMPLES = """\
examples:
  tinylsm stats mydb                    sizes, keys, sstables, space amplification
  tinylsm get mydb 0000000000000007     one value, key in hex (K bytes = 2K digits)
  tinylsm get mydb 7 --int big          the same key given as a big-endian integer
  tinylsm dump mydb --limit 3           the first items, "key value" in hex
  tinylsm dump mydb --format json --int big --start 10 --stop 20
  tinylsm dump mydb --raw > records.bin   packed binary records (key + value)
  tinylsm verify mydb                   check every file; exit 0 only when clean
  tinylsm compact mydb                  merge everything into one sstable
  tinylsm bench -n 20000                compare with dict, sqlite3 and lmdb
  tinylsm stats rustdb --key-size 8 --value-size 8   a store written by tiny-lsm

""" + EXIT_HELP



class UsageError(Exception):
    """A bad argument: reported on one line, exit status 2."""


# -- arguments -------------------------------------------------------------------


def parse_key(text: str, size: int, byte_order: Optional[str], what: str = "KEY") -> bytes:
    """A key argument: ``2*size`` hex digits (``0x`` allowed), or with
    ``byte_order`` an unsigned integer (decimal, or ``0x`` hex) written in
    ``size`` bytes of that order."""
    if byte_order is None:
        digits = text[2:] if text[:2].lower() == "0x" else text
        if not re.fullmatch(r"[0-9a-fA-F]*", digits):
            raise UsageError(f"{what} {text!r} is not hexadecimal (use --int big|little "
                             "for integers)")
        if len(digits) != 2 * size:
            raise UsageError(f"{what} {text!r} has {plural(len(digits), 'hex digit')}; keys "
                             f"of this store are {plural(size, 'byte')} = "
                             f"{plural(2 * size, 'hex digit')}")
        return bytes.fromhex(digits)
    try:
        number = int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an integer") from None
    if number < 0 or number >= 1 << (8 * size):
        raise UsageError(f"{what} {text!r} does not fit in {plural(size, 'unsigned byte')}")
    return number.to_bytes(size, byte_order)  # type: ignore[arg-type]


def show(data: bytes, byte_order: Optional[str]) -> Union[str, int]:
    """Bytes as shown: hex, or an unsigned integer of ``byte_order``."""
    if byte_order is None:
        return data.hex()
    return int.from_bytes(data, byte_order)  # type: ignore[arg-type]


def store_sizes(args: argparse.Namespace) -> Tuple[int, int, str]:
    """Check ``args.dir`` is a store and return ``(K, V, where they came from)``."""
    directory = args.dir
    if not os.path.exists(directory):
        raise UsageError(f"{directory}: no such directory")
    if not os.path.isdir(directory):
        raise UsageError(f"{directory}: not a directory")
    names = set(os.listdir(directory))
    if not names & _layout.STORE_NAMES:
        raise UsageError(f"{directory}: not a tinylsm or tiny-lsm store "
                         f"(no {LOG_NAME}, {SSTABLE_DIR}/ or {META_NAME})")
    given = (args.key_size, args.value_size)
    recorded = _meta.read_sizes(FILES, directory)
    try:
        k, v = _recovery.settle_sizes(directory, recorded, *given)
    except TypeError:
        raise UsageError(
            f"{directory} records no key and value sizes (a store written by the Rust "
            "tiny-lsm?): give them with --key-size K --value-size V") from None
    except ValueError as exc:
        if recorded is None:
            raise UsageError(str(exc)) from None
        options = " and ".join(f"{option} {size}" for option, size
                               in zip(("--key-size", "--value-size"), given) if size is not None)
        raise UsageError(
            f"{directory} records key size {recorded[0]} and value size {recorded[1]}, "
            f"not {options}: leave --key-size and --value-size out"
        ) from None
    return k, v, META_NAME if recorded is not None else "the command line"


def open_readonly(args: argparse.Namespace, quiet: bool = False) -> tinylsm.Lsm:
    """The store read-only, as a snapshot if a writer has it open (then,
    unless ``quiet``, a note on stderr says so)."""
    k, v, _ = store_sizes(args)
    db = tinylsm.open(args.dir, key_size=k, value_size=v, readonly=True)
    if not quiet and db.live:
        print(f"{PROG}: note: {args.dir} is live (a writer has it open): "
              "this is a snapshot of the moment it was read", file=sys.stderr)
    return db


# -- stats ---------------------------------------------------------------------------


def _sstable_files(directory: str) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    """``([(name, bytes)] of sstables in id order, [(name, bytes)] of -tmp files)``."""
    ssdir = os.path.join(directory, SSTABLE_DIR)
    if not os.path.isdir(ssdir):
        return [], []
    with Gate(ssdir).shared():  # a live writer removes files only outside it
        ids, tmps = sstable.list_dir(FILES, ssdir)
        tables = [(ids[i], os.path.getsize(os.path.join(ssdir, ids[i]))) for i in sorted(ids)]
        unfinished = []
        for name in tmps:  # a live writer's own, renamed or removed at any time
            try:
                unfinished.append((name, os.path.getsize(os.path.join(ssdir, name))))
            except FileNotFoundError:
                pass
    return tables, unfinished


def _zeros_after(log_path: str, offset: int) -> bool:
    """Whether the log's bytes after ``offset`` are zeros a writer wrote ahead."""
    fd = FILES.open_ro(log_path)
    try:
        return zeros(FILES, fd, offset, FILES.size(fd))
    finally:
        FILES.close(fd)


def cmd_stats(args: argparse.Namespace) -> int:
    with open_readonly(args, quiet=True) as db:
        is_live = db.live
        st = db.stats()
        k, v = db.key_size, db.value_size
        frame = codec.frame_size(k, v)
        log_path = os.path.join(args.dir, LOG_NAME)
        log_file = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        tables, tmps = _sstable_files(args.dir)
    torn = log_file - st.log_bytes  # live: appended since it was read, mostly
    ahead = torn > 0 and not is_live and _zeros_after(log_path, st.log_bytes)
    sst_bytes = sum(n for _, n in tables)
    on_disk = log_file + sst_bytes
    live = st.keys * (k + v)
    amp = on_disk / live if live else None
    if args.json:
        print(json.dumps({
            "path": args.dir, "live": is_live, "key_size": k, "value_size": v, "keys": st.keys,
            "live_bytes": live, "log_bytes": log_file,
            "log_torn_bytes": 0 if ahead else torn, "log_zero_bytes": torn if ahead else 0,
            "sstables": [{"name": n, "bytes": b} for n, b in tables],
            "unfinished_sstables": [{"name": n, "bytes": b} for n, b in tmps],
            "sstable_bytes": sst_bytes, "on_disk_bytes": on_disk, "space_amp": amp,
        }, indent=2))
        return EXIT_OK
    rows = [
        ("store", args.dir + ("  (live: a writer has it open; the figures are a "
                              "snapshot)" if is_live else "")),
        ("key size", plural(k, "byte")),
        ("value size", plural(v, "byte")),
        ("keys", f"{st.keys:,}"),
        ("live data", f"{plural(live, 'byte')} (keys x (key size + value size))"),
        (LOG_NAME, f"{plural(log_file, 'byte')}, {plural(st.log_bytes // frame, 'frame')} "
         f"of {frame} bytes"
         + ((f" + {plural(torn, 'byte')} appended since the snapshot" if is_live else
             f" + {plural(torn, 'zero byte')} written ahead (preallocated)" if ahead else
             f" + a torn tail of {plural(torn, 'byte')} (see tinylsm verify)") if torn else "")),
        ("sstables", f"{plural(len(tables), 'file')}, {plural(sst_bytes, 'byte')}"),
    ]
    width = max(len(name) for name, _ in rows + [("space amp", "")])
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for name, size in tables:
        print(f"  {name}  {size:>12,} {noun(size, 'byte')}")
    for name, size in tmps:
        print(f"  {name}  {size:>12,} {noun(size, 'byte')}  unfinished write, removed by "
              "the next writable open")
    print(f"{'on disk':<{width}}  {plural(on_disk, 'byte')} (log + sstables)")
    print(f"{'space amp':<{width}}  "
          + (f"{amp:.2f} (on disk / live data)" if amp is not None else "- (no keys)"))
    return EXIT_OK


# -- get and dump -----------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    with open_readonly(args) as db:
        key = parse_key(args.key, db.key_size, args.int)
        value = db.get(key)
    if value is None:
        print(f"{PROG}: key {args.key} not found", file=sys.stderr)
        return EXIT_DAMAGED
    print(show(value, args.int))
    return EXIT_OK


#: Records per chunk that ``dump --raw`` asks ``export`` for (1 MiB at 8/8).
RAW_CHUNK = 65536


def cmd_dump(args: argparse.Namespace) -> int:
    if args.raw:
        if args.format is not None:
            raise UsageError("--raw writes packed binary records; --format does not apply")
        if sys.stdout.isatty():
            raise UsageError("--raw writes binary records: redirect the output to a file "
                             "or a pipe (e.g. > records.bin, or | cat to see them anyway)")
    with open_readonly(args) as db:
        start = None if args.start is None else parse_key(args.start, db.key_size, args.int,
                                                          "--start")
        stop = None if args.stop is None else parse_key(args.stop, db.key_size, args.int,
                                                        "--stop")
        if args.raw:
            return _dump_raw(db, start, stop, args.limit)
        items: Iterable[Tuple[bytes, bytes]] = db.range(start, stop)
        if args.limit is not None:
            items = islice(items, args.limit)
        if not sys.stdout.isatty():  # a bar would garble a terminal's output
            total = len(db) if args.limit is None else min(args.limit, len(db))
            items = _progress.wrap(items, total=total, desc="dump", unit="item")
        write = sys.stdout.write
        order = args.int
        if args.format == "json":  # None: hex, the default
            for k, v in items:
                write(json.dumps({"key": show(k, order), "value": show(v, order)}) + "\n")
        else:
            for k, v in items:
                write(f"{show(k, order)} {show(v, order)}\n")
    return EXIT_OK


def _dump_raw(db: tinylsm.Lsm, start: Optional[bytes], stop: Optional[bytes],
              limit: Optional[int]) -> int:
    """``dump --raw``: the records ``key + value`` of ``start <= key < stop``
    (at most ``limit``) packed, in key order, on stdout as bytes: what
    ``Lsm.export`` yields, and ``Lsm.write_packed`` takes."""
    rsize = db.key_size + db.value_size
    left = len(db) if limit is None else limit
    out = sys.stdout.buffer
    with _progress.bar(total=min(left, len(db)), desc="dump", unit="record") as bar:
        if left:
            for chunk in db.export(start, stop, chunk_records=min(left, RAW_CHUNK)):
                count = min(len(chunk) // rsize, left)
                out.write(chunk[:count * rsize])
                bar.update(count)
                left -= count
                if not left:
                    break
    out.flush()
    return EXIT_OK


# -- verify ------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    directory = args.dir
    try:
        k, v, source = store_sizes(args)
    except CorruptionError as exc:  # tinylsm.meta unreadable
        print(f"{META_NAME}: CORRUPT: {exc}")
        print(f"NOT CLEAN: {META_NAME} is unreadable")
        return EXIT_DAMAGED
    clean, summary = _verify.verify(directory, k, v, source)
    print(summary)
    return EXIT_OK if clean else EXIT_DAMAGED


# -- compact -------------------------------------------------------------------------------


def _space(st: tinylsm.Stats) -> str:
    amp = f"{st.space_amp:.2f}" if st.resident_bytes else "-"
    return (f"{plural(st.on_disk_bytes, 'byte')} on disk ({plural(st.sstables, 'sstable')}, "
            f"log of {plural(st.log_bytes, 'byte')}) for {plural(st.keys, 'key')}, "
            f"space amp {amp}")


def cmd_compact(args: argparse.Namespace) -> int:
    k, v, source = store_sizes(args)
    had_meta = source == META_NAME
    try:
        db = tinylsm.open(args.dir, key_size=k, value_size=v)
    except LockedError as exc:
        raise LockedError(f"{exc}: compact needs the store to itself (call compact() "
                          "in the process that has it open)") from None
    with db:
        print(f"before: {_space(db.stats())}")
        if _progress.enabled():
            print("compacting...", file=sys.stderr, flush=True)
        db.compact()
        after = db.stats()
    print(f"after:  {_space(after)}")
    if not had_meta:
        print(f"note: recorded the sizes in {META_NAME} (the Rust tiny-lsm ignores "
              "that file)")
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------------


def _directory_parent() -> ArgumentParser:
    p = ArgumentParser(add_help=False)
    p.add_argument("dir", metavar="DIR", help="the store's directory")
    g = p.add_argument_group("sizes (needed only for a store written by the Rust tiny-lsm, "
                             "which does not record them; others are checked against "
                             "the record)")
    g.add_argument("--key-size", type=size_arg, metavar="K", help="key size in bytes")
    g.add_argument("--value-size", type=size_arg, metavar="V", help="value size in bytes")
    return p


def _int_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int", choices=("big", "little"), metavar="ORDER",
                   help="show keys and values as unsigned integers of this byte order "
                        "(big or little), and take KEY arguments as integers")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(
        prog=PROG,
        description="Look into, check and compact tinylsm stores (and stores written by "
                    "the Rust crate tiny-lsm); compare tinylsm with its peers.",
        epilog=EXAMPLES, formatter_class=fmt)
    parser.add_argument("--version", action="version",
                        version=f"tinylsm {tinylsm.__version__} (codec: {tinylsm.BACKEND})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = _directory_parent()

    p = sub.add_parser("stats", parents=[parent], formatter_class=fmt,
                       help="sizes, key count, sstables, log length, space amplification",
                       description="Show a store's sizes (opened read-only).",
                       epilog="example:\n  tinylsm stats mydb\n  tinylsm stats mydb --json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("get", parents=[parent], formatter_class=fmt,
                       help="print the value of one key",
                       description="Print the value of KEY (opened read-only); exit 1 "
                                   "if it is absent.",
                       epilog="examples:\n  tinylsm get mydb 0000000000000007\n"
                              "  tinylsm get mydb 7 --int big")
    p.add_argument("key", metavar="KEY", help="the key: hex, or an integer with --int")
    _int_option(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("dump", parents=[parent], formatter_class=fmt,
                       help="print keys and values in key order",
                       description="Print the items with START <= key < STOP in key "
                                   "order (opened read-only): one \"key value\" line each "
                                   "in hex, or one JSON object per line; or, with --raw, "
                                   "write them as packed binary records, each its key then "
                                   "its value (K + V bytes, no separator), as "
                                   "Lsm.export() yields them and Lsm.write_packed() "
                                   "takes them.",
                       epilog="examples:\n  tinylsm dump mydb --limit 3\n"
                              "  tinylsm dump mydb --format json --int big --start 10 "
                              "--stop 20\n"
                              "  tinylsm dump mydb --raw > records.bin\n\n"
                              "--raw refuses to write to a terminal: redirect it to a "
                              "file or a pipe (| cat writes to the terminal anyway).")
    p.add_argument("--start", metavar="KEY", help="first key (included)")
    p.add_argument("--stop", metavar="KEY", help="last key (excluded)")
    p.add_argument("--limit", type=size_arg, metavar="N", help="print at most N items")
    p.add_argument("--format", choices=("hex", "json"), default=None,
                   help="hex: \"key value\" lines (default); json: JSON lines "
                        "{\"key\": ..., \"value\": ...}")
    p.add_argument("--raw", action="store_true",
                   help="write packed binary records (key then value, K + V bytes "
                        "each) to stdout, which must not be a terminal; --int then "
                        "only reads --start and --stop")
    _int_option(p)
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser(
        "verify", parents=[parent], formatter_class=fmt,
        help="check every sstable and the log; exit 0 only when clean",
        description="Read every sstable and the log and report, per file, its records "
                    "and tombstones, a torn log tail (where, how many bytes) and any "
                    "corruption (file, record, reason); then open the store read-only "
                    "to see what recovery makes of it.  Nothing is changed.  The last "
                    "line is a one-line summary.",
        epilog="example:\n  tinylsm verify mydb\n\nexit status: 0 clean; 1 damage found: "
               "corruption, a cut-short sstable, or a torn log tail (changes that were "
               "not flushed before a crash; a writable open cuts them off); 2 bad "
               "arguments; 3 locked by a writer or unreadable.")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("compact", parents=[parent], formatter_class=fmt,
                       help="merge the log and all sstables into one sstable",
                       description="Open the store for writing (which recovers it: a torn "
                                   "log tail is cut off) and run a full compaction, "
                                   "printing the space before and after.",
                       epilog="example:\n  tinylsm compact mydb")
    p.set_defaults(func=cmd_compact)

    # listed for --help; main() hands "bench ..." to tinylsm.bench before parsing
    sub.add_parser("bench", add_help=False,
                   help="compare tinylsm with dict, sqlite3 and lmdb (see tinylsm bench "
                        "--help)")
    return parser


def _error(message: object) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _os_error(exc: OSError) -> str:
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


_EXIT_BY_KIND = {
    CorruptionError: EXIT_DAMAGED,
    ReadOnlyError: EXIT_READONLY,
    LogFailedError: EXIT_LOG_FAILED,
    CompactionError: EXIT_COMPACTION_FAILED,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``tinylsm`` command with ``argv`` (default ``sys.argv[1:]``);
    return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from . import bench

        return bench.main(argv[1:], prog=f"{PROG} bench")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        status: int = args.func(args)
        return status
    except UsageError as exc:
        _error(exc)
        return EXIT_USAGE
    except LockedError as exc:
        _error(f"{exc}; try again once it is closed")
        return EXIT_FAILED
    except Error as exc:
        _error(exc)
        return _EXIT_BY_KIND.get(type(exc), EXIT_DAMAGED)
    except ValueError as exc:  # e.g. sizes that do not fit the files
        _error(exc)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. "tinylsm dump mydb | head": stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        _error(_os_error(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
