"""What the runs of a comparison were set to, and their results over seeds.

A budget sweep asks "how does accuracy fall as a device class's budget shrinks?", and the answer
is only as good as its seed-to-seed spread. This module reads each run's ``scenario.yaml``, finds
the keys whose values differ between the runs (the swept keys; ``seed`` and ``name`` apart),
types them (a size such as ``16KiB`` becomes bytes, an integer), and groups the runs that differ
only in their seed: per group, the mean and standard deviation over seeds of the final accuracy
and of each profile's accuracy. ``fogsim sweep`` and ``fogsim compare`` both use it, so runs of a
sweep and runs given to ``compare`` by hand are grouped the same way.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from fogsim.units import format_bytes, parse_bytes

IGNORED = ("name", "seed")  # the scenario's name is its own column; the seed is what a group spreads over
_SIZE = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*(B|KB|KiB|MB|MiB|GB|GiB)\s*$")
NOISE_SDS = 2.0  # differences between groups within this many standard deviations over seeds are called noise


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": [1, {"c": 2}]}}`` -> ``{"a.b[0]": 1, "a.b[1].c": 2}``: the keys ``--set`` takes."""
    if isinstance(tree, dict):
        if not tree and prefix:
            return {}
        items = {}
        for key, value in tree.items():
            items.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return items
    if isinstance(tree, list):
        items = {}
        for index, value in enumerate(tree):
            items.update(flatten(value, f"{prefix}[{index}]"))
        return items if items or not prefix else {prefix: "[]"}
    return {prefix: tree}


def varying_keys(scenarios: list[dict]) -> list[str]:
    """The keys whose values differ between ``scenarios`` (absent counts as a value), in the order
    the first scenario that has each key lists them; ``name`` and ``seed`` are never among them."""
    return _varying([flatten(s or {}) for s in scenarios])


def _varying(flat: list[dict]) -> list[str]:
    order = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in order if k not in IGNORED and len({repr(f.get(k)) for f in flat}) > 1]


def typed(values: list) -> list:
    """A column's values typed: sizes (``16KiB``) as integer bytes where every present value is a size
    or a whole number, numbers as numbers, anything else as text; absent values stay ``None``."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) and _SIZE.match(v) or _whole(v) for v in present) \
            and any(isinstance(v, str) for v in present):
        return [parse_bytes(v) if isinstance(v, str) else int(v) if v is not None else None for v in values]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return values
    return [None if v is None else str(v) for v in values]


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()


def is_size(values: list) -> bool:
    """Whether a swept key's values are sizes (its raw values held a unit): drawn on a log axis of bytes."""
    return any(isinstance(v, str) and _SIZE.match(v) for v in values)


def settings(scenarios: list[dict]) -> tuple[list[int | None], dict[str, list], list[str]]:
    """Each scenario's seed, the typed values of every swept key, and which swept keys hold sizes."""
    flat = [flatten(s or {}) for s in scenarios]
    keys = _varying(flat)
    seeds = [f.get("seed") if _whole(f.get("seed")) else None for f in flat]
    raw = {k: [f.get(k) for f in flat] for k in keys}
    return seeds, {k: typed(v) for k, v in raw.items()}, [k for k, v in raw.items() if is_size(v)]


def show_value(value, size: bool) -> str:
    """A swept value as the tables print it: sizes with their unit, the rest as given."""
    if value is None or pd.isna(value):  # None, NaN, or pandas' NA of an integer column
        return "-"
    return format_bytes(value) if size else f"{value:g}" if isinstance(value, float) else str(value)


def group_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group of runs (equal values of ``keys``) and profile: the number of seeds, and the mean
    and standard deviation over them of the final accuracy and of the profile's accuracy (the standard
    deviation is empty for a group of one run). ``frame``: a comparison frame with the ``keys`` columns."""
    rows = []
    by = keys or ["scenario"]
    for values, group in frame.groupby(by, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        runs = group.drop_duplicates("run")
        final = runs["final_accuracy"].astype(float)
        base = {**dict(zip(by, values)), "runs": len(runs),
                "seeds": ",".join(str(int(s)) for s in runs["seed"].dropna()),
                "final_accuracy_mean": final.mean(), "final_accuracy_std": final.std(ddof=1) if len(runs) > 1 else None}
        for profile, part in group.groupby("profile", sort=False, dropna=True):
            accuracy = part["profile_accuracy"].astype(float).dropna()
            rows.append({**base, "profile": profile, "profile_accuracy_mean": accuracy.mean() if len(accuracy) else None,
                         "profile_accuracy_std": accuracy.std(ddof=1) if len(accuracy) > 1 else None})
        if group["profile"].isna().all():
            rows.append({**base, "profile": None, "profile_accuracy_mean": None, "profile_accuracy_std": None})
    return pd.DataFrame(rows)


def noise_note(groups: pd.DataFrame, keys: list[str]) -> str | None:
    """One sentence on whether the groups' final accuracies differ by more than seed noise, or None
    where there is only one group."""
    per_group = groups.drop_duplicates(keys or ["scenario"])
    if len(per_group) < 2:
        return None
    means = per_group["final_accuracy_mean"].astype(float)
    spread = means.max() - means.min()
    single = int((per_group["runs"] < 2).sum())
    if single:
        which = "from one seed each" if single == len(per_group) else f"and {single} of them ran with one seed only"
        return (f"final accuracy differs by {spread:.4f} between the values, {which}: run them with several "
                "seeds (fogsim sweep --seeds 0,1,2) to see whether that is more than seed noise")
    sd = math.sqrt((per_group["final_accuracy_std"].astype(float) ** 2).mean())  # pooled over groups
    if spread <= NOISE_SDS * sd:
        return (f"final accuracy differs by {spread:.4f} between the values, within seed noise "
                f"({NOISE_SDS:g} standard deviations over seeds: {NOISE_SDS * sd:.4f}); more seeds or rounds are "
                "needed to tell these values apart")
    return (f"final accuracy differs by {spread:.4f} between the values, more than seed noise "
            f"({NOISE_SDS:g} standard deviations over seeds: {NOISE_SDS * sd:.4f})")
