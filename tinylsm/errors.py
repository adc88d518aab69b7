"""Exception classes of tinylsm."""


class Error(Exception):
    """Base class of every error tinylsm raises on its own account."""


class CorruptionError(Error):
    """Data on disk is damaged in a way recovery must not paper over.

    The message names the file, and the record or offset, and what is wrong;
    ``path`` and ``detail`` hold the file and the rest, when known, for tools
    (``tinylsm verify``) that report them apart.
    """

    def __init__(self, message: str, *, path: "str | None" = None,
                 detail: "str | None" = None) -> None:
        super().__init__(message)
        self.path = path
        self.detail = detail if detail is not None else message


class LockedError(Error):
    """The store's directory is already open, in this or another process."""


class ClosedError(Error):
    """The store was closed (or its process forked) and cannot be used."""


class ReadOnlyError(Error):
    """A change was asked of a store opened with ``readonly=True``."""


class LogFailedError(Error):
    """The log refuses writes after a failure it cannot vouch for (a failed
    fsync, or a failed write it could not cut off again).

    Retrying would lie: after a failed fsync Linux may drop the dirty pages
    and report a later fsync as successful.  Close the store and open it
    again; recovery keeps every change that reached the disk.
    """


class CompactionError(Error):
    """The background merge failed (and failed again when retried at
    ``close()``).  The data is safe: a failed merge changes nothing; the
    cause (``__cause__``, usually an ``OSError``) says what went wrong."""


def describe(exc: BaseException) -> str:
    """``exc`` for a message: its type and text, with the file an OSError
    names (``repr`` leaves the file out)."""
    return f"{type(exc).__name__}: {exc}"
