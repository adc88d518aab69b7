"""Compare tinylsm with its peers on the same generated data, in one run.

``python -m tinylsm.bench`` (or ``tinylsm bench``) generates N random
distinct keys and values, runs every workload on tinylsm, a plain ``dict``,
``sqlite3`` and ``lmdb`` (when installed), and prints one table of rates with
tinylsm's ratio to each peer.  Files go to a temporary directory, removed
afterwards (``--dir`` chooses where it is made, hence the file system).

Rules that keep the comparison fair:

* every write workload ends with one durable commit: tinylsm ``flush()``,
  sqlite3 ``COMMIT`` (WAL journal, ``synchronous=FULL``), lmdb's write
  transaction commit (``sync=True``); ``dict`` has none;
* ``sync`` makes every single insert durable (insert + flush, autocommit,
  one transaction per put) and compares with the disk's own rate: append one
  log-frame-sized record to a file and fsync it;
* ``group-commit`` runs the same durable insert in 8 threads at once
  (GROUP_THREADS) on one store (tinylsm: one ``Lsm``; sqlite3: one
  connection per thread; lmdb: one write transaction per insert; disk: one
  file), taking turns with a single thread on the same store: the baseline
  its speed-up is measured against, in the same run;
* ``latency`` times each insert of one thread (``perf_counter_ns``) while
  ``compact()`` merges several sstables of overwritten data in another
  thread, and shows p50, p99 and max in microseconds (tinylsm only);
* ``sustained`` times each of many inserts (``--sustained-count``, default
  6 times N) into a new store with the default ``Config()``, whose log
  becomes an sstable on the way, and shows the throughput (stalls
  included), p50, p99, p99.9, max and the inserts over 10 ms (dict: the
  same loop; lmdb: a transaction per put, ``sync=False``; not sqlite3);
* ``reopen`` is the time until the store answers: tinylsm recovers every key
  into memory, sqlite3 and lmdb open their file and read one key;
* ``memory`` is the resident memory (RSS) per key that holding every key
  and value adds, measured in a fresh process (sqlite3 and lmdb keep their
  data in files and the page cache: not comparable, not shown).

The modules: ``command`` (options and the run), ``data`` (the generated
data), ``engines`` (one adapter per store), ``workloads`` (what each
workload runs), ``durable``, ``latency`` and ``sustained`` (the workloads that need more
than one call per engine), ``measure`` and ``memory`` (how figures are
taken), ``rows``, ``report`` and ``notes`` (what is printed).
"""
from __future__ import annotations

from .command import build_parser, main
from .memory import rss
from .report import layout
from .rows import WORKLOADS

__all__ = ["WORKLOADS", "build_parser", "layout", "main", "rss"]
