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
