"""Stopping a simulated federation promptly on Ctrl-C.

Flower's Simulation Engine runs the ServerApp in a thread of its own that waits for the round's
replies for up to ``[federation] round_timeout``; after a Ctrl-C the factories are gone, and the
interpreter would wait for that thread before it exits. The server's grid is therefore wrapped in a
:class:`StoppableGrid`: once the run's stop event is set, every wait ends within one poll and the
ServerApp thread ends with :class:`RunStopped`. :func:`interruptible` sets that event the moment
Ctrl-C arrives and keeps Flower's reports of the factories' dying actors off the terminal. The global
checkpoint of the last finished round stays on disk for ``--resume``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.1  # how often a wait for replies looks for them (and for the stop event)


class RunStopped(Exception):
    """The run's stop event was set while the server waited for replies."""


class StoppableGrid:
    """A :class:`Grid` whose ``send_and_receive`` ends (:class:`RunStopped`) once ``stop`` is set."""

    def __init__(self, grid: Grid, stop: threading.Event) -> None:
        self._grid, self._stop = grid, stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """As ``Grid.send_and_receive``: push, then pull replies until all came, ``timeout`` passed or a stop."""
        waiting = set(self._grid.push_messages(messages))
        end = time.monotonic() + (timeout or 0.0)
        replies: list[Message] = []
        while waiting and (timeout is None or time.monotonic() < end):
            if self._stop.is_set():
                raise RunStopped("the run was stopped while waiting for the factories")
            pulled = list(self._grid.pull_messages(waiting))
            replies += pulled
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if waiting:
                self._stop.wait(POLL_SECONDS)
        return replies


@contextmanager
def interruptible(stop: threading.Event) -> Iterator[None]:
    """While the block runs, Ctrl-C (SIGINT) sets ``stop`` at once, then raises KeyboardInterrupt in the
    main thread; from then on Flower's log is silenced (its tracebacks of actors killed by the same Ctrl-C)."""

    def on_sigint(signum: int, frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt

    def quiet(record: logging.LogRecord) -> bool:
        return not stop.is_set()

    flower = logging.getLogger("flwr")
    flower.addFilter(quiet)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield
    finally:
        flower.removeFilter(quiet)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
