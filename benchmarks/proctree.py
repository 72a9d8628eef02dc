"""Memory of a process tree, sampled from /proc: what the benchmarks share (Linux only)."""

from __future__ import annotations

import os
import threading

PAGE = os.sysconf("SC_PAGE_SIZE")


def read(path: str) -> str | None:
    """A /proc file's text; ``None`` once its process is gone."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def rss(pid: int) -> int:
    """Resident set size of a live process in bytes (0 once it is gone)."""
    text = read(f"/proc/{pid}/statm")
    return int(text.split()[1]) * PAGE if text else 0


class Sampler(threading.Thread):
    """Calls ``sample()`` every ``interval`` seconds until ``stop`` is set (and once more then)."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(self.interval):
                return

    def sample(self) -> None:
        raise NotImplementedError
