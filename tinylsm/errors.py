"""Exception classes of tinylsm."""


class Error(Exception):
    """Base class of every error tinylsm raises on its own account."""


class CorruptionError(Error):
    """Data on disk is damaged in a way recovery must not paper over.

    The message names the file, and the record or offset, and what is wrong.
    """


class LockedError(Error):
    """The store's directory is already open, in this or another process."""


class ClosedError(Error):
    """The store was closed (or its process forked) and cannot be used."""


def describe(exc: BaseException) -> str:
    """``exc`` for a message: its type and text, with the file an OSError
    names (``repr`` leaves the file out)."""
    return f"{type(exc).__name__}: {exc}"
