"""The user's own model from a scenario (issue 20, items 1 and 2): ``model: file.py:build``,
``package.module:build`` or ``{builder, args}``, and any PyTorch module under a memory budget.

A model that is not a flat ``nn.Sequential`` of known modules is measured with autograd's
saved-tensor hooks at plan time; these tests hold that measurement, and the state bytes, to the
bytes really held (within 10%) on a residual and a depthwise-separable network, train them under
budgets, run the shipped example (``scenarios/examples/residual.yaml``) end to end, and check
that a run directory keeps the builder's file, resumes after a move and refuses a changed one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fogsim.cli import main
from fogsim.core.config import TrainConfig
from fogsim.core.importance import make_criterion
from fogsim.core.masks import MaskSet
from fogsim.core.memory import MemoryAccountant, nbytes, pack
from fogsim.core.topology import Topology
from fogsim.core.trainer import DeviceTrainer, make_optimizer
from fogsim.models import build_model
from fogsim.sim.outputs import read_rows
from fogsim.sim.run import prepare, prepare_resume, run
from inprocess import interrupted_run, refused
from fogsim.sim.scenario import reference

EXAMPLES = Path(__file__).parent.parent / "scenarios" / "examples"
NETS = str(EXAMPLES / "nets.py")
SHAPE = (3, 32, 32)
MODELS = {"resnet8": f"{NETS}:build", "separable": {"builder": f"{NETS}:separable", "args": {"width": 8}}}

BASE = {"name": "own", "rounds": 1, "data": {"name": "digits"},
        "training": {"batch_size": 8, "batch_min": 4, "batch_max": 16},
        "fleet": [{"profile": "rpi4", "count": 2}], "simulation": {"engine": "local"}}
TINY = """\
from torch import nn


def build(input_shape, num_classes, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")


def write_scenario(folder: Path, model, name: str = "s.yaml", **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump({**BASE, "model": model, **changes}))
    return folder / name


def example(tmp_path: Path) -> Path:
    """The shipped example copied into ``tmp_path``, with the npz file its make_data.py writes."""
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("*.npz", "__pycache__"))
    spec = importlib.util.spec_from_file_location("make_data", folder / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write(folder / "residual.npz")
    return folder / "residual.yaml"


def within_budget(out: Path) -> list[dict]:
    clients = [row for row in read_rows(out / "clients.csv") if not int(row["failed"])]
    assert clients
    for row in clients:
        assert int(row["peak_memory_bytes"]) <= int(row["budget_bytes"]), row
    return clients


# --- the builder forms -------------------------------------------------------------------------

def test_every_form_builds_the_same_seeded_model_without_moving_the_global_rng(tmp_path, monkeypatch):
    (tmp_path / "lib" / "mynets").mkdir(parents=True)
    (tmp_path / "lib" / "mynets" / "__init__.py").write_text("")
    (tmp_path / "lib" / "mynets" / "tiny.py").write_text(TINY)
    (tmp_path / "tiny.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    forms = [str(tmp_path / "tiny.py") + ":build", "mynets.tiny:build",
             {"builder": str(tmp_path / "tiny.py") + ":build", "args": {"hidden": 16}}]
    built = [build_model(form, (1, 8, 8), 10, seed=7).state_dict() for form in forms]
    assert torch.equal(torch.random.get_rng_state(), state)
    for other in built[1:]:
        assert all(torch.equal(built[0][k], other[k]) for k in built[0])
    assert not torch.equal(build_model(forms[0], (1, 8, 8), 10, seed=8).state_dict()["1.weight"], built[0]["1.weight"])
    wider = build_model({"builder": forms[0], "args": {"hidden": 5}}, (1, 8, 8), 10, seed=7)
    assert wider[1].out_features == 5


def test_a_builder_file_is_relative_to_the_scenario_and_the_run_directory_keeps_it(tmp_path, capsys):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "tiny.py").write_text(TINY)
    s = write_scenario(folder, {"builder": "tiny.py:build", "args": {"hidden": 12}})
    assert main(["run", str(s), "--out", str(tmp_path / "out"), "--quiet"]) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    assert (out / "models" / "tiny.py").read_text() == TINY
    assert yaml.safe_load((out / "scenario.yaml").read_text())["model"] == {"builder": "models/tiny.py:build",
                                                                             "args": {"hidden": 12}}
    assert json.loads((out / "run.json").read_text())["model"] == [
        {"path": "models/tiny.py", "bytes": len(TINY), "sha256": hashlib.sha256(TINY.encode()).hexdigest()}]
    assert main(["validate", str(out / "scenario.yaml")]) == 0
    # the same scenario and seed give the same numbers
    assert main(["run", str(s), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    for name in ("rounds.csv", "clients.csv"):
        drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]  # noqa: E731
        assert drop(read_rows(out / name)) == drop(read_rows(tmp_path / "again" / name))


@pytest.mark.parametrize("source, model, message", [
    (None, "missing.py:build", r"model builder file .*missing\.py \(No such file"),
    ("def build(:\n", "nets.py:build", r"model builder .*nets\.py:build.*importing .* failed \(SyntaxError"),
    ("def other(**kw):\n    pass\n", "nets.py:build", r"model builder .*nets\.py:build.*has no function build"),
    ("def build(input_shape, num_classes):\n    raise ValueError('too wide')\n", "nets.py:build",
     r"model builder .*nets\.py:build.* failed \(ValueError: too wide\)"),
    ("def build(input_shape, num_classes):\n    return 'a net'\n", "nets.py:build",
     r"model builder .*nets\.py:build.* returned a str, not a torch\.nn\.Module"),
    (TINY, {"builder": "nets.py:build", "args": {"depth": 3}}, r"model builder .*nets\.py:build.* failed "
     r"\(TypeError: .*depth"),
    (None, "no_such_package.nets:build", r"model builder .*no_such_package\.nets:build.*importing .* failed"),
], ids=["missing-file", "syntax-error", "no-function", "raises", "not-a-module", "unknown-arg", "no-module"])
def test_a_bad_builder_is_one_line_exit_2_nothing_written(tmp_path, capsys, source, model, message):
    if source is not None:
        (tmp_path / "nets.py").write_text(source)
    s = write_scenario(tmp_path, model)
    refused(tmp_path, capsys, ["run", str(s), "--out", str(tmp_path / "out"), "--quiet"], message)


def test_keys_and_the_scenario_reference_describe_the_forms():
    (row,) = [r for r in reference() if r[0] == "model"]
    assert "file.py:build" in row[2] and "package.module:build" in row[2] and "args" in row[2]
    assert "model:" in (Path(__file__).parent.parent / "docs" / "scenarios.md").read_text()


# --- any model under a budget ------------------------------------------------------------------

def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward, parameters and buffers excluded."""
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    held: dict[int, int] = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            held[storage.data_ptr()] = max(held.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return sum(held.values())


def measured_and_planned(name: str, density: float, optimizer: str = "momentum", b: int = 32) -> tuple[int, int]:
    """Training bytes at batch ``b`` and ``density``: measured (autograd's saved tensors + the sparse
    layout's parameters, gradients, optimizer state + buffers) and planned by the accountant."""
    model = build_model(MODELS[name], SHAPE, 10, seed=0)
    topology = Topology(model, SHAPE)
    accountant = MemoryAccountant(model, topology, optimizer, "sparse", 10)
    planned = accountant.planned(density, make_criterion()).at(b)
    masks = MaskSet(model, topology)
    if density < 1:
        masks.update(make_criterion().propose(masks, density))
        masks.apply()
    opt = make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn((b, *SHAPE), generator=g), torch.randint(0, 10, (b,), generator=g)
    opt.zero_grad()
    activations = saved_bytes(model, x, y)
    masks.mask_gradients()
    opt.step()
    masks.apply()
    masks.mask_optimizer_state(opt)
    buffers = sum(t.numel() * t.element_size() for t in model.buffers())
    return activations + nbytes(pack(model, masks, opt, "sparse")) + buffers, planned


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("density", [1.0, 0.1])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_the_accountant_is_within_10_percent_of_the_bytes_held(name, density, optimizer):
    measured, planned = measured_and_planned(name, density, optimizer)
    assert planned == pytest.approx(measured, rel=0.10), (name, density, measured, planned)
    assert planned >= measured * 0.99  # the plan is the bound, never far below what is held


def test_the_measured_path_agrees_with_the_table_of_a_flat_sequential():
    class Chain(nn.Sequential):  # not a plain nn.Sequential: measured, not traced
        pass

    for name, shape in (("lenet5", (1, 28, 28)), ("mlp-small", (1, 8, 8))):
        flat = build_model(name, shape, 10, seed=0)
        traced = Topology(flat, shape)
        measured = Topology(Chain(*flat), shape)
        assert traced.flat and not measured.flat
        assert measured.prunable == traced.prunable
        assert measured.activation_bytes(num_classes=10) == pytest.approx(traced.activation_bytes(num_classes=10),
                                                                          rel=0.05)
        assert [s[2].numel for s in measured.steps] == [traced.steps[layer.index][2].numel for layer in traced.layers]


@pytest.mark.parametrize("name", list(MODELS))
def test_residual_and_separable_models_train_within_budget_at_every_step(name):
    model = build_model(MODELS[name], SHAPE, 4, seed=0)
    topology = Topology(model, SHAPE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in Topology(model, SHAPE).model.state_dict().items())  # untouched
    config = TrainConfig(method="dynhp", compression=10, batch_size=8, batch_min=4, batch_max=32, epochs=2,
                         prune_end=0.5, prune_every=0.25)
    dense = MemoryAccountant(model, topology, "momentum", "sparse", 4).footprint(None)
    budget = dense.at(7) - 1  # the dense model fits 6 samples a step, and the pruned one 7
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn((48, *SHAPE), generator=g), torch.randint(0, 4, (48,), generator=g)
    trainer = DeviceTrainer(model, SHAPE, 4, config, horizon=2 * len(x), budget=budget)
    rows = trainer.train(x, y, 2 * len(x), generator=g)
    assert all(row["memory_bytes"] <= budget for row in rows)
    assert rows[-1]["density"] == pytest.approx(0.1, abs=0.01)
    assert rows[-1]["planned_batch"] > rows[0]["planned_batch"]  # the freed state bytes buy samples
    for layer in topology.layers:  # pruned weights stay zero
        weight = model.get_parameter(layer.weight)
        assert torch.all(weight[~trainer.masks.masks[layer.weight]] == 0)
    # the per-step check runs for these models too: a budget one byte short of the planned step
    trainer._maybe_prune = lambda: None  # (no pruning step that would plan the batch anew)
    trainer.budget = trainer.footprint.at(trainer.batch_size) - 1
    with pytest.raises(RuntimeError, match="over the budget"):
        trainer.train(x, y, trainer.batch_size, generator=g)


@pytest.mark.parametrize("name, layer", [("resnet8", "'blocks.0.conv2' (Conv2d)"),
                                         ("separable", "'2.depthwise' (Conv2d)")])
def test_structured_pruning_of_such_a_model_is_refused_naming_the_layer(tmp_path, capsys, name, layer):
    model = MODELS[name]
    s = write_scenario(tmp_path, model, pruning={"granularity": "structured"},
                       data={"name": "npz", "path": "d.npz"})
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write(tmp_path / "d.npz")
    line = refused(tmp_path, capsys, ["validate", str(s)],
                   re.escape(f"pruning.granularity: structured pruning cannot follow layer {layer}"))
    assert "use unstructured pruning" in line


def test_structured_pruning_names_a_module_the_table_does_not_know():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Flatten(),
                          nn.Linear(4 * 16 * 16, 10))
    topology = Topology(model, (1, 8, 8))
    assert not topology.flat and topology.prunable == ["0.weight", "4.weight"]
    assert "cannot follow layer '2' (Upsample)" in topology.structured_refusal()
    rows = DeviceTrainer(model, (1, 8, 8), 10, TrainConfig(method="dynhp", compression=4, epochs=1), horizon=32,
                         budget=None).train(torch.randn(32, 1, 8, 8), torch.arange(32) % 10, 32)
    assert all(row["memory_bytes"] <= row["budget_bytes"] for row in rows)  # unstructured: fine


def test_a_model_whose_outputs_are_not_the_classes_is_refused(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(WRAPPED)
    s = write_scenario(tmp_path, "nets.py:build")
    capsys.readouterr()
    assert main(["validate", str(s)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "returns 3 scores per sample but the data has 10 classes" in err, err


WRAPPED = """\
from torch import nn


class Wrap(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def build(input_shape, num_classes):
    return Wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
"""


# --- the shipped example -----------------------------------------------------------------------

def test_the_example_runs_on_the_local_engine_within_budget(tmp_path, capsys):
    s = example(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(s), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    clients = within_budget(out)
    assert {row["profile"] for row in clients} == {"esp32-s3", "rpi-zero-2w"}
    assert [int(r["round"]) for r in read_rows(out / "rounds.csv")] == [1, 2, 3]
    assert (out / "models" / "nets.py").read_bytes() == (EXAMPLES / "nets.py").read_bytes()
    tiers = read_rows(out / "tiers.csv")
    assert all(float(t["budget_bytes"]) >= float(t["target_bytes"]) for t in tiers if "target_bytes" in t)


def test_a_moved_run_directory_resumes_with_its_builder_and_a_changed_one_is_refused(tmp_path, capsys):
    s = example(tmp_path)
    out = tmp_path / "run"

    interrupted_run(prepare(s), out)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(out, moved)
    (s.parent / "nets.py").unlink()  # the original builder is gone: the directory needs nothing outside it
    changed = tmp_path / "changed"
    shutil.copytree(moved, changed)
    with open(changed / "models" / "nets.py", "a") as file:
        file.write("\n# edited\n")
    assert main(["validate", str(moved / "scenario.yaml")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["run", "--resume", str(changed), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(r"model builder file .*nets\.py.* changed since the run started",
                                                    err), err
    run(prepare_resume(moved), moved, resume=True)
    assert [r["round"] for r in read_rows(moved / "rounds.csv")] == [1, 2, 3]
    within_budget(moved)


@pytest.mark.slow
def test_the_example_runs_on_ray_within_budget(tmp_path, capsys):
    s = example(tmp_path)
    out = tmp_path / "out"
    code = main(["run", str(s), "--out", str(out), "--set", "simulation.engine=ray", "--set",
                 "simulation.num_cpus=2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    within_budget(out)
    assert [int(r["round"]) for r in read_rows(out / "rounds.csv")] == [1, 2, 3]
    assert main(["run", str(s), "--out", str(tmp_path / "local"), "--quiet"]) == 0  # the same numbers locally
    for name in ("rounds.csv", "clients.csv", "tiers.csv"):
        drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]  # noqa: E731
        assert drop(read_rows(out / name)) == drop(read_rows(tmp_path / "local" / name)), name


def test_the_builder_of_docs_extending_runs(tmp_path, capsys):
    doc = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    section = doc.split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "my_nets.py").write_text(block)
    s = write_scenario(tmp_path, {"builder": "my_nets.py:build", "args": {"width": 4}},
                       fleet=[{"profile": "nrf52840", "count": 2}])
    assert main(["run", str(s), "--out", str(tmp_path / "out"), "--quiet"]) == 0, capsys.readouterr().err
    within_budget(tmp_path / "out")
    assert (tmp_path / "out" / "models" / "my_nets.py").read_text() == block
