"""The interrupt watchdog: it leaves with the signal's exit code, and says so only once."""

import signal

import pytest

from fogsim import signals


@pytest.fixture
def exits(monkeypatch):
    codes = []
    monkeypatch.setattr(signals.os, "_exit", codes.append)
    yield codes
    signals._announced.clear()


def test_the_watchdog_says_why_it_leaves(capsys, exits):
    signals._announced.clear()
    signals._leave(signal.SIGTERM)
    assert exits == [143]
    assert capsys.readouterr().err == "fogsim: interrupted by SIGTERM; what finished is kept\n"


def test_the_watchdog_does_not_repeat_the_command_lines_line(capsys, exits):
    signals.announce()
    signals._leave(signal.SIGINT)
    assert exits == [130] and capsys.readouterr().err == "", "the command line printed it already"


def test_the_first_signal_stops_what_registered_before_the_interrupt_unwinds(monkeypatch, exits):
    """A simulation registers its stop event: Flower's engine, in the main thread, waits for the
    server thread, which leaves its wait only when that event is set."""
    import logging
    import threading

    timers = []

    class Timer:  # the watchdog, armed but never fired
        def __init__(self, *args, **kwargs):
            timers.append(args)

        def start(self):
            pass

    monkeypatch.setattr(signals.threading, "Timer", Timer)
    stop = threading.Event()
    forget = signals.on_interrupt(stop.set)
    signals._received.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            signals._handle(signal.SIGTERM, None)
        assert stop.is_set() and timers, "stopped at the signal, the watchdog armed"
    finally:
        forget()
        signals._received.clear()
        logging.disable(logging.NOTSET)
    assert signals._on_interrupt == []


def test_the_line_is_said_once_whoever_says_it_first_and_names_what_was_kept(capsys, exits):
    signals._announced.clear()
    signals.kept("what finished is kept in runs/x; go on with: fogsim run --resume runs/x")
    try:
        signals.say_interrupted(signal.SIGINT)
        signals._leave(signal.SIGINT)  # the watchdog, after the command line said it
        signals.say_interrupted()
    finally:
        signals._kept.clear()
    assert capsys.readouterr().err == ("fogsim: interrupted by SIGINT; what finished is kept in runs/x; "
                                       "go on with: fogsim run --resume runs/x\n")
    assert exits == [130]
