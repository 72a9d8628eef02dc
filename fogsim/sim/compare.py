"""``fogsim compare``: several finished run directories side by side, as a table, CSV, Markdown and plots.

The comparison is tidy: one row per run and device profile, over the union of the profiles of all
runs, so runs with different fleets or strategies line up; a profile a run does not have is left
empty. Run-level figures (accuracy, density, traffic, time) repeat on every row of their run.

``load_run`` checks that a directory is a finished run and says what is missing if it is not;
``write_comparison`` writes into an existing directory (a sweep puts its comparison beside its
runs); ``compare`` does both and creates the output directory atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fogsim.errors import FogsimError, brief, shown_path
from fogsim.sim.groups import group_frame, noise_note, settings, show_value
from fogsim.rundir import claim
from fogsim.sim.outputs import FOG_FILE
from fogsim.sim.reports import CLIENT_COLUMNS, FOG_COLUMNS, ROUND_COLUMNS, TEXT_COLUMNS
from fogsim.sim.safe_yaml import read_text, read_yaml
from fogsim.units import format_bytes
from fogsim.numbers import csv_frame

# Columns of comparison.csv, in order; the README's "Comparing runs" explains each.
RUN_FIELDS = ["run", "path", "scenario", "strategy", "method", "rounds", "final_accuracy", "best_accuracy",
              "best_round", "global_density", "upload_bytes", "download_bytes", "wan_bytes", "cloud_every",
              "sim_time_s"]
PROFILE_FIELDS = ["profile", "devices", "budget_bytes", "peak_memory_bytes", "final_batch_size", "profile_accuracy"]
COLUMNS = RUN_FIELDS + PROFILE_FIELDS
FILES = ["comparison.csv", "comparison.md", "accuracy.png", "memory_batch.png", "accuracy_vs_upload.png"]
WAN_PLOT = "accuracy_vs_wan.png"  # only where a run has fog nodes: for flat runs it repeats accuracy_vs_upload
GROUP_FILES = ["groups.csv", "sweep.png"]  # only where the runs differ in a key or in their seed (``grouped``)


def with_fog(frame: pd.DataFrame) -> bool:
    """Whether some run of the comparison ``frame`` has fog nodes (a cloud period)."""
    return bool(frame["cloud_every"].notna().any())


def files_of(frame: pd.DataFrame) -> list[str]:
    """The files a comparison of ``frame``'s runs writes."""
    return FILES + ([WAN_PLOT] if with_fog(frame) else []) + (GROUP_FILES if grouped(frame) else [])
# Columns added with fog nodes: a run written before them is read as a flat run (devices' traffic
# crosses the wide area, every round is a cloud round, every device talks to the server).
# Per file: the column, and the column it copies or the value it takes.
_LATER_ROUNDS = {"wan_upload_bytes": ("upload_bytes", None), "wan_download_bytes": ("download_bytes", None),
                 "cloud_round": (None, 1)}
_LATER_CLIENTS = {"fog_node": (None, "server")}



@dataclass
class Run:
    """One finished run directory, read."""

    path: Path
    scenario: dict
    rounds: pd.DataFrame
    clients: pd.DataFrame
    summary: dict
    name: str = ""
    fog_nodes: pd.DataFrame | None = None  # fog_nodes.csv (None: a run without fog nodes)


def _read_csv(path: Path, needs: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise FogsimError(f"{shown_path(path)}: not a readable CSV file ({type(error).__name__}); was it written "
                          "by fogsim run?") from None
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise FogsimError(f"{shown_path(path)}: lacks the columns {', '.join(missing)}; was it written by fogsim "
                          "run?")
    text = [c for c in needs if c not in TEXT_COLUMNS and not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise FogsimError(f"{shown_path(path)}: column {text[0]} holds something other than numbers; was it "
                          "written by fogsim run?")
    return frame


def load_run(path: Path) -> Run:
    """Read a finished run directory, or say in one line why it is not one."""
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise FogsimError(f"{shown_path(path)}: no such directory") from None
    except (OSError, ValueError) as error:  # a name too long, a NUL character, no permission
        reason = getattr(error, "strerror", None) or "not a usable path"
        raise FogsimError(f"{shown_path(path)}: {reason}; give run directories written by fogsim run") from None
    if not path.is_dir():
        raise FogsimError(f"{shown_path(path)}: not a directory; give run directories written by fogsim run")
    if not (path / "scenario.yaml").is_file() or not (path / "rounds.csv").is_file():
        absent = [n for n in ("scenario.yaml", "rounds.csv") if not (path / n).is_file()]
        raise FogsimError(f"{shown_path(path)}: not a run directory (no {' or '.join(absent)}); give directories "
                          "written by fogsim run")
    for name in ("clients.csv", "summary.json"):
        if not (path / name).is_file():
            raise FogsimError(f"{shown_path(path)}: run is missing {name}: it is still running or it crashed")
    scenario = read_yaml(path / "scenario.yaml", "scenario") or {}
    try:
        summary = json.loads(read_text(path / "summary.json", "summary"))
    except (json.JSONDecodeError, RecursionError) as error:
        raise FogsimError(f"{shown_path(path / 'summary.json')}: not readable JSON ({type(error).__name__}); was "
                          "it written by fogsim run?") from None
    if not isinstance(scenario, dict) or not isinstance(summary, dict):
        raise FogsimError(f"{shown_path(path)}: scenario.yaml or summary.json is not a mapping; was it written by "
                          "fogsim run?")
    wrong = _odd_summary(summary)
    if wrong:
        raise FogsimError(f"{shown_path(path / 'summary.json')}: {wrong}; was it written by fogsim run?")
    rounds = _with_later(_read_csv(path / "rounds.csv", [c for c in ROUND_COLUMNS if c not in _LATER_ROUNDS]),
                         _LATER_ROUNDS).sort_values("round", kind="stable")
    clients = _with_later(_read_csv(path / "clients.csv", [c for c in CLIENT_COLUMNS if c not in _LATER_CLIENTS]),
                          _LATER_CLIENTS)
    fog_nodes = _read_csv(path / FOG_FILE, [c for c in FOG_COLUMNS if c not in ("accuracy", "loss")]) \
        if (path / FOG_FILE).is_file() else None
    return Run(path=path, scenario=scenario, rounds=rounds.reset_index(drop=True), clients=clients, summary=summary,
               fog_nodes=fog_nodes)


_PROFILE_NUMBERS = ("devices", "budget_bytes", "accuracy")  # what the comparison reads of a profile's summary


def _odd_summary(summary: dict) -> str | None:
    """What is wrong with the parts of ``summary.json`` the comparison reads, if anything."""
    profiles = summary.get("profiles")
    if profiles is None:
        return None
    if not isinstance(profiles, dict):
        return "profiles is not a mapping of profile names"
    for name, tier in profiles.items():
        if not isinstance(tier, dict):
            return f"profiles.{brief(name)} is not a mapping"
        for key in _PROFILE_NUMBERS:
            value = tier.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"profiles.{brief(name)}.{key} is not a number"
    return None


def _with_later(frame: pd.DataFrame, later: dict) -> pd.DataFrame:
    """``frame`` with the columns fog nodes added filled in as a flat run has them, where it lacks them."""
    for column, (source, value) in later.items():
        if column not in frame.columns:
            frame[column] = frame[source] if source is not None else value
    return frame


def name_runs(runs: list[Run]) -> None:
    """Name each run by its directory; where two share a name, by as many trailing path parts as tell them apart."""
    parts = [r.path.resolve().parts for r in runs]
    depth = [1] * len(runs)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if depth[i] < len(parts[i])
                 and any(m == n and parts[j] != parts[i] for j, m in enumerate(names))]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    seen: dict[str, int] = {}
    for run, name in zip(runs, names):  # the same directory given twice
        seen[name] = seen.get(name, 0) + 1
        run.name = name if seen[name] == 1 else f"{name} ({seen[name]})"


def _profiles(run: Run) -> list[str]:
    names = list(run.summary.get("profiles") or {})
    return names + [p for p in dict.fromkeys(run.clients["profile"].astype(str)) if p not in names]


def _number(value):
    return None if value is None or pd.isna(value) else value


def run_fields(run: Run) -> dict:
    rounds = run.rounds
    accuracy = rounds["accuracy"].dropna()
    best = rounds.loc[accuracy.idxmax()] if len(accuracy) else None
    last = rounds.iloc[-1] if len(rounds) else None
    return {
        "run": run.name, "path": str(run.path),
        "scenario": run.scenario.get("name", run.summary.get("scenario")),
        "strategy": (run.scenario.get("strategy") or {}).get("name"),
        "method": (run.scenario.get("pruning") or {}).get("method"),
        "rounds": len(rounds),
        "final_accuracy": _number(last["accuracy"]) if last is not None else None,
        "best_accuracy": _number(best["accuracy"]) if best is not None else None,
        "best_round": int(best["round"]) if best is not None else None,
        "global_density": _number(last["global_density"]) if last is not None else None,
        "upload_bytes": int(rounds["upload_bytes"].sum()),
        "download_bytes": int(rounds["download_bytes"].sum()),
        "wan_bytes": int(rounds["wan_upload_bytes"].sum() + rounds["wan_download_bytes"].sum()),
        "cloud_every": (run.scenario.get("fog") or {}).get("cloud_every"),
        "sim_time_s": float(rounds["sim_time_s"].sum()),
    }


def profile_fields(run: Run, profile: str) -> dict:
    """What one profile's devices cost in a run; empty where the run has no such profile."""
    tier = (run.summary.get("profiles") or {}).get(profile)
    clients = run.clients[run.clients["profile"].astype(str) == profile]
    if tier is None and clients.empty:
        return {"profile": profile, **{f: None for f in PROFILE_FIELDS[1:]}}
    ok = clients[clients["failed"].astype(bool) == False]  # noqa: E712 (a column, not a truth value)
    budget = (tier or {}).get("budget_bytes")
    if budget is None and not clients.empty:
        budget = int(clients["budget_bytes"].iloc[0])
    final_batch = None
    if not ok.empty:  # each device's batch_size_max in the last round it trained; the largest of them
        last = ok.sort_values("round", kind="stable").groupby("client_id").tail(1)
        final_batch = int(last["batch_size_max"].max())
    accuracy = (tier or {}).get("accuracy")  # the server's, under each device's mask (summary.json)
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool):
        accuracy = None
    return {"profile": profile,
            "devices": (tier or {}).get("devices", clients["client_id"].nunique()),
            "budget_bytes": budget,
            "peak_memory_bytes": int(ok["peak_memory_bytes"].max()) if not ok.empty else None,
            "final_batch_size": final_batch,
            "profile_accuracy": accuracy}


def setting_column(key: str) -> str:
    """comparison.csv's column for the swept key ``key``: the key itself, or ``scenario.<key>`` where the key
    is also the name of one of the comparison's own columns (``rounds``: the rounds a run finished)."""
    return f"scenario.{key}" if key in COLUMNS else key


def comparison_frame(runs: list[Run]) -> pd.DataFrame:
    """The tidy comparison: one row per run and profile (the union of all runs' profiles), with each run's
    seed and its value of every key the runs differ in (``groups.settings``); ``frame.attrs`` holds
    those keys' columns (``swept``) and which of them are sizes (``sizes``)."""
    profiles = list(dict.fromkeys(p for run in runs for p in _profiles(run)))
    seeds, values, sizes = settings([run.scenario for run in runs])
    swept = [setting_column(k) for k in values]
    rows = []
    for index, run in enumerate(runs):
        fields = run_fields(run)
        given = {"seed": seeds[index], **{setting_column(k): v[index] for k, v in values.items()}}
        for profile in profiles or [None]:
            rows.append({**fields, **given, **(profile_fields(run, profile) if profile is not None
                                               else {f: None for f in PROFILE_FIELDS})})
    at = COLUMNS.index("scenario") + 1
    frame = pd.DataFrame(rows, columns=[*COLUMNS[:at], "seed", *swept, *COLUMNS[at:]])
    for column in ("seed", "devices", "budget_bytes", "peak_memory_bytes", "final_batch_size", "best_round",
                   *[setting_column(k) for k in sizes]):
        frame[column] = frame[column].astype("Int64")
    frame.attrs.update(swept=swept, sizes=[setting_column(k) for k in sizes])
    return frame


def grouped(frame: pd.DataFrame) -> bool:
    """Whether the comparison has something to group: keys the runs differ in, or runs differing only in seed."""
    return bool(frame.attrs.get("swept")) or frame.drop_duplicates("run")["seed"].nunique() > 1


def groups_of(frame: pd.DataFrame) -> pd.DataFrame:
    """``groups.group_frame`` of the comparison ``frame``, grouped by the keys its runs differ in."""
    return group_frame(frame, frame.attrs.get("swept", []))


TABLE_HEADERS = ["run", "scenario", "strategy", "final acc", "best (round)", "global density", "uploaded",
                 "wide area", "simulated time", "profile", "devices", "budget", "peak memory", "final batch", "profile acc"]
# the printed tables: shorter headers, no scenario column (it is in the CSV and Markdown), and two tables
# (one row per run; one row per run and profile) so that neither is mostly empty cells
RUN_HEADERS = ["run", "strategy", "final acc", "best (round)", "density", "upload", "WAN", "sim time"]
PROFILE_HEADERS = ["run", "profile", "devices", "budget", "peak mem", "batch", "prof acc"]


def _fmt(value, how) -> str:
    if value is None or pd.isna(value):
        return ""
    return how(value)


def table_rows(frame: pd.DataFrame) -> list[list[str]]:
    """Rows of strings for the printed and Markdown tables: run-level cells only on a run's first row."""
    rows = []
    for _, group in frame.groupby("run", sort=False):
        for i, (_, r) in enumerate(group.iterrows()):
            run_cells = [
                r["run"], _fmt(r["scenario"], str), _fmt(r["strategy"], str),
                _fmt(r["final_accuracy"], lambda v: f"{v:.4f}"),
                _fmt(r["best_accuracy"], lambda v: f"{v:.4f} ({r['best_round']})"),
                _fmt(r["global_density"], lambda v: f"{v:.3f}"),
                format_bytes(r["upload_bytes"]), format_bytes(r["wan_bytes"]),
                f"{r['sim_time_s']:.1f} s"] if i == 0 else [""] * 9
            rows.append(run_cells + [
                _fmt(r["profile"], str), _fmt(r["devices"], str), _fmt(r["budget_bytes"], format_bytes),
                _fmt(r["peak_memory_bytes"], format_bytes), _fmt(r["final_batch_size"], str),
                _fmt(r["profile_accuracy"], lambda v: f"{v:.4f}")])
    return rows


def rich_tables(frame: pd.DataFrame) -> list:
    """The comparison as printed: the runs, then their profiles (a profile with empty cells: the run has none)."""
    from rich.table import Table

    rows = table_rows(frame)
    runs = Table(title=f"comparison of {frame['run'].nunique()} runs")
    profiles = Table(title="per profile (empty cells: the run has no such devices)")
    for table, headers in ((runs, RUN_HEADERS), (profiles, PROFILE_HEADERS)):
        for column in headers:
            table.add_column(column, justify="left" if column in ("run", "strategy", "profile") else "right")
    for i, row in enumerate(rows):
        if row[0]:
            runs.add_row(row[0], *row[2:9])
        last_of_run = i + 1 == len(rows) or rows[i + 1][0] != ""
        profiles.add_row(row[0], *row[9:], end_section=last_of_run)
    return [runs, profiles]


def _cell(text: str) -> str:
    """A Markdown table cell's text: a literal pipe would end the cell."""
    return text.replace("|", "\\|")


def markdown(frame: pd.DataFrame, found: "ByValue | None") -> str:
    lines = [f"# Comparison of {frame['run'].nunique()} runs", "",
             "Run-level figures are on the first row of each run; a profile whose cells are empty is one the "
             "run has no devices of. Data: `comparison.csv`.", "",
             "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table_rows(frame)]
    lines += ["", "Paths:", ""] + [f"- `{n}`: `{p}`" for n, p in dict(zip(frame["run"], frame["path"])).items()]
    lines += ["", "![accuracy per round](accuracy.png)", "", "![peak memory and batch size per profile]"
              "(memory_batch.png)", "", "![accuracy against upload](accuracy_vs_upload.png)", ""]
    if with_fog(frame):
        lines += [f"![accuracy against wide-area traffic]({WAN_PLOT})", ""]
    return "\n".join(lines + group_markdown(found))


def _mean_sd(mean, sd) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.4f}" if sd is None or pd.isna(sd) else f"{mean:.4f} ± {sd:.4f}"


@dataclass
class ByValue:
    """The comparison by value: ``groups_of``'s frame, the table's headers and rows (one row per group of runs
    that differ only in seed: its swept values, seeds, final and each profile's accuracy as mean ± standard
    deviation over seeds), and the sentence on seed noise (``groups.noise_note``)."""

    groups: pd.DataFrame
    headers: list[str]
    rows: list[list[str]]
    note: str | None


def by_value(frame: pd.DataFrame) -> ByValue | None:
    """The comparison by value, or None where the runs differ neither in a key nor in seed."""
    if not grouped(frame):
        return None
    keys, sizes = frame.attrs.get("swept", []), frame.attrs.get("sizes", [])
    groups = groups_of(frame)
    profiles = [p for p in dict.fromkeys(groups["profile"]) if p is not None and not pd.isna(p)]
    headers = [*keys, "seeds", "final acc", *[f"{p} acc" for p in profiles]]
    rows = []
    for _, group in groups.groupby(keys or ["scenario"], sort=False, dropna=False):
        first = group.iloc[0]
        by_profile = group.set_index("profile")
        rows.append([*[show_value(first[k], k in sizes) for k in keys], first["seeds"] or str(first["runs"]),
                     _mean_sd(first["final_accuracy_mean"], first["final_accuracy_std"]),
                     *[_mean_sd(by_profile.at[p, "profile_accuracy_mean"], by_profile.at[p, "profile_accuracy_std"])
                       if p in by_profile.index else "" for p in profiles]])
    return ByValue(groups, headers, rows, noise_note(groups, keys))


def group_table(frame: pd.DataFrame, found: ByValue | None = None):
    """The rich table by value (``by_value``), or None where there is nothing to group."""
    found = found or by_value(frame)
    if found is None:
        return None
    from rich.table import Table

    table = Table(title="by value: mean ± standard deviation over seeds", caption=found.note)
    for i, column in enumerate(found.headers):
        table.add_column(column, justify="left" if i < len(frame.attrs.get("swept", [])) else "right",
                         overflow="fold")
    for row in found.rows:
        table.add_row(*row)
    return table


def group_markdown(found: ByValue | None) -> list[str]:
    if found is None:
        return []
    note = found.note
    return ["## By value (mean ± standard deviation over seeds)", "", "| " + " | ".join(found.headers) + " |",
            "|" + "---|" * len(found.headers),
            *["| " + " | ".join(_cell(c) for c in row) + " |" for row in found.rows],
            "", *([note[0].upper() + note[1:] + ".", ""] if note else []), "![accuracy against the swept value](sweep.png)",
            "", "Data: `groups.csv`.", ""]


def write_comparison(runs: list[Run], out: Path) -> pd.DataFrame:
    """Write comparison.csv, comparison.md and the plots (``files_of``) into the existing directory ``out``."""
    frame = comparison_frame(runs)
    found = by_value(frame)
    csv_frame(frame).to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(markdown(frame, found))
    from fogsim.plots import plot_comparison, plot_sweep  # matplotlib only when plots are drawn

    plot_comparison(runs, frame, out)
    if found is not None:
        csv_frame(found.groups).to_csv(out / "groups.csv", index=False)
        plot_sweep(found.groups, frame.attrs.get("swept", []), frame.attrs.get("sizes", []), out / "sweep.png")
    return frame


def compare(paths: list[Path], out: Path) -> pd.DataFrame:
    """Check every run, then write the comparison to ``out``; a failure leaves nothing there."""
    if not paths:
        raise FogsimError("give at least one run directory to compare")
    runs = [load_run(Path(p)) for p in paths]
    name_runs(runs)
    with claim(Path(out), "compare") as claimed:
        frame = write_comparison(runs, claimed)
    return frame
