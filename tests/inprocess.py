"""The server's rounds in-process, with the real client on a Grid that calls it directly (no Ray).

Shared by the tests that follow devices through rounds (``test_sim_rounds``), sparse downloads
(``test_sim_downloads``) and per-tier accuracy (``test_sim_tiers``). Building a Message needs the
run identity a Flower app has: use the ``flower_task_identity`` fixture of ``conftest``.
"""

from pathlib import Path
from uuid import uuid4

import numpy as np
from flwr.app import Array, ArrayRecord, Context, RecordDict

from fogsim.sim.client_app import make_client_app
from fogsim.sim.device_state import DeviceStates, read_state
from fogsim.sim.outputs import RunFiles
from fogsim.sim.run import prepare, prepare_resume
from fogsim.sim.scenario import resolved_yaml
from fogsim.sim.server_app import ServerJob, serve

QUICKSTART = "scenarios/quickstart.yaml"


class InProcessGrid:
    """Flower's Grid with ``workers`` nodes whose ClientApp runs inside ``push_messages``.

    ``trace`` holds, per message, (round, device, worker node, state sent, state returned or None
    if it failed); ``received`` maps (round, device) to the arrays the device was sent.
    """

    pull_interval = 0.0

    def __init__(self, spec, workers: int):
        self.app = make_client_app(lambda: spec)
        self.workers = list(range(100, 100 + workers))
        self.replies = {}
        self.trace = []
        self.received = {}

    def get_node_ids(self):
        return list(self.workers)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's InMemoryGrid does
            node = message.metadata.dst_node_id
            device, sent = read_state(message.content)
            round_ = int(message.content["config"]["server-round"])
            self.received[round_, device] = {k: a.numpy() for k, a in message.content["arrays"].items()}
            reply = self.app(message, Context(run_id=1, node_id=node, node_config={}, state=RecordDict(),
                                              run_config={}))
            returned = None if reply.has_error() else read_state(reply.content)[1]
            self.trace.append((round_, device, node, sent, returned))
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


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
        out.mkdir()
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
    return grid, prepared
