"""The Flower ``ServerApp``: Flower's strategy loop over the fog, one result row per round.

The strategy (``masked-fedavg`` or Flower's ``fedavg``) runs its own round loop over a
``FogGrid``; the central evaluation hook, called by that loop at the end of every round, is
where fogsim evaluates the global model on the test set, writes the round's rows and starts
the next round of the fog (availability and sampling).

The model evaluated is the round's aggregate restricted to the entries that some client of the
round kept (``round_union``). The strategy's own state keeps the previous global value where no
client kept an entry, as the brief's averaging rule says — a device that was not sampled may
still hold that entry — but those values are stale, often the untrained initial ones, and no
device of the round would run them. For Flower's FedAvg the restriction changes nothing: it
has already averaged those entries to zero.

``device_accuracy`` is the accuracy of the model each device of the round runs once it applies
its own mask to the new global weights, averaged by examples: with partly different masks the
union model above is not what any device holds.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fogsim.core import Topology, evaluate
from fogsim.data import Dataset
from fogsim.models import build_model
from fogsim.sim.client_app import UNIFORM_WEIGHT_KEY, FleetSpec
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.outputs import RunFiles
from strategies import STRATEGIES, unpack_masked_state


def mask_key(masks: dict[str, torch.Tensor], prunable: list[str]) -> bytes:
    """A compact identity of a set of masks, to evaluate each distinct one once."""
    return b"".join(np.packbits(masks[n].numpy()).tobytes() for n in prunable)


def client_masks(replies: list, prunable: list[str]) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """``(examples, masks)`` of every client that finished the round, read from its upload.

    A packed upload carries its masks; a dense one (for Flower's FedAvg) has zeros exactly where
    the device pruned, so its mask is its non-zero entries.
    """
    out = []
    for _, reply in replies:
        if reply.has_error():
            continue
        state, masks = unpack_masked_state({k: a.numpy() for k, a in reply.content["arrays"].items()})
        out.append((int(reply.content["metrics"]["num-examples"]),
                    {name: torch.from_numpy(masks[name] if name in masks else state[name] != 0) for name in prunable}))
    return out


def masked(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * masks[k] if k in masks else v for k, v in state.items()}


def union(masks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([m[name] for m in masks]).any(0) for name in masks[0]} if masks else {}


def client_rows(spec: FleetSpec, grid: FogGrid) -> list[dict]:
    rows = []
    for device_id, reply in grid.replies:
        device = spec.devices[device_id]
        row = {"round": grid.round, "client_id": device_id, "profile": device.profile_name,
               "budget_bytes": device.plan.budget_bytes, "failed": int(reply.has_error())}
        if not reply.has_error():
            m = reply.content["metrics"]
            row.update(peak_memory_bytes=m["peak-memory-bytes"], batch_size_min=m["batch-size-min"],
                       batch_size_max=m["batch-size-max"], density=m["density"], num_examples=m["num-examples"],
                       train_loss=m["train-loss"], accuracy=m["accuracy"], progress=m["progress"], upload_bytes=m["upload-bytes"],
                       download_bytes=m["download-bytes"], compute_s=m["compute-s"], sim_time_s=m["sim-time-s"])
        rows.append(row)
    return rows


def round_row(round_: int, accuracy: float, loss: float, device_accuracy: float, global_density: float,
              clients: list[dict],
              grid: FogGrid, wall_time_s: float) -> dict:
    ok = [c for c in clients if not c["failed"]]
    examples = sum(c["num_examples"] for c in ok)
    return {
        "round": round_, "accuracy": accuracy, "loss": loss, "device_accuracy": device_accuracy,
        "density": sum(c["density"] * c["num_examples"] for c in ok) / examples if examples else float("nan"),
        "global_density": global_density,
        "upload_bytes": sum(c["upload_bytes"] for c in ok),
        "download_bytes": sum(c["download_bytes"] for c in ok),
        "sim_time_s": max((c["sim_time_s"] for c in ok), default=0.0),
        "wall_time_s": wall_time_s,
        "clients_available": len(grid.available), "clients_sampled": len(grid.sampled),
        "clients_ok": len(ok), "clients_failed": len(clients) - len(ok),
    }


def make_server_app(spec: FleetSpec, data: Dataset, files: RunFiles, outcome: dict,
                    on_round: Callable[[dict], None] | None = None,
                    on_client: Callable[[int, int, int], None] | None = None) -> ServerApp:
    """A ServerApp that runs ``spec`` and leaves ``rounds`` and ``clients`` rows in ``outcome``.

    ``on_client(round, replies, sampled)`` is called as the training replies of a round arrive."""
    scenario = spec.scenario
    app = ServerApp()
    test_x, test_y = data.test_x, data.test_y
    if scenario.evaluation.test_samples is not None:
        test_x, test_y = test_x[:scenario.evaluation.test_samples], test_y[:scenario.evaluation.test_samples]
    initial = build_model(scenario.model, data.input_shape, data.num_classes, seed=scenario.seed)
    prunable = Topology(initial, data.input_shape).prunable
    outcome.update(rounds=[], clients=[])

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        def _on_reply(done: int, total: int) -> None:
            if on_client is not None:
                on_client(fog_grid.round, done, total)

        fog_grid = FogGrid(grid, [d.profile for d in spec.devices], scenario.fraction, scenario.seed,
                           on_reply=_on_reply if on_client is not None else None)
        fog_grid.discover()
        clock = [time.perf_counter()]

        def _end_of_round(round_: int, arrays: ArrayRecord) -> MetricRecord | None:
            if round_ == 0:
                fog_grid.start_round(1)
                clock[0] = time.perf_counter()
                return None
            model = build_model(scenario.model, data.input_shape, data.num_classes)
            state = arrays.to_torch_state_dict()
            clients_masks = client_masks(fog_grid.replies, prunable)
            everyone = union([m for _, m in clients_masks])
            model.load_state_dict(masked(state, everyone))
            accuracy, loss = evaluate(model, test_x, test_y)
            state = {k: v.clone() for k, v in model.state_dict().items()}  # load_state_dict below writes in place
            device_accuracy = float("nan")
            if scenario.evaluation.device_masks and clients_masks:
                # Devices often share a mask (always, without pruning): one test pass per distinct mask.
                seen = {mask_key(everyone, prunable): accuracy}
                scores = []
                for examples, masks in clients_masks:
                    key = mask_key(masks, prunable)
                    if key not in seen:
                        model.load_state_dict(masked(state, masks))
                        seen[key] = evaluate(model, test_x, test_y)[0]
                    scores.append((examples, seen[key]))
                device_accuracy = sum(n * a for n, a in scores) / sum(n for n, _ in scores)
            kept = sum(int(torch.count_nonzero(state[n])) for n in prunable)
            density = kept / sum(state[n].numel() for n in prunable)
            now = time.perf_counter()
            clients = client_rows(spec, fog_grid)
            row = round_row(round_, accuracy, loss, device_accuracy, density, clients, fog_grid, now - clock[0])
            files.write_round(row, clients)
            outcome["rounds"].append(row)
            outcome["clients"].extend(clients)
            if on_round is not None:
                on_round(row)
            fog_grid.start_round(round_ + 1)
            clock[0] = time.perf_counter()
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        weight_key = "num-examples" if scenario.strategy.weighting == "examples" else UNIFORM_WEIGHT_KEY
        strategy = STRATEGIES[scenario.strategy.name](
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=0, min_evaluate_nodes=0,
            min_available_nodes=0, weighted_by_key=weight_key)
        strategy.start(grid=fog_grid, initial_arrays=ArrayRecord(initial.state_dict()),
                       num_rounds=scenario.rounds, evaluate_fn=_end_of_round)

    return app
