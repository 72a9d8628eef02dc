"""The local engine (``simulation.engine: local``): the whole simulation in this one process, no Ray.

The server's side is unchanged — Flower's strategy loop over the ``FogGrid`` (``server_app.serve``)
— and so is the worker's — the same ``ClientApp``, warm for the whole run. Only the transport
differs: ``LocalGrid`` is a Flower Grid with one worker node whose ClientApp runs inside
``push_messages``, so a message costs a function call instead of a trip through Flower's
simulation engine and Ray. What it trains is what the Ray engine's workers train (one thread per
worker, as there), so both engines write the same files.

It is for runs on one CPU: small scenarios, the quick start, tests. Ray (the default) runs
workers side by side, on this machine's cores or a cluster's.
"""

from __future__ import annotations

from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fogsim.sim.client_app import make_client_app, worker_for
from fogsim.sim.server_app import ServerJob, serve

WORKER_NODE = 1  # the one worker node's id
SERVER_NODE = 0  # the server's own node id, as Flower's SuperLink numbers it


class LocalGrid:
    """A Flower Grid whose worker nodes (one by default) run the ClientApp when a message is pushed."""

    pull_interval = 0.0

    def __init__(self, app, workers: int = 1):
        self.app = app
        self.contexts = {node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
                         for node in range(WORKER_NODE, WORKER_NODE + workers)}
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # what Flower's link state does
            reply = self.app(message, self.contexts[message.metadata.dst_node_id])
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


def run_local(job: ServerJob) -> None:
    """Run ``job``'s rounds in this process with one worker (``job.nodes`` must be 1)."""
    spec = job.spec
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    # Flower sets this identity when it starts a ServerApp; Messages are built with it.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE, 1
    worker_for(spec, job.data)  # the worker shares the dataset the server loaded
    try:
        serve(LocalGrid(make_client_app(lambda: spec)), job)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
