"""Progress for the command-line tools: tqdm bars when stderr is a terminal
and tqdm (optional: the ``bench`` extra) is installed; otherwise no bars,
and ``announce`` lines for the steps long enough to want them."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Iterable, Optional, TypeVar

_T = TypeVar("_T")


class _Quiet:
    """Stands in for a tqdm bar when none is shown."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def enabled() -> bool:
    """Bars are drawn only when stderr is a terminal and tqdm is installed."""
    try:
        if not sys.stderr.isatty():
            return False
        _tqdm()
    except (ImportError, AttributeError, ValueError):
        return False
    return True


def announce(text: str) -> None:
    """``text`` as a line on stderr when no bar is drawn, so that a run whose
    stderr is a file or a pipe (or lacks tqdm) is not silent for long."""
    if not enabled():
        print(text, file=sys.stderr, flush=True)


def line(text: str) -> None:
    """``text`` as a line of its own on stderr, above a bar being drawn."""
    if enabled():
        _tqdm().write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def bar(total: Optional[int] = None, desc: str = "", unit: str = "it") -> Any:
    """A tqdm bar on stderr, or a silent stand-in with the same methods."""
    if not enabled():
        return _Quiet()
    return _tqdm()(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def wrap(iterable: Iterable[_T], total: Optional[int] = None, desc: str = "",
         unit: str = "it") -> Iterable[_T]:
    """``iterable``, with a bar on a terminal."""
    if not enabled():
        return iterable
    wrapped: Iterable[_T] = _tqdm()(iterable, total=total, desc=desc, unit=unit,
                                    file=sys.stderr, leave=False, dynamic_ncols=True)
    return wrapped


def _tqdm() -> Any:
    """tqdm's bar class, imported by name: tqdm is optional, and its types are
    a package of their own (types-tqdm), so a type checker sees Any whether
    either is installed or not."""
    return importlib.import_module("tqdm").tqdm
