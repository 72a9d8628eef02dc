"""Ctrl-C (SIGINT) and SIGTERM end any fogsim command the same way, within seconds.

The first signal raises ``KeyboardInterrupt`` in the main thread, which every command already
turns into a clean stop: a simulation sets its stop event (the server thread leaves its wait),
stops the Ray workers it started and keeps every finished round; ``fogsim train`` removes its
half-written directory. The command line then prints one line and exits ``128 + signal``
(130 for SIGINT, 143 for SIGTERM). A second signal while that cleanup runs leaves at once, with
the same exit code and no traceback, and so does a cleanup that takes more than
``CLEANUP_LIMIT_S`` (the finished rounds are on disk already: each is synced as it completes).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable

CLEANUP_LIMIT_S = 15  # the most an interrupted command may take to stop
_received: list[int] = []
_installed: list[bool] = []  # non-empty while the command line's handlers are in force
_announced: list[bool] = []  # non-empty once the interrupt's line is printed
_saying = threading.Lock()  # the interrupt's line is printed once, by the main thread or the watchdog
KEPT = "what finished is kept"
_kept: list[str] = []  # what the interrupted command says it kept (``kept``)
_on_interrupt: list[Callable[[], None]] = []  # called at the first signal, before the interrupt unwinds


def _handle(signum: int, frame) -> None:
    if _received:
        print(f"fogsim: interrupted again ({signal.Signals(signum).name}); leaving now", file=sys.stderr)
        os._exit(128 + _received[0])
    _received.append(signum)
    logging.disable(logging.CRITICAL)  # the engine's threads log every task the stop cancels: one line is enough
    watchdog = threading.Timer(CLEANUP_LIMIT_S, _leave, args=(signum,))
    watchdog.daemon = True
    watchdog.start()
    for callback in list(_on_interrupt):
        try:
            callback()
        except Exception:  # a stop that fails must not keep the interrupt from unwinding
            pass
    raise KeyboardInterrupt


def on_interrupt(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` as soon as the first signal arrives, before the interrupt unwinds the main
    thread, and return what removes it. A simulation gives its stop event: Flower's engine, in the
    main thread, waits for its workers and its server thread, which end only once the server's
    wait for replies is over, so the interrupt alone would wait for the watchdog."""
    _on_interrupt.append(callback)
    return lambda: _on_interrupt.remove(callback) if callback in _on_interrupt else None


def kept(detail: str) -> None:
    """Say, in the interrupt's line, what the interrupted command kept and how to go on (instead of
    ``KEPT``): a run says where its checkpoint is and how to resume it."""
    _kept[:] = [detail]


def say_interrupted(signum: int | None = None) -> None:
    """Print the interrupt's one line, once whoever says it first (the command line, or the
    watchdog while the command line is still cleaning up)."""
    with _saying:
        if _announced:
            return
        _announced.append(True)
        which = signal.Signals(signum).name if signum is not None else name()
        print(f"fogsim: interrupted by {which}; {_kept[0] if _kept else KEPT}", file=sys.stderr, flush=True)


def _leave(signum: int) -> None:
    """Cleanup took too long (a library swallowed the interrupt, or a shutdown hangs): leave anyway,
    saying so unless the command line has said it already (an engine thread that outlives the
    command can hold up the interpreter's exit)."""
    say_interrupted(signum)
    os._exit(128 + signum)


def announce() -> None:
    """The command line has printed its one line about the interrupt: the watchdog must not repeat it."""
    _announced.append(True)


def install() -> dict:
    """Handle SIGINT and SIGTERM as above (only the main thread can); return the handlers replaced.

    SIGINT is handled even when the parent ignored it (a shell starts background jobs that
    way), so that Ctrl-C or ``kill -INT`` always stops fogsim with exit code 130.
    """
    _received.clear()
    _announced.clear()
    _kept.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    _installed.append(True)
    return {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def reclaim() -> None:
    """Take SIGINT and SIGTERM back after a library replaced their handlers (``ray.init`` does),
    if ``install`` had them."""
    if _installed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handle)  # Python's own handler again, also where a library went around it


def restore(previous: dict) -> None:
    _installed.clear()
    logging.disable(logging.NOTSET)
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def exit_code() -> int:
    """``128 + signal`` of the signal that stopped the command; 130 for an interrupt raised otherwise."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def name() -> str:
    return signal.Signals(_received[0]).name if _received else "SIGINT"
