"""Experiment tracking: a run's figures, round by round, where researchers watch runs.

``--track tensorboard:DIR`` writes TensorBoard event files into ``DIR/<run directory's name>``;
``--track mlflow:URI`` logs an MLflow run, in the experiment named after the scenario, to the
tracking store ``URI`` (a server ``http://host:5000``, a database ``sqlite:///mlflow.db``, or a
folder ``file:///path/mlruns``, which MLflow 3 accepts with ``MLFLOW_ALLOW_FILE_STORE=true``).
``--track`` repeats. Both are optional: ``pip install 'fogsim[tracking]'`` (TensorBoard and
MLflow's client, ``mlflow-skinny``).

What is logged, with the round as the step:

* ``global/...``: the global model's ``accuracy`` and ``loss``, ``density``, ``global_density``,
  ``upload_bytes``, ``download_bytes``, ``wan_bytes``, ``sim_time_s``, ``wall_time_s`` and the
  devices ``sampled``, ``ok`` and ``failed`` (a round of ``rounds.csv``);
* ``profile/<name>/...``: per device profile, over its devices that trained in the round, the mean
  ``train_loss`` and ``density``, the largest ``peak_memory_bytes`` and ``batch_size_max``, the
  summed ``upload_bytes``, and the devices ``ok`` and ``failed`` (from ``clients.csv``);
* at the end, ``final/accuracy``, ``final/best_accuracy`` and ``final/<name>/accuracy`` (the final
  global model under each profile's devices' masks, ``tiers.csv``).

The scenario, every key as ``fogsim keys`` names it (``fleet.0.profile`` for ``fleet[0].profile``,
as trackers take no brackets), is the run's parameters: MLflow params; in TensorBoard, hparams and
the scenario's YAML as text. A resumed run logs its remaining rounds into a new MLflow run (named
``<run> (resumed)``) and into the same TensorBoard folder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from fogsim.errors import FogsimError, shown

KINDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}  # module, package
MAX_PARAM_CHARS = 500  # MLflow keeps 6,000 characters of a parameter's value; a scenario's values are short


@dataclass(frozen=True)
class Track:
    """One ``--track`` option: which tracker, and where it writes."""

    kind: str
    where: str


def parse_tracks(specs: list[str] | None) -> list[Track]:
    """``["tensorboard:runs/tb", "mlflow:sqlite:///m.db"]`` -> tracks; checked, with the tracker's package
    importable, before anything runs."""
    tracks = []
    for spec in specs or []:
        kind, _, where = spec.partition(":")
        if kind not in KINDS or not where.strip():
            raise FogsimError(f"--track {shown(spec)}: give tensorboard:DIR or mlflow:URI, e.g. --track "
                              "tensorboard:runs/tensorboard")
        module, package = KINDS[kind]
        try:
            __import__(module)
        except ImportError:
            raise FogsimError(f"--track {kind}: the {package} package is not installed; pip install {package} "
                              "(or fogsim[tracking])") from None
        tracks.append(Track(kind, where.strip()))
    return tracks


def parameters(scenario: dict) -> dict[str, str]:
    """The scenario as flat ``key: text`` parameters (``fleet.0.profile: samd21``)."""
    from fogsim.sim.groups import flatten

    return {re.sub(r"\[(\d+)\]", r".\1", key): str(value)[:MAX_PARAM_CHARS] for key, value in flatten(scenario).items()}


def _name(text: str) -> str:
    """A name as trackers take it in metric names: letters, digits and ``_ - . /`` (a profile's name is free)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(text)) or "_"


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def round_metrics(row: dict, clients: list[dict]) -> dict[str, float]:
    """The figures of one round (its ``rounds.csv`` row and ``clients.csv`` rows) by metric name."""
    metrics = {f"global/{key}": row.get(column) for key, column in (
        ("accuracy", "accuracy"), ("loss", "loss"), ("density", "density"), ("global_density", "global_density"),
        ("upload_bytes", "upload_bytes"), ("download_bytes", "download_bytes"), ("sim_time_s", "sim_time_s"),
        ("wall_time_s", "wall_time_s"), ("sampled", "clients_sampled"), ("ok", "clients_ok"),
        ("failed", "clients_failed"))}
    metrics["global/wan_bytes"] = (row.get("wan_upload_bytes") or 0) + (row.get("wan_download_bytes") or 0)
    by_profile: dict[str, list[dict]] = {}
    for client in clients:
        by_profile.setdefault(str(client["profile"]), []).append(client)
    for profile, rows in by_profile.items():
        ok = [c for c in rows if not c["failed"]]
        prefix = f"profile/{_name(profile)}"
        metrics[f"{prefix}/ok"], metrics[f"{prefix}/failed"] = len(ok), len(rows) - len(ok)
        if ok:
            metrics[f"{prefix}/train_loss"] = sum(c["train_loss"] for c in ok) / len(ok)
            metrics[f"{prefix}/density"] = sum(c["density"] for c in ok) / len(ok)
            metrics[f"{prefix}/peak_memory_bytes"] = max(c["peak_memory_bytes"] for c in ok)
            metrics[f"{prefix}/batch_size_max"] = max(c["batch_size_max"] for c in ok)
            metrics[f"{prefix}/upload_bytes"] = sum(c["upload_bytes"] for c in ok)
    return {key: number for key, value in metrics.items() if (number := _finite(value)) is not None}


def final_metrics(summary: dict) -> dict[str, float]:
    metrics = {"final/accuracy": summary.get("accuracy"), "final/best_accuracy": summary.get("best_accuracy")}
    for profile, tier in (summary.get("profiles") or {}).items():
        metrics[f"final/{_name(profile)}/accuracy"] = tier.get("accuracy")
    return {key: number for key, value in metrics.items() if (number := _finite(value)) is not None}


class TensorBoard:
    def __init__(self, where: str, name: str, experiment: str, params: dict[str, str], yaml_text: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(where) / name))
        self.params = params
        self.writer.add_text("scenario", "\n".join(f"    {line}" for line in yaml_text.splitlines()))

    def round(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, step: int, metrics: dict[str, float], status: str) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        if metrics:  # the hparams view's own copy of the final figures (at step 0, under hparam/)
            self.writer.add_hparams(self.params, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")
        self.writer.close()


class MLflow:
    def __init__(self, where: str, name: str, experiment: str, params: dict[str, str], yaml_text: str):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = client = MlflowClient(tracking_uri=where)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        self.run_id = client.create_run(experiment_id, run_name=name, tags={"fogsim": "run"}).info.run_id
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            client.log_batch(self.run_id, params=items[start:start + 100])
        client.log_text(self.run_id, yaml_text, "scenario.yaml")

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step) for key, value in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def round(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def finish(self, step: int, metrics: dict[str, float], status: str) -> None:
        self._log(step, metrics)
        self.client.set_terminated(self.run_id, status=status)


class Trackers:
    """The run's trackers: started with the run, fed each round, finished with its summary. A tracker
    that fails (a server gone, a full disk) ends the run in one line, as a failed output does."""

    def __init__(self, tracks: list[Track], name: str, experiment: str, scenario: dict, yaml_text: str):
        params = parameters(scenario)
        self.live = []
        try:
            for track in tracks:
                kind = TensorBoard if track.kind == "tensorboard" else MLflow
                self.live.append((track, kind(track.where, name, experiment, params, yaml_text)))
        except Exception as error:
            raise FogsimError(f"--track {track.kind}:{shown(track.where)}: cannot start: "
                              f"{' '.join(str(error).split())[:300] or type(error).__name__}") from None
        self.step = 0

    def round(self, row: dict, clients: list[dict]) -> None:
        self.step = int(row["round"])
        metrics = round_metrics(row, clients)
        self._each(lambda tracker: tracker.round(self.step, metrics))

    def finish(self, summary: dict | None, status: str = "FINISHED") -> None:
        metrics = final_metrics(summary) if summary else {}
        self._each(lambda tracker: tracker.finish(self.step, metrics, status))

    def abandon(self, status: str) -> None:
        """End every tracker's run as ``status`` (``FAILED``, ``KILLED``) after the run failed; a tracker that
        fails then too is left alone (the run's own error is the one to report)."""
        for _, tracker in self.live:
            try:
                tracker.finish(self.step, {}, status)
            except Exception:
                pass

    def _each(self, act) -> None:
        for track, tracker in self.live:
            try:
                act(tracker)
            except Exception as error:
                raise FogsimError(f"--track {track.kind}:{shown(track.where)}: "
                                  f"{' '.join(str(error).split())[:300] or type(error).__name__}") from None
