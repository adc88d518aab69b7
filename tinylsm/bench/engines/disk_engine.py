"""The ``disk`` engine: the file system itself, for the durable-write
workloads only: append one log-frame-sized record to a file and fsync it."""
from __future__ import annotations

import os

from ..durable import GroupOpen, SyncPair
from .base import Engine, shared


class DiskEngine(Engine):
    name = "disk"

    def _append(self, file: str) -> SyncPair:
        """A "durable insert" that writes one frame of zeros to ``file``
        and fsyncs it, whatever the item."""
        fd = os.open(os.path.join(self.root, file), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o644)
        record = bytes(self.d.frame_size)

        def one(k: bytes, v: bytes) -> None:
            os.write(fd, record)
            os.fsync(fd)

        return one, lambda: os.close(fd)

    def sync_open(self) -> SyncPair:
        return self._append("disk-append")

    def group_open(self, threads: int) -> GroupOpen:
        """Every thread appends to one file and fsyncs it: what the kernel
        alone makes of concurrent fsyncs."""
        return shared(self._append("disk-group"), threads)
