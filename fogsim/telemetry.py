"""Flower's telemetry, off wherever fogsim runs: no machine it runs on may phone home.

Flower reads ``FLWR_TELEMETRY_ENABLED`` once, when ``flwr.supercore.telemetry`` is first
imported, so the variable is set for imports still to come and the module's copy is set too if
it was imported already. The command line calls this before anything imports Flower; a run calls
it again, for library users who imported Flower themselves.
"""

from __future__ import annotations

import os
import sys


def telemetry_off() -> None:
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    module = sys.modules.get("flwr.supercore.telemetry")
    if module is not None:
        module.FLWR_TELEMETRY_ENABLED = "0"
