"""How fogsim writes numbers into its files: a number that is missing or not finite is an empty
CSV cell and a JSON ``null``, in every file.

A value can be missing by design (a round in which no device reported, a tier without local
accuracy, ``fog.evaluate: false``) or not finite because training diverged and the scenario said
go on (``training.on_divergence: continue``). JSON has no NaN or Infinity, and ``nan`` in a CSV
cell reads differently in each tool; an empty cell is what pandas, R and spreadsheets read as
missing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd


def missing_if_not_finite(value):
    """``value`` with every float that is NaN or infinite (nested in dicts and lists) made ``None``."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: missing_if_not_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [missing_if_not_finite(v) for v in value]
    return value


def json_text(value) -> str:
    """``value`` as indented JSON, missing and non-finite numbers as ``null`` (never NaN)."""
    return json.dumps(missing_if_not_finite(value), indent=2, allow_nan=False) + "\n"


def csv_row(row: dict) -> dict:
    """A row for ``csv.DictWriter`` in which a missing or non-finite number is an empty cell."""
    return {k: "" if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)) else v
            for k, v in row.items()}


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with infinities made missing, which ``to_csv`` writes as empty cells (as NaN)."""
    return frame.replace([np.inf, -np.inf], np.nan)
