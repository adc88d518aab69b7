"""A store's background thread: started once, woken, stopped from any thread."""
from __future__ import annotations

import threading
from typing import Callable, ContextManager, Optional

from . import _memory


class Stopped(Exception):
    """Work was not started, or given up at a safe point, because the store
    is closing."""


class Worker:
    """The thread life shared by the compactor and the rollover.

    ``_loop`` (the subclass's) runs on the thread, waits on ``_cv`` for
    ``_wake`` or ``_stopping`` and returns once stopping.  ``_idle()`` (the
    subclass's) is a context in which no work of it runs in any thread.
    """

    name = "tinylsm-worker"

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._wake = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._after: Optional[Callable[[], None]] = None
        self._worked = False  # work ran since the thread last went idle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The thread was started, has not been stopped, and lives (a
        thread that died of an unexpected BaseException must not be waited
        for)."""
        thread = self._thread
        return thread is not None and not self._stopping and thread.is_alive()

    def wake(self) -> None:
        with self._cv:
            self._wake = True
            self._cv.notify()

    def stop(self, after: Optional[Callable[[], None]] = None) -> None:
        """Stop the work, in this thread and every other, then run ``after``.

        Work in progress in any thread gives up at its next safe point or
        finishes; none starts afterwards.  ``after`` runs once no work can
        touch a file again.  Called from the thread itself (the store
        collected there), it cannot wait for itself: the thread runs
        ``after`` as it exits.
        """
        with self._cv:
            self._stopping = True
            self._cv.notify()
        thread = self._thread
        if thread is not None and thread is threading.current_thread():
            self._after = after
            return
        with self._idle():  # waits for work in another thread
            pass
        if thread is not None:
            thread.join()
        self._thread = None
        if after is not None:
            after()

    def _safe_point(self) -> None:
        if self._stopping:
            raise Stopped()

    def _wait_for_work(self) -> bool:
        """Block until woken (True) or stopping (False).  Going idle after
        work, first give back the memory the work freed (see ``_memory``)."""
        if self._worked:
            self._worked = False
            _memory.trim()
        with self._cv:
            while not self._wake and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return False
            self._wake = False
            self._worked = True
            return True

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once if stopping (then ``_wake`` is set)."""
        with self._cv:
            self._cv.wait_for(lambda: self._stopping, timeout=seconds)
            self._wake = True

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            after, self._after = self._after, None
            if after is not None:
                after()

    def _loop(self) -> None:
        raise NotImplementedError

    def _idle(self) -> ContextManager[object]:
        raise NotImplementedError
