"""Hostile and malformed input, family by family: every case is one line on stderr, exit code 2,
no traceback, and nothing written (no run directory, no file anywhere under the working directory).

The families are those of issue 7: files that are not files, too big, endless, not UTF-8 or not
text; YAML that expands (aliases), nests too deep or repeats a key; numbers that are not finite or
overflow; counts and seeds out of range; key paths and names that are not names; profile chains;
``--set`` assignments; ``fogsim train``'s options; crafted dataset files; and messages that would
repeat a file's content. From issue 18: names (one line, at most 100 characters, printed literally)
and messages that quote at most one short value, however long what the user gave.
"""

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fogsim.cli import main
from fogsim.sim import safe_yaml
from inprocess import refused, snapshot

GOOD = {"name": "t", "data": {"name": "digits"}, "model": "mlp-small", "rounds": 2,
        "training": {"batch_min": 8}, "fleet": [{"profile": "samd21", "count": 2}, {"profile": "rpi4"}]}
PROFILE = {"memory_budget": "256KiB", "flops": 1e8, "uplink": 1e6, "downlink": 1e6}
SECRET = "hunter2-SECRET-token"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run every command from an empty directory, so that a default run directory would show."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")


def merged(base: dict, changes: dict) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def scenario(**changes) -> dict:
    return merged(GOOD, changes)


def write(tmp: Path, content, name: str = "s.yaml") -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    return path


def run(tmp: Path, content, *extra: str) -> list[str]:
    """``fogsim run`` on a scenario holding ``content`` (text, bytes or data)."""
    return ["run", str(write(tmp, content)), "--out", str(tmp / "out"), "--quiet", *extra]


def with_profiles(tmp: Path, content, **changes) -> list[str]:
    """``fogsim run`` on a scenario that loads the profile file ``p.yaml`` holding ``content``."""
    write(tmp, content, "p.yaml")
    return run(tmp, scenario(profiles=["p.yaml"], **changes))


def cases(*rows):
    """Parametrize ``(id, build, message)`` rows; ``build(tmp_path)`` returns the command line."""
    return pytest.mark.parametrize("build, message", [r[1:] for r in rows], ids=[r[0] for r in rows])


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.yaml")
    return tmp / "pipe.yaml"


def _link_to_zero(tmp: Path) -> Path:
    (tmp / "zero.yaml").symlink_to("/dev/zero")
    return tmp / "zero.yaml"


# --- files that are not files, too big or endless -------------------------------------------------

@cases(
    ("scenario-missing", lambda t: ["validate", str(t / "nope.yaml")], "cannot read scenario .*nope.yaml"),
    ("scenario-directory", lambda t: ["run", str(t), "--quiet"], "a directory, not a regular file"),
    ("scenario-dev-zero", lambda t: ["run", "/dev/zero", "--quiet"], "/dev/zero: a character device"),
    ("scenario-fifo", lambda t: ["run", str(_fifo(t)), "--quiet"], "pipe.yaml: a pipe, not a regular file"),
    ("scenario-link-to-zero", lambda t: ["run", str(_link_to_zero(t)), "--quiet"], "zero.yaml: a character device"),
    ("scenario-over-1MiB", lambda t: run(t, "#" * (safe_yaml.MAX_FILE_BYTES + 1)), "larger than 1.00 MiB"),
    ("profile-dev-zero", lambda t: run(t, scenario(profiles=["/dev/zero"])), "/dev/zero: a character device"),
    ("profile-dev-urandom", lambda t: run(t, scenario(profiles=["/dev/urandom"])), "a character device"),
    ("profile-fifo", lambda t: run(t, scenario(profiles=[str(_fifo(t))])), "a pipe, not a regular file"),
    ("profile-directory", lambda t: run(t, scenario(profiles=["."])), "a directory, not a regular file"),
    ("profile-missing", lambda t: run(t, scenario(profiles=["nope.yaml"])), "cannot read profile file .*nope"),
    ("profile-nul-in-path", lambda t: run(t, scenario(profiles=["p\0.yaml"])), "profiles.*NUL character"),
    ("profile-over-1MiB", lambda t: with_profiles(t, "#" * (safe_yaml.MAX_FILE_BYTES + 1)), "p.yaml: larger than"),
    ("profiles-file-dev-zero", lambda t: ["profiles", "--file", "/dev/zero"], "a character device"),
    ("profiles-show-fifo", lambda t: ["profiles", "show", "samd21", "--file", str(_fifo(t))], "a pipe"),
    ("data-root-nul", lambda t: run(t, scenario(data={"name": "mnist", "root": "a\0b"})), "data.root: .*NUL"),
)
def test_files_that_are_not_files_or_too_big(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


# --- text that is not UTF-8, or not text ------------------------------------------------------------

NOT_UTF8 = [
    ("latin-1", "name: café\nfleet: [{profile: samd21}]\n".encode("latin-1"), "not UTF-8 text .*line 1"),
    ("utf-16", "name: t\nfleet: [{profile: samd21}]\n".encode("utf-16"), "not UTF-8 text"),
    ("gzip", gzip.compress(b"name: t\n" * 50), "not UTF-8 text"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text|not a text file"),
    ("nul-bytes", b"name: t\n\x00\x00\x00", r"not a text file: character U\+0000 at line 2"),
    ("bell", b"name: t\x07\n", r"not a text file: character U\+0007 at line 1"),
    ("invalid-late", b"name: t\nrounds: 2\n# \xff\xfe\n", "not UTF-8 text .*line 3"),
]


@pytest.mark.parametrize("content, message", [n[1:] for n in NOT_UTF8], ids=[n[0] for n in NOT_UTF8])
@pytest.mark.parametrize("where", ["scenario", "profile"])
def test_files_that_are_not_utf8_text_are_refused_by_name(tmp_path, capsys, where, content, message):
    argv = run(tmp_path, content) if where == "scenario" else with_profiles(tmp_path, content)
    line = refused(tmp_path, capsys, argv, message)
    assert ("s.yaml" if where == "scenario" else "p.yaml") in line


# --- YAML that expands, nests too deep or repeats a key ------------------------------------------

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
BOMB = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS
BIG_VALUES = "more than 50000 values"


@cases(
    ("billion-laughs", lambda t: run(t, yaml.safe_dump(GOOD) + BOMB), BIG_VALUES + ".* at line"),
    ("bomb-in-overrides", lambda t: run(t, BOMB + "name: t\nfleet: [{profile: samd21, overrides: {d: *l8}}]\n"),
     BIG_VALUES),
    ("bomb-in-profile-file", lambda t: with_profiles(t, BOMB), "p.yaml: " + BIG_VALUES),
    ("bomb-in-set-value", lambda t: run(t, GOOD, "--set", "name=" + BOMB),
     "--set name: in the value, " + BIG_VALUES),
    ("self-alias", lambda t: run(t, "a: &a [1, *a]\nfleet: [{profile: samd21}]\n"),
     r"alias \*a is used inside the value it names at line 1"),
    ("deep-flow", lambda t: run(t, "fleet: " + "[" * 100_000 + "]" * 100_000 + "\n"), "nested deeper than 50"),
    ("deep-block", lambda t: run(t, "".join("  " * i + f"k{i}:\n" for i in range(200))), "nested deeper than 50"),
    ("deep-by-alias", lambda t: run(t, "a: &a " + "[" * 30 + "]" * 30 + "\nb: " + "[" * 30 + "*a" + "]" * 30),
     "nested deeper than 50 levels .*at line 2"),
    ("merge-chain", lambda t: run(t, "a0: &a0 {x: 1}\n" + "".join(
        f"a{i}: &a{i} {{<<: *a{i - 1}}}\n" for i in range(1, 100))), "nested deeper than 50"),
    ("huge-integer", lambda t: run(t, yaml.safe_dump(GOOD).replace("rounds: 2", "rounds: " + "9" * 5000)),
     "a value written with more than 4300 characters at line"),
    ("huge-sexagesimal", lambda t: run(t, "rounds: " + "1:" * 3000 + "1\n"), "more than 4300 characters"),
    ("impossible-date", lambda t: run(t, "name: 2001-13-45\n"), "a value that is not a valid timestamp at line 1"),
    ("bad-int-tag", lambda t: run(t, "rounds: !!int abc\n"), "a value that is not a valid int at line 1; quote it"),
    ("empty-float-tag", lambda t: run(t, "training: {lr: !!float ''}\n"), "not a valid float at line 1"),
    ("bad-bool-tag", lambda t: run(t, "data: {download: !!bool maybe}\n"), "not a valid bool"),
    ("bad-time", lambda t: run(t, "name: !!timestamp 2001-01-01T25:99:99\n"), "not a valid timestamp"),
    ("dup-top-level", lambda t: run(t, yaml.safe_dump(GOOD) + "rounds: 3\n"),
     r"key 'rounds' appears twice, at lines \d+ and \d+; keep one"),
    ("dup-in-section", lambda t: run(t, "name: t\ntraining: {lr: 0.1, lr: 0.2}\nfleet: [{profile: samd21}]\n"),
     "key 'lr' appears twice, at lines 2 and 2"),
    ("dup-in-fleet-entry", lambda t: run(t, "fleet:\n  - profile: samd21\n    count: 2\n    count: 3\n"),
     "key 'count' appears twice, at lines 3 and 4"),
    ("dup-quoted-and-plain", lambda t: run(t, "name: t\n'name': u\nfleet: [{profile: samd21}]\n"),
     "key 'name' appears twice"),
    ("dup-profile-name", lambda t: with_profiles(t, yaml.safe_dump({"b": PROFILE}) + yaml.safe_dump({"b": PROFILE})),
     "p.yaml: key 'b' appears twice"),
    ("dup-profile-field", lambda t: with_profiles(t, "b:\n  base: samd21\n  flops: 1e6\n  flops: 2e6\n"),
     "p.yaml: key 'flops' appears twice, at lines 3 and 4"),
    ("dup-in-set-value", lambda t: run(t, GOOD, "--set", "training={lr: 0.1, lr: 0.2}"),
     "--set training: in the value, key 'lr' appears twice"),
    ("python-tag", lambda t: run(t, "name: !!python/object/apply:os.system ['true']\n"), "invalid YAML at line 1"),
    ("two-documents", lambda t: run(t, yaml.safe_dump(GOOD) + "---\nrounds: 3\n"), "expected a single document"),
)
def test_yaml_that_expands_nests_or_repeats_is_refused(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


def test_more_values_than_the_limit_without_aliases(tmp_path, capsys, monkeypatch):
    """The same limit counts plain values; lowered here so the test need not write 50,000 of them."""
    monkeypatch.setattr(safe_yaml, "MAX_VALUES", 20)
    text = yaml.safe_dump(GOOD) + "extra: [" + ", ".join(["1"] * 10) + "]\n"
    refused(tmp_path, capsys, run(tmp_path, text), r"more than 20 values .*at line \d+")


def test_aliases_within_the_limits_still_load_and_set_changes_one_place(tmp_path, capsys):
    text = ("name: t\nrounds: 1\nfleet:\n  - {profile: rpi4, overrides: &c {memory_budget: 3MiB}}\n"
            "  - {profile: rpi4, count: 2, overrides: *c}\n")
    assert main(["validate", str(write(tmp_path, text)), "--set", "fleet[1].overrides.memory_budget=5MiB"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"fleet\[0\] rpi4 .*3\.00 MiB", table) and re.search(r"fleet\[1\] rpi4 .*5\.00 MiB", table)


# --- numbers that are not finite or overflow ------------------------------------------------------

INF, NAN = float("inf"), float("nan")
NOT_FINITE = "Input should be a finite number"
OVERRIDE = r"fleet\[0\]\.overrides\.memory_budget: invalid memory budget"


@cases(
    ("lr-inf", lambda t: run(t, scenario(training={"lr": INF})), f"training.lr: {NOT_FINITE}, got inf"),
    ("lr-nan", lambda t: run(t, scenario(training={"lr": NAN})), f"training.lr: {NOT_FINITE}"),
    ("lr-text-inf", lambda t: run(t, scenario(training={"lr": "1e999"})), f"training.lr: {NOT_FINITE}"),
    ("lr-huge", lambda t: run(t, scenario(training={"lr": 1e300})), "training.lr: Input should be less than or eq"),
    ("epochs-inf", lambda t: run(t, scenario(training={"epochs": INF})), f"training.epochs: {NOT_FINITE}"),
    ("epochs-times-rounds", lambda t: run(t, scenario(rounds=100_000, training={"epochs": 500})),
     r"training.epochs x rounds = 5e\+07 passes"),
    ("weight-decay-inf", lambda t: run(t, scenario(training={"weight_decay": INF})), NOT_FINITE),
    ("compression-inf", lambda t: run(t, scenario(pruning={"compression": INF})),
     "pruning.compression: must be a finite number at most 1000 or auto, got inf"),
    ("compression-nan", lambda t: run(t, scenario(pruning={"compression": NAN})), "got nan"),
    ("compression-huge", lambda t: run(t, scenario(pruning={"compression": 1e12})), "at most 1000"),
    ("fleet-compression-inf", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "compression": INF}])),
     r"fleet\[0\].compression: must be a finite number at most 1000 or auto, got inf"),
    ("prune-every-inf", lambda t: run(t, scenario(pruning={"prune_every": INF})), NOT_FINITE),
    ("fraction-nan", lambda t: run(t, scenario(fraction=NAN)), f"fraction: {NOT_FINITE}"),
    ("alpha-inf", lambda t: run(t, scenario(data={"partition": {"kind": "dirichlet", "alpha": INF}})),
     f"data.partition.alpha: {NOT_FINITE}"),
    ("client-cpus-inf", lambda t: run(t, scenario(simulation={"client_cpus": INF})), NOT_FINITE),
    ("state-memory-inf", lambda t: run(t, scenario(simulation={"state_memory": INF})),
     "state memory inf: it must be a finite number"),
    ("state-memory-1e400", lambda t: run(t, scenario(simulation={"state_memory": "1e400GiB"})), "finite number"),
    ("budget-inf", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"memory_budget": INF}}])),
     f"{OVERRIDE} inf: it must be a finite number"),
    ("budget-nan", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"memory_budget": NAN}}])),
     f"{OVERRIDE} nan: it must be a finite number"),
    ("budget-1e400KiB", lambda t: run(t, scenario(fleet=[{"profile": "rpi4",
                                                          "overrides": {"memory_budget": "1e400KiB"}}])),
     "it must be a finite number"),
    ("budget-huge-int", lambda t: run(t, scenario(fleet=[{"profile": "rpi4",
                                                          "overrides": {"memory_budget": 10**30}}])),
     "it must be at most 1 PiB"),
    ("budget-long-digits", lambda t: run(t, scenario(fleet=[{"profile": "rpi4",
                                                             "overrides": {"memory_budget": "1" * 5000 + "!"}}])),
     f"{OVERRIDE} '1111"),
    ("flops-inf", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"flops": INF}}])),
     f"fleet\\[0\\].overrides.flops: {NOT_FINITE}"),
    ("flops-tiny", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"flops": 1e-320}}])),
     "flops: Input should be greater than or equal to 1"),
    ("profile-file-uplink-nan", lambda t: with_profiles(t, {"b": {**PROFILE, "uplink": NAN}},
                                                         fleet=[{"profile": "b"}]), f"p.yaml: b.uplink: {NOT_FINITE}"),
    ("profile-file-budget-inf", lambda t: with_profiles(t, {"b": {**PROFILE, "memory_budget": INF}},
                                                         fleet=[{"profile": "b"}]), "b.memory_budget: invalid memory"),
)
def test_numbers_must_be_finite_and_in_range(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


BOOLEAN = "a number is needed, not the boolean"


@cases(
    ("rounds-yes", lambda t: run(t, "name: t\ndata: {name: digits}\nmodel: mlp-small\nrounds: yes\n"
                                    "fleet: [{profile: rpi4}]\n"), f"rounds: {BOOLEAN} true"),
    ("seed-false", lambda t: run(t, scenario(seed=False)), f"seed: {BOOLEAN} false"),
    ("fraction-true", lambda t: run(t, scenario(fraction=True)), f"fraction: {BOOLEAN} true"),
    ("lr-true", lambda t: run(t, scenario(training={"lr": True})), f"training.lr: {BOOLEAN}"),
    ("batch-true", lambda t: run(t, scenario(training={"batch_size": True})), f"training.batch_size: {BOOLEAN}"),
    ("compression-true", lambda t: run(t, scenario(pruning={"compression": True})), "pruning.compression: "),
    ("count-on", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "count": True}])), f"fleet\\[0\\].count: {BOOLEAN}"),
    ("availability-true", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"availability": True}}])),
     f"fleet\\[0\\].overrides.availability: {BOOLEAN}"),
    ("budget-yes", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "overrides": {"memory_budget": True}}])),
     f"memory_budget: {BOOLEAN}"),
    ("cloud-every-yes", lambda t: run(t, scenario(fog={"nodes": [{"name": "a", "profile": "mec-server"}],
                                                      "cloud_every": True})), f"fog.cloud_every: {BOOLEAN}"),
    ("fog-flops-true", lambda t: run(t, scenario(fog={"nodes": [{"name": "a", "profile": "mec-server",
                                                                 "overrides": {"flops": True}}]})),
     f"fog.nodes\\[0\\].overrides.flops: {BOOLEAN}"),
    ("profile-file-flops-true", lambda t: with_profiles(t, {"b": {**PROFILE, "flops": True}}, fleet=[{"profile": "b"}]),
     f"b.flops: {BOOLEAN}"),
)
def test_a_number_is_never_a_boolean(tmp_path, capsys, build, message):
    """YAML reads yes/no/on/off as booleans, which pydantic would take as 1 and 0: every number of
    a scenario, a profile or a fog node refuses them (issue 18's ``cloud_every: yes``)."""
    refused(tmp_path, capsys, build(tmp_path), message)


# --- counts and seeds, bounded before anything is allocated ----------------------------------------

@cases(
    ("count-1e9", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "count": 10**9}])),
     r"fleet\[0\].count: Input should be less than or equal to 10000000"),
    ("count-1e9-per-device", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "count": 10**9}],
                                                      data={"partition": {"per_device": 5}})), "less than or equal"),
    ("count-total", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "count": 6_000_000}] * 2,
                                              data={"partition": {"per_device": 5}})),
     "fleet: 12000000 devices in all, at most 10000000"),
    ("count-float-inf", lambda t: run(t, scenario(fleet=[{"profile": "rpi4", "count": INF}])), "count"),
    ("fleet-entries", lambda t: run(t, "e: &e {profile: rpi4}\nfleet: [" + ", ".join(["*e"] * 1_001) + "]\n"),
     "fleet: List should have at most 1000 items"),
    ("rounds-1e9", lambda t: run(t, scenario(rounds=10**9)), "rounds: Input should be less than or equal to 100000"),
    ("batch-size-huge", lambda t: run(t, scenario(training={"batch_size": 10**12})), "training.batch_size"),
    ("batch-max-huge", lambda t: run(t, scenario(training={"batch_max": 10**12})), "training.batch_max"),
    ("per-device-huge", lambda t: run(t, scenario(data={"partition": {"per_device": 10**12}})), "per_device"),
    ("shards-huge", lambda t: run(t, scenario(data={"partition": {"kind": "shards", "shards_per_device": 10**12}})),
     "shards_per_device"),
    ("test-samples-huge", lambda t: run(t, scenario(evaluation={"test_samples": 10**12})), "test_samples"),
    ("nodes-huge", lambda t: run(t, scenario(simulation={"nodes": 10**9})), "simulation.nodes"),
    ("num-cpus-huge", lambda t: run(t, scenario(simulation={"num_cpus": 10**9})), "simulation.num_cpus"),
    ("profile-files", lambda t: run(t, scenario(profiles=["p.yaml"] * 21)), "profiles: List should have at most"),
    ("seed-negative", lambda t: run(t, scenario(seed=-1)), "seed: Input should be greater than or equal to 0, got -1"),
    ("seed-2**32", lambda t: run(t, scenario(seed=2**32)), "seed: Input should be less than or equal to 4294967295"),
    ("seed-huge", lambda t: run(t, scenario(seed=10**30)), "seed: Input should be less than or equal"),
    ("seed-fraction", lambda t: run(t, scenario(seed=1.5)), "seed: Input should be a valid integer"),
    ("seed-inf", lambda t: run(t, scenario(seed=INF)), "seed: "),
    ("seed-text", lambda t: run(t, scenario(seed="lucky")), "seed: Input should be a valid integer"),
)
def test_counts_and_seeds_are_bounded(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


# --- keys, names, profile chains and --set -----------------------------------------------------------

CHAIN = "".join(f"c{i}:\n  base: c{i + 1}\n" for i in range(150)) + "c150:\n  base: samd21\n"


@cases(
    ("int-key", lambda t: run(t, "name: t\n1: x\nfleet: [{profile: samd21}]\n"), "key 1 is not a name"),
    ("null-key", lambda t: run(t, "name: t\n~: x\nfleet: [{profile: samd21}]\n"), "key None is not a name"),
    ("list-document", lambda t: run(t, "- a\n- b\n"), "a scenario is a mapping of keys, got list"),
    ("long-unknown-key", lambda t: run(t, scenario(**{"k" * 5000: 1})), r"kkkk\.\.\.: unknown key"),
    ("name-too-long", lambda t: run(t, scenario(name="x" * 1000)), "name: String should have at most 100"),
    ("name-empty", lambda t: run(t, scenario(name="")), "name: String should have at least 1"),
    ("profile-int-name", lambda t: with_profiles(t, {7: PROFILE}), "p.yaml: profile name 7 is not a name"),
    ("profile-int-field", lambda t: with_profiles(t, "b:\n  base: samd21\n  1: 2\n", fleet=[{"profile": "b"}]),
     "p.yaml: b"),
    ("profile-list-fields", lambda t: with_profiles(t, "b: [1, 2]\n"), "b: a profile is a mapping of fields"),
    ("profile-long-chain", lambda t: with_profiles(t, CHAIN, fleet=[{"profile": "c0"}]),
     "a chain of more than 100 bases"),
    ("profile-cycle", lambda t: with_profiles(t, "a: {base: b}\nb: {base: a}\n"), "cycle"),
    ("set-empty-key", lambda t: run(t, GOOD, "--set", "=3"), "--set '=3': write key.path=value"),
    ("set-blank-key", lambda t: run(t, GOOD, "--set", "  =3"), "write key.path=value"),
    ("set-dot-key", lambda t: run(t, GOOD, "--set", ".=3"), "write key.path=value"),
    ("set-index-only", lambda t: run(t, GOOD, "--set", "[0]=3"), "write key.path=value"),
    ("set-double-dot", lambda t: run(t, GOOD, "--set", "training..lr=3"), "write key.path=value"),
    ("set-trailing-dot", lambda t: run(t, GOOD, "--set", "rounds.=3"), "write key.path=value"),
    ("set-stray-bracket", lambda t: run(t, GOOD, "--set", "rounds]x=3"), "write key.path=value"),
    ("set-no-equals", lambda t: run(t, GOOD, "--set", "rounds"), "write key.path=value"),
    ("set-huge-index", lambda t: run(t, GOOD, "--set", f"fleet[{'9' * 5000}].count=1"), "write key.path=value"),
    ("set-missing-index", lambda t: run(t, GOOD, "--set", "fleet[7].count=1"), r"fleet\[7\] does not exist"),
    ("set-inf", lambda t: run(t, GOOD, "--set", "training.lr=.inf"), f"training.lr: {NOT_FINITE}"),
    ("sweep-bad-key", lambda t: ["sweep", str(write(t, GOOD)), "--key", "a..b", "--values", "1,2",
                                 "--out", str(t / "sw")], "write key.path=value"),
    ("sweep-inf-value", lambda t: ["sweep", str(write(t, GOOD)), "--key", "training.lr", "--values", "0.1,.inf",
                                   "--out", str(t / "sw")], f"training.lr=.inf: .*{NOT_FINITE}"),
    ("sweep-seed-value", lambda t: ["sweep", str(write(t, GOOD)), "--key", "seed", "--values", "2,-1",
                                    "--out", str(t / "sw")], "seed: Input should be greater than or equal to 0"),
)
def test_keys_names_chains_and_set(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


# --- fogsim train's options ----------------------------------------------------------------------

TRAIN = ["train", "--dataset", "digits", "--model", "mlp-small", "--epochs", "0.1", "--quiet"]


@cases(
    ("lr-inf", lambda t: [*TRAIN, "--lr", "inf"], f"lr: {NOT_FINITE}"),
    ("lr-nan", lambda t: [*TRAIN, "--lr", "nan"], f"lr: {NOT_FINITE}"),
    ("lr-huge", lambda t: [*TRAIN, "--lr", "1e300"], "lr: Input should be less than or equal to 10"),
    ("epochs-inf", lambda t: [*TRAIN, "--epochs", "inf"], f"epochs: {NOT_FINITE}"),
    ("epochs-huge", lambda t: [*TRAIN, "--epochs", "1e300"], "epochs: Input should be less than or equal"),
    ("compression-inf", lambda t: [*TRAIN, "--compression", "inf"], f"compression: {NOT_FINITE}"),
    ("compression-huge", lambda t: [*TRAIN, "--compression", "1e6"], "compression: Input should be less than or eq"),
    ("prune-every-nan", lambda t: [*TRAIN, "--prune-every", "nan"], f"prune_every: {NOT_FINITE}"),
    ("prune-start-nan", lambda t: [*TRAIN, "--prune-start", "nan"], f"prune_start: {NOT_FINITE}"),
    ("batch-size-huge", lambda t: [*TRAIN, "--batch-size", str(10**30)], "batch_size: Input should be less than"),
    ("batch-max-huge", lambda t: [*TRAIN, "--batch-max", str(10**12)], "batch_max: Input should be less than"),
    ("seed-negative", lambda t: [*TRAIN, "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
    ("seed-2**32", lambda t: [*TRAIN, "--seed", str(2**32)], "seed: Input should be less than or equal to 4294967295"),
    ("budget-1e400", lambda t: [*TRAIN, "--budget", "1e400"], "invalid budget '1e400': it must be a finite number"),
    ("budget-huge", lambda t: [*TRAIN, "--budget", "1e30GiB"], "it must be at most 1 PiB"),
    ("budget-inf-percent", lambda t: [*TRAIN, "--budget", "inf%"], "a percentage must be at most 10000%"),
    ("budget-1e400-percent", lambda t: [*TRAIN, "--budget", "1e400%"], "a percentage must be at most"),
    ("budget-nan-percent", lambda t: [*TRAIN, "--budget", "nan%"], "a percentage must be positive"),
    ("budget-long", lambda t: [*TRAIN, "--budget", "9" * 10_000 + "x"], r"invalid budget '9999.*\.\.\.: use a"),
)
def test_train_options_are_finite_and_bounded(tmp_path, capsys, build, message):
    argv = build(tmp_path)
    refused(tmp_path, capsys, [*argv, "--out", str(tmp_path / "run")], message)


# --- crafted dataset files ------------------------------------------------------------------------

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODE = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int32): 0x0C,
            np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODE[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def dataset_dir(tmp: Path, **replace: bytes) -> Path:
    """A directory of MNIST-like idx files (tiny and random), with some files' bytes replaced."""
    root = tmp / "data"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), (np.arange(20) % 10).astype(np.uint8),
              rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), (np.arange(10) % 10).astype(np.uint8)]
    for stem, array in zip(STEMS, arrays):
        name = stem.replace("-", "_")
        (root / stem).write_bytes(replace.get(name, idx_bytes(array)))
    return root


def _header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _fifo_images(tmp: Path) -> Path:
    root = dataset_dir(tmp)
    (root / STEMS[0]).unlink()
    os.mkfifo(root / STEMS[0])
    return root


def _gzip_bomb_header(tmp: Path) -> Path:
    root = dataset_dir(tmp)
    (root / STEMS[0]).unlink()
    (root / f"{STEMS[0]}.gz").write_bytes(gzip.compress(_header(0x08, 60000, 28, 28) + b"\0" * 1000))
    return root


def _cifar_pickles(tmp: Path) -> list[str]:
    """CIFAR-10's batch files replaced by pickles that would run code if they were ever unpickled."""
    batches = tmp / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    return ["train", "--dataset", "cifar10", "--data-root", str(tmp / "data"), "--epochs", "0.1", "--quiet"]


def train_on(root: Path) -> list[str]:
    return ["train", "--dataset", "mnist", "--data-root", str(root), "--epochs", "0.1", "--quiet"]


@cases(
    ("garbage", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=b"garbage bytes" * 10)),
     "train-images-idx3-ubyte is not an idx file"),
    ("empty", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=b"")), "not an idx file"),
    ("truncated-header", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, 20, 28, 28)[:9])),
     "truncated inside its header"),
    ("truncated-data", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, 20, 28, 28) + b"\0" * 99)),
     "holds 99 bytes of data but its header promises 15680"),
    ("trailing-data", lambda t: train_on(dataset_dir(t, t10k_labels_idx1_ubyte=_header(8, 10) + b"\0" * 11)),
     "t10k-labels-idx1-ubyte holds more than the 10 bytes of data its header promises"),
    ("huge-header", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, 2**32 - 1, 2**32 - 1, 28))),
     "its header promises .* bytes of data, more than the 1 GiB"),
    ("huge-image", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, 1, 30000, 30000))),
     "holds 0 bytes of data but its header promises 900000000"),
    ("many-dims", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, *[2] * 200))),
     "declares 200 dimensions"),
    ("zero-dims", lambda t: train_on(dataset_dir(t, train_labels_idx1_ubyte=_header(8))), "declares 0 dimensions"),
    ("wrong-image-size", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=idx_bytes(
        np.zeros((20, 64, 64), np.uint8)))), "holds images of 64x64 pixels but mnist images are 28x28"),
    ("no-images", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=_header(8, 0, 28, 28),
                                                 train_labels_idx1_ubyte=_header(8, 0))), "holds no images"),
    ("nan-pixels", lambda t: train_on(dataset_dir(t, train_images_idx3_ubyte=idx_bytes(
        np.full((20, 28, 28), np.nan, np.float32)))), "pixel values that are not finite"),
    ("negative-label", lambda t: train_on(dataset_dir(t, train_labels_idx1_ubyte=idx_bytes(
        np.full(20, -3, np.int8)))), "holds label -3 but mnist has 10 classes"),
    ("label-too-big", lambda t: train_on(dataset_dir(t, train_labels_idx1_ubyte=idx_bytes(
        np.full(20, 1000, np.int32)))), "holds label 1000"),
    ("float-labels", lambda t: train_on(dataset_dir(t, train_labels_idx1_ubyte=idx_bytes(
        np.full(20, 0.5, np.float32)))), "labels that are not integers"),
    ("mismatched", lambda t: train_on(dataset_dir(t, train_labels_idx1_ubyte=idx_bytes(np.zeros(7, np.uint8)))),
     "do not belong together"),
    ("gzip-lies", _gzip_bomb_header, "holds 1000 bytes of data but its header promises 47040000"),
    ("fifo-is-not-a-file", _fifo_images, "MNIST not found"),
    ("cifar-pickles", _cifar_pickles, "CIFAR-10 not found or corrupted"),
)
def test_crafted_dataset_files_are_one_line(tmp_path, capsys, build, message):
    argv = build(tmp_path)
    argv = argv if isinstance(argv, list) else train_on(argv)
    refused(tmp_path, capsys, [*argv, "--out", str(tmp_path / "run")], message)


def test_crafted_dataset_file_in_a_scenario(tmp_path, capsys):
    root = dataset_dir(tmp_path, train_images_idx3_ubyte=_header(8, 2**31, 2**31, 2**31))
    refused(tmp_path, capsys, run(tmp_path, scenario(data={"name": "mnist", "root": str(root)})),
            "data.name: .*more than the 1 GiB")


# --- messages never repeat the file's content -------------------------------------------------------

@cases(
    ("text-profile-file", lambda t: with_profiles(t, f"password={SECRET}\nmore lines of {SECRET}\n"),
     "p.yaml: a profile file maps profile names to their fields, got str"),
    ("key-value-profile-file", lambda t: with_profiles(t, f"token: {SECRET}\n"), "token: a profile is a mapping"),
    ("secret-as-number", lambda t: run(t, scenario(rounds=SECRET * 3)), r"rounds: .*got 'hunter2-SECRET-token.*\.\.\."),
    ("secret-in-list", lambda t: run(t, scenario(rounds=[SECRET])), "rounds: Input should be a valid integer"),
    ("secret-in-mapping", lambda t: run(t, scenario(training={"lr": {"x": SECRET}})), "training.lr: "),
    ("secret-base", lambda t: with_profiles(t, {"b": {"base": {"k": SECRET}}}), "b.base: .*got a mapping"),
    ("secret-after-syntax-error", lambda t: run(t, f"name: t\n  bad: indent {SECRET}\n"), "invalid YAML at line 2"),
    ("secret-tag", lambda t: run(t, f"name: !{SECRET * 5} x\n"), "invalid YAML"),
)
def test_messages_do_not_repeat_file_content(tmp_path, capsys, build, message):
    line = refused(tmp_path, capsys, build(tmp_path), message)
    assert line.count(SECRET) <= 1 and len(line) < 400, line


def test_a_newline_in_a_file_name_stays_one_line(tmp_path, capsys):
    path = write(tmp_path, yaml.safe_dump(GOOD) + "rounds: 3\n", "bad\nname.yaml")
    line = refused(tmp_path, capsys, ["validate", str(path)], r"bad\\nname.yaml: key 'rounds' appears twice")
    assert "\n" not in line


def test_the_console_command_refuses_an_alias_bomb_in_one_line(tmp_path):
    """The installed entry point, not only ``main``: one line, exit 2, nothing written, in seconds."""
    path = write(tmp_path, yaml.safe_dump(GOOD) + BOMB)
    result = subprocess.run([sys.executable, "-m", "fogsim", "run", str(path), "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and BIG_VALUES in result.stderr
    assert snapshot(tmp_path) == {"s.yaml"}


# --- fog topology: unknown nodes, empty nodes, bad cloud_every, fog-node profiles ----------------------

def _fog(nodes=({"name": "a"},), fleet_fog=(None, None), **fog) -> dict:
    fleet = [{**entry, **({"fog": name} if name is not None else {})} for entry, name in zip(GOOD["fleet"], fleet_fog)]
    return scenario(fog={"nodes": [dict(n) for n in nodes], **fog}, fleet=fleet)


TWO = ({"name": "a"}, {"name": "b"})


@cases(
    ("unknown-fog-node", lambda t: run(t, _fog(fleet_fog=("nope", None))), r"fleet\[0\]\.fog: unknown fog node 'nope' "
     r"\(fog\.nodes: a\)"),
    ("node-without-devices", lambda t: run(t, _fog(TWO, ("a", "a"))), r"fog\.nodes\[1\] \(b\): no device belongs"),
    ("round-robin-leaves-a-node-empty", lambda t: run(t, _fog(TWO + ({"name": "c"},), ("a", None))),
     r"fog\.nodes\[1\] \(b\): no device belongs"),
    ("more-nodes-than-devices", lambda t: run(t, _fog(TWO + ({"name": "c"}, {"name": "d"}))),
     r"fog\.nodes\[3\] \(d\): no device belongs"),
    ("by-profile-more-nodes-than-profiles", lambda t: run(t, _fog(TWO + ({"name": "c"},), assign="by-profile")),
     r"fog\.nodes\[2\] \(c\): no device belongs"),
    ("cloud-every-zero", lambda t: run(t, _fog(cloud_every=0)), r"fog\.cloud_every: .*greater than or equal to 1"),
    ("cloud-every-negative", lambda t: run(t, _fog(cloud_every=-3)), r"fog\.cloud_every: .*greater than or equal"),
    ("cloud-every-fraction", lambda t: run(t, _fog(cloud_every=1.5)), r"fog\.cloud_every: .*integer"),
    ("cloud-every-text", lambda t: run(t, _fog(cloud_every="often")), r"fog\.cloud_every: .*integer"),
    ("cloud-every-huge", lambda t: run(t, _fog(cloud_every=10**30)), r"fog\.cloud_every: .*less than or equal"),
    ("cloud-every-set", lambda t: run(t, _fog(), "--set", "fog.cloud_every=0"), r"fog\.cloud_every: .*greater"),
    ("fleet-fog-without-fog", lambda t: run(t, scenario(fleet=[{"profile": "samd21", "fog": "a"}])),
     r"fleet\[0\]\.fog: names fog node 'a' but the scenario has no fog section"),
    ("duplicate-node-names", lambda t: run(t, _fog(({"name": "a"}, {"name": "a"}))),
     r"fog\.nodes\[1\]\.name: 'a' names two fog nodes"),
    ("no-nodes", lambda t: run(t, _fog(())), r"fog\.nodes: .*at least 1 item"),
    ("nodes-missing", lambda t: run(t, scenario(fog={"cloud_every": 2})), r"fog\.nodes: required key is missing"),
    ("node-without-name", lambda t: run(t, _fog(({"profile": "mec-server"},))), r"fog\.nodes\[0\]\.name: required"),
    ("node-empty-name", lambda t: run(t, _fog(({"name": ""},))), r"fog\.nodes\[0\]\.name: .*at least 1 character"),
    ("fog-not-a-mapping", lambda t: run(t, scenario(fog=["a"])), r"fog: Input should be a valid dictionary"),
    ("fog-unknown-key", lambda t: run(t, _fog(often=2)), r"fog\.often: unknown key"),
    ("assign-unknown", lambda t: run(t, _fog(assign="random")), r"fog\.assign: .*'round-robin' or 'by-profile'"),
    ("fog-profile-unknown", lambda t: run(t, _fog(({"name": "a", "profile": "cell-tower"},))),
     r"fog\.nodes\[0\]\.profile: unknown fog-node profile 'cell-tower' \(known: lte-gateway, mec-server"),
    ("fog-override-zero-link", lambda t: run(t, _fog(({"name": "a", "overrides": {"uplink": 0}},))),
     r"fog\.nodes\[0\]\.overrides\.uplink: .*greater than or equal to 1"),
    ("fog-override-infinite", lambda t: run(t, _fog(({"name": "a", "overrides": {"flops": float("inf")}},))),
     r"fog\.nodes\[0\]\.overrides\.flops: .*finite"),
    ("fog-override-unknown", lambda t: run(t, _fog(({"name": "a", "overrides": {"memory_budget": "1MiB"}},))),
     r"fog\.nodes\[0\]\.overrides\.memory_budget: unknown key"),
    ("fog-node-name-not-text", lambda t: run(t, _fog(fleet_fog=(7, None))), r"fleet\[0\]\.fog: .*string"),
)
def test_bad_fog_topology(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


# --- names: one line of at most 100 characters (issue 18) ---------------------------------------------

CONTROL = {"newline": "a\nb", "tab": "a\tb", "nul": "a\0b", "escape": "a\x1b[31mb", "line-separator": "a\u2028b",
           "delete": "a\x7fb"}
ONE_LINE = "a name is one line of text, without control characters"
NAMED = {
    "scenario": (lambda t, bad: run(t, scenario(name=bad)), r"s\.yaml: name: "),
    "fog-node": (lambda t, bad: run(t, _fog(({"name": bad},))), r"fog\.nodes\[0\]\.name: "),
    "fleet-fog": (lambda t, bad: run(t, _fog(fleet_fog=(bad, None))), r"fleet\[0\]\.fog: "),
    "fleet-profile": (lambda t, bad: run(t, scenario(fleet=[{"profile": bad}])), r"fleet\[0\]\.profile: "),
    "fog-node-profile": (lambda t, bad: run(t, _fog(({"name": "a", "profile": bad},))), r"fog\.nodes\[0\]\.profile: "),
    "profile-file": (lambda t, bad: with_profiles(t, {"ok": PROFILE, bad: PROFILE}),
                     r"p\.yaml: the name of profile \d of the file: "),
}


def validated(argv: list[str]) -> list[str]:
    """``fogsim validate`` instead of ``fogsim run``: the same checks, and no run if a check is missing."""
    return ["validate", argv[1]] if argv[0] == "run" else argv


@pytest.mark.parametrize("bad", list(CONTROL.values()), ids=list(CONTROL))
@pytest.mark.parametrize("where", list(NAMED))
def test_names_are_one_line(tmp_path, capsys, where, bad):
    build, prefix = NAMED[where]
    refused(tmp_path, capsys, validated(build(tmp_path, bad)), prefix + ONE_LINE)


@pytest.mark.parametrize("where", list(NAMED))
def test_names_are_at_most_100_characters(tmp_path, capsys, where):
    build, prefix = NAMED[where]
    line = refused(tmp_path, capsys, validated(build(tmp_path, "n" * 101 + SECRET)),
                   prefix + "(String should have|a name has) at most 100 characters")
    assert SECRET not in line and len(line.replace(str(tmp_path), "")) < 160, line  # the name is cut short


def test_a_name_of_100_characters_and_any_printable_text_is_fine(tmp_path, capsys):
    name = "$\\frac$ [/b] ^_{} %#" + "n" * 80
    assert main(["validate", str(write(tmp_path, {**_fog(({"name": name},)), "name": name}))]) == 0
    assert len(name) == 100 and name in capsys.readouterr().out  # the plan's title, printed literally


def test_profile_names_are_printed_literally(tmp_path, capsys):
    write(tmp_path, {"[/x]": {"base": "samd21"}, "[bold]b": {"base": "samd21"}}, "p.yaml")
    assert main(["profiles", "list", "--file", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]b" in out


# --- messages: at most one short value, never file content (issue 18) -------------------------------------

SHADOW = f"root:$6${SECRET}$Xy1:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
MANY = ",".join(str(i % 1500) for i in range(3000))


def _sweep(t: Path, key: str, values: str) -> list[str]:
    return ["sweep", str(write(t, GOOD)), "--key", key, "--values", values, "--out", str(t / "sw"), "--quiet"]


@cases(
    ("sweep-huge-value", lambda t: _sweep(t, "name", "x" * 100_000),
     r"sweep value name=xxxx*\.\.\.: .*s\.yaml: name: String should have at most 100 characters"),
    ("sweep-huge-number", lambda t: _sweep(t, "rounds", "1,2" + "0" * 100_000), r"sweep value rounds=2000*\.\.\.: "),
    ("sweep-3000-values-twice", lambda t: _sweep(t, "rounds", MANY),
     r"--values: 0, 1, 10, 100, 1000 and 1495 more given more than once"),
    ("sweep-3000-values-one-empty", lambda t: _sweep(t, "rounds", MANY + ","), r"--values '0,1,2,3.*\.\.\.: give a"),
    ("sweep-huge-key", lambda t: _sweep(t, "k" * 100_000, "1"), r"sweep value kkkk*\.\.\.: .*kkk\.\.\.: unknown key"),
    ("sweep-huge-bad-key", lambda t: _sweep(t, "=" + "k" * 100_000, "1"), r"--key '=kkkk*\.\.\.: give one"),
    ("shadow-as-profile-file", lambda t: with_profiles(t, SHADOW),
     r"p\.yaml: profile 1 of the file: a profile is a mapping of fields, got NoneType; is it a profile file\?"),
    ("secret-tag", lambda t: run(t, f"name: !{SECRET} x\n"), "invalid YAML at line 1, column 7: could not determine "
     "a constructor for the tag$"),
    ("secret-alias", lambda t: run(t, f"name: *{SECRET}\n"), "invalid YAML at line 1, column 7: found undefined "
     "alias$"),
    ("secret-tag-handle", lambda t: run(t, f"name: !{SECRET}!x y\n"), "invalid YAML at line 1, column 7: .*tag handle"),
    ("tab-is-shown", lambda t: run(t, "name:\tx\n\tfleet: 1\n"), r"found character '\\t' that cannot start any token"),
    ("huge-profile-path", lambda t: run(t, scenario(profiles=["d" * 3000 + ".yaml"])),
     r"cannot read profile file .*\.\.\.d*\.yaml: File name too long"),
    ("huge-compare-path", lambda t: ["compare", str(t / ("d" * 3000)), "--out", str(t / "c")],
     r"\.\.\.d*: File name too long; give run directories"),
    ("huge-option-value", lambda t: [*TRAIN, "--lr", "x" * 100_000], r"Invalid value for '--lr': 'xxxx*\.\.\.' is not"),
    ("huge-extra-argument", lambda t: ["validate", "a.yaml", "y" * 100_000], r"Got unexpected extra argument \(yyy*"),
    ("huge-profiles-show", lambda t: ["profiles", "show", "p" * 100_000], r"unknown profile 'pppp*\.\.\. \(known: "),
    ("many-known-profiles", lambda t: with_profiles(t, {f"p{i}": {"base": "samd21"} for i in range(500)},
                                                    fleet=[{"profile": "esp33"}]),
     r"fleet\[0\]\.profile: unknown profile 'esp33' \(known: .* and 486 more\)"),
)
def test_messages_quote_one_short_value(tmp_path, capsys, build, message):
    line = refused(tmp_path, capsys, validated(build(tmp_path)), message)
    assert SECRET not in line and "root:" not in line and len(line) < 400, line


def test_run_names_of_a_sweep_are_bounded_and_distinct():
    from fogsim.sim.sweep import MAX_RUN_NAME, run_name

    names = {run_name("name", "x" * 5000 + end) for end in "ab"}
    assert len(names) == 2 and all(len(n) <= MAX_RUN_NAME for n in names)
    assert run_name("pruning.compression", "10") == "pruning.compression=10"  # short names are as they were


def test_resume_refusals_name_resume(tmp_path):
    from fogsim.errors import FogsimError
    from fogsim.rundir import Claim

    out = tmp_path / "run"
    held = Claim(out, "run")
    try:
        with pytest.raises(FogsimError, match=r"^--resume .*run: is in use by another fogsim command") as error:
            Claim.existing(out, "run")
        assert "--out" not in str(error.value)
    finally:
        held.release(True)
    with pytest.raises(FogsimError, match=r"^--resume .*: is not a fogsim sweep directory") as error:
        Claim.existing(out, "sweep")
    assert "--out" not in str(error.value)


@pytest.mark.parametrize("argv", [["run", "scenarios/quickstart.yaml", "--out"], ["train", "--out"],
                                  ["compare", "--out"], ["run", "--resume"],
                                  ["sweep", "scenarios/quickstart.yaml", "--key", "rounds", "--values", "1", "--out"]],
                         ids=["run", "train", "compare", "resume", "sweep"])
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_directory_option_is_refused_not_taken_as_the_current_directory(tmp_path, capsys, argv, empty):
    """``Path('')`` is the current directory: a run went into it and marked it as fogsim's."""
    repo = Path(__file__).resolve().parent.parent
    argv = [str(repo / a) if a.endswith(".yaml") else a for a in argv]
    line = refused(tmp_path, capsys, [*argv, empty], "is empty")
    assert line.split(": ", 2)[2].startswith(("--out is empty", "--resume is empty")), line
    assert not (tmp_path / ".fogsim").exists()


@pytest.mark.parametrize("command", [["train", "--quiet"], ["run", "SCENARIO", "--quiet"]])
def test_an_out_inside_a_file_is_refused_before_the_plan_is_printed(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    scenario_path = str(write(tmp_path, scenario()))
    argv = [scenario_path if a == "SCENARIO" else a for a in command]
    refused(tmp_path, capsys, [*argv, "--out", str(tmp_path / "afile" / "sub")], "cannot be made inside the file")


def test_a_sweep_whose_every_run_fails_leaves_nothing_and_can_be_run_again(tmp_path, capsys):
    argv = ["sweep", str(write(tmp_path, scenario(training={"batch_min": 8, "weight_decay": 1},
                                                  simulation={"engine": "local"}))), "--key",
            "training.lr", "--values", "9", "--out", str(tmp_path / "sw"), "--quiet"]
    for _ in range(2):  # the second finds the place free, not 'already exists'
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "sweep stopped at training.lr=9" in err and "no run finished, nothing kept" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("assignment, hint", [
    ("round=3", "round: unknown key; did you mean 'rounds'?"),
    ("pruning.compresion=5", "did you mean 'pruning.compression'?"),
    ("fleet[0].memory_budget=64KiB", "fleet[0].memory_budget: unknown key; did you mean "
                                     "'fleet[0].overrides.memory_budget'?"),
    ("fleet[0].overrides.memory_budjet=64KiB", "did you mean 'fleet[0].overrides.memory_budget'?"),
    ("fleet[0].profile=samd2", "unknown profile 'samd2'"),
    ("model=mlp-smal", "did you mean 'mlp-small'?"),
    ("data.name=fashion_mnist", "did you mean 'fashion-mnist'?"),
    ("strategy.name=masked-fedavgg", "did you mean 'masked-fedavg'?"),
    ("strategy.rule=keeper", "did you mean 'keepers'?"),
])
def test_an_unknown_key_or_choice_says_what_was_meant(tmp_path, capsys, assignment, hint):
    line = refused(tmp_path, capsys, ["validate", str(write(tmp_path, scenario())), "--set", assignment],
                   re.escape(hint))
    if "profile=" in assignment:
        assert "did you mean 'samd21'?" in line


def test_a_misspelt_required_profile_key_is_named_with_the_hint(tmp_path, capsys):
    profile = {**PROFILE}
    profile["memory_budjet"] = profile.pop("memory_budget")
    refused(tmp_path, capsys, with_profiles(tmp_path, {"board": profile}),
            "board.memory_budjet: unknown key; did you mean 'board.memory_budget'?")


def test_nothing_close_gets_no_guess(tmp_path, capsys):
    line = refused(tmp_path, capsys, ["validate", str(write(tmp_path, scenario())), "--set", "zzzz=1"],
                   "zzzz: unknown key")
    assert "did you mean" not in line
