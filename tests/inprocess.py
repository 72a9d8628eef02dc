"""The server's rounds in-process on the local engine's grid, with any number of worker nodes.

Shared by the tests that follow devices through rounds (``test_sim_rounds``), sparse downloads
(``test_sim_downloads``) and per-tier accuracy (``test_sim_tiers``). Building a Message needs the
run identity a Flower app has: use the ``flower_task_identity`` fixture of ``conftest``.
"""

from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from fogsim.core import Topology
from fogsim.models import build_model
from fogsim.rundir import Claim
from fogsim.sim.client_app import dataset_of, make_client_app
from fogsim.sim.device_state import DeviceStates, unpack_masks
from fogsim.sim.local import LocalGrid
from fogsim.sim.messages import CONFIG, MODEL, ROUND_KEY, WARM_UP, read_cohort, read_reply
from fogsim.sim.outputs import RunFiles
from fogsim.sim.run import prepare, prepare_resume
from fogsim.sim.scenario import resolved_yaml
from fogsim.sim.server_app import ServerJob, serve
from strategies import encoded_nbytes, pack_masked_state

QUICKSTART = "scenarios/quickstart.yaml"


def device_download(dense: dict[str, np.ndarray], bits: np.ndarray | None, shapes: dict[str, tuple[int, ...]],
                    download: str) -> dict[str, np.ndarray]:
    """What a device receives (``client_app.download_nbytes`` counts its bytes): ``dense``, or with
    ``download: sparse`` and a mask ``bits`` (packed) the model restricted to the mask and packed
    like the uploads, unless that is no smaller."""
    if download != "sparse" or bits is None:
        return dense
    sparse = pack_masked_state(dense, unpack_masks(bits, shapes))
    return sparse if encoded_nbytes(sparse) < encoded_nbytes(dense) else dense


class InProcessGrid(LocalGrid):
    """The local engine's grid with ``workers`` nodes, recording what each device was sent.

    ``trace`` holds, per device and round, (round, device, worker node, state sent, state returned
    or None if it failed); ``received`` maps (round, device) to the arrays the device received
    (``device_download`` of the cohort's model under its mask); ``cohorts`` holds
    (round, worker node, devices) per cohort message.
    """

    def __init__(self, spec, workers: int):
        super().__init__(make_client_app(lambda: spec), workers)
        self.spec = spec
        self.trace, self.received, self.cohorts = [], {}, []
        self._shapes = None

    def push_messages(self, messages):
        messages = list(messages)
        ids = super().push_messages(messages)
        for message, id_ in zip(messages, ids):
            if WARM_UP in message.content:
                continue
            assignments, download = read_cohort(message.content)
            outcomes, *_ = read_reply(self._replies[id_].content)
            returned = {o.device: o.state for o in outcomes}
            node = message.metadata.dst_node_id
            round_ = None
            for a in assignments:
                config = message.content[CONFIG + str(a.config)]
                round_ = int(config[ROUND_KEY])
                dense = {k: v.numpy() for k, v in message.content[MODEL + str(a.model)].items()}
                mask = a.state.mask if a.state is not None else None
                self.received[round_, a.device] = device_download(dense, mask, self.prunable_shapes(), download)
                self.trace.append((round_, a.device, node, a.state, returned.get(a.device)))
            self.cohorts.append((round_, node, [a.device for a in assignments]))
        return ids

    def prunable_shapes(self):
        if self._shapes is None:
            spec = self.spec
            data = dataset_of(spec.scenario)
            model = build_model(spec.scenario.model, data.input_shape, data.num_classes)
            self._shapes = {n: tuple(model.get_parameter(n).shape) for n in Topology(model, data.input_shape).prunable}
        return self._shapes


def serve_in_process(out: Path, sets: list[str], workers: int = 2, stop_after: int | None = None,
                     resume: bool = False, scenario: str = QUICKSTART) -> tuple[InProcessGrid, object]:
    """Run the quickstart with ``sets`` into ``out`` (which must not exist), with a checkpoint after
    every round as ``fogsim run`` writes them; return the grid and the prepared scenario.

    ``stop_after`` stops the server after that round's rows, as an interrupt does (the round's
    checkpoint is written first); ``resume`` goes on in ``out`` from its newest checkpoint.
    """
    if resume:
        prepared = prepare_resume(out)
        found, states = prepared.resumed
        files, first = RunFiles.resume(out, found.round, fog=prepared.scenario.fog is not None), found.round + 1
        initial = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in found.arrays.items()})
        strategy_state = found.strategy
    else:
        prepared = prepare(scenario, sets)
        states = DeviceStates(len(prepared.fleet), prepared.scenario.simulation.state_memory)
        prepared.held = Claim(out, "run")  # marked as fogsim run marks it, so that it can be resumed
        files, first, initial, strategy_state = RunFiles(
            out, resolved_yaml(prepared.scenario), fog=prepared.scenario.fog is not None), 1, None, None
    job = ServerJob(prepared.spec, prepared.data, files, workers, states, first_round=first, initial=initial,
                    checkpoint_meta={**prepared.identity(), "base": str(prepared.base)},
                    strategy_state=strategy_state)
    if stop_after is not None:
        job.on_round = lambda row: job.stop.set() if row["round"] == stop_after else None
    grid = InProcessGrid(prepared.spec, workers)
    try:
        serve(grid, job)
    except Exception:
        if stop_after is None:
            raise
    finally:
        files.close()
        states.close()
        prepared.held.release(True)
    return grid, prepared


def interrupted_run(prepared, out: Path, after_round: int = 1) -> None:
    """Run ``prepared`` into ``out`` and stop it after round ``after_round``'s files and checkpoint, as an
    interrupt (Ctrl-C) does then; the run directory is kept for ``--resume``."""
    from fogsim.sim.run import run

    def on_round(row):
        if row["round"] == after_round:
            raise KeyboardInterrupt

    try:
        run(prepared, out, on_round=on_round)
    except KeyboardInterrupt:
        return
    raise AssertionError(f"the run ended before round {after_round} could be interrupted")


def ran_one_round(argv: list[str], capsys) -> Path:
    """Run the command ``argv`` (a one-round run with ``--out``); its run directory, checked to hold round 1."""
    from fogsim.cli import main
    from fogsim.sim.outputs import read_rows

    code = main(argv)
    assert code == 0, capsys.readouterr().err
    out = Path(argv[argv.index("--out") + 1])
    assert [r["round"] for r in read_rows(out / "rounds.csv")] == [1]
    return out


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(tmp: Path, capsys, argv: list[str], message: str) -> str:
    """Run the command ``argv`` and check the rule for every bad input (exit 2, one line ``fogsim: error:``
    matching ``message``, no traceback, nothing written under ``tmp``); return the line."""
    import re

    from fogsim.cli import main

    before = snapshot(tmp)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("fogsim: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(tmp) == before, "a bad input must leave nothing behind"
    return lines[0]
