"""The scenario file: one validated object, checked completely before any work starts.

Every key has a default and a description (``fogsim validate`` and the README's reference list
are generated from them). Problems are reported as one line naming the key path, e.g.
``fleet[2].profile: unknown profile 'esp33' (known: ...)``. Every number must be finite and
every count lies under a bound (the ``MAX_`` constants), checked before the fleet, the data
split or anything else sized by them exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from fogsim.core.config import (MAX_BATCH, MAX_COMPRESSION, MAX_EPOCHS, MAX_LR, MAX_SEED, NumbersAreNotBooleans,
                                TrainingSettings, lower_advice,
                                PruningSettings, TrainConfig)
from fogsim.catalog import DATASETS, MODELS
from fogsim.errors import (MAX_NAME_CHARS, FogsimError, brief, check_name, describe, did_you_mean, key_path, shown,
                           shown_path)
from fogsim.sim.safe_yaml import Refused, parse_yaml, read_yaml, yaml_problem
from fogsim.units import size_field

_TRAINING = TrainingSettings.model_fields

# Counts are bounded here, before the fleet, the split or any per-device array exists.
MAX_DEVICES = 10_000_000     # devices in the whole fleet; a device costs nothing until it is sampled
MAX_FLEET_ENTRIES = 1_000    # entries of ``fleet``; each distinct one is planned (milliseconds each)
MAX_ROUNDS = 100_000
MAX_ROUND_EPOCHS = 1_000     # local epochs per round; times the rounds, at most MAX_EPOCHS
MAX_SAMPLES = 100_000_000    # samples per device, smallest partition, test samples
MAX_CPUS = 65_536
MAX_NODES = 100_000          # Flower nodes (workers)
MAX_PROFILE_FILES = 20       # each is read and parsed in full
MAX_FOG_NODES = 1_000        # fog nodes; each is evaluated on the test set every round


class _Section(NumbersAreNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _one_of(name: str, known: tuple[str, ...], what: str) -> str:
    if name not in known:
        raise ValueError(f"unknown {what} {shown(name)} (known: {', '.join(known)}){did_you_mean(name, known)}")
    return name


USER_DATA = ("npz", "folder", "huggingface", "loader")  # data.name of the user's own data (fogsim.data_files)
ID_DATA = ("npz", "huggingface", "loader")  # the forms that can hold an id column (natural partitions)


def _path(text: str | None) -> str | None:
    if text is not None and "\0" in text:
        raise ValueError("a path cannot contain a NUL character")
    return text


class Partition(_Section):
    """How the training set is split across the fleet (Flower Datasets' partitioners), or drawn per device."""

    kind: Literal["iid", "dirichlet", "shards", "natural"] = Field(
        "iid", description="iid: equal random shares; dirichlet: label shares drawn from Dir(alpha) per class; "
        "shards: each device gets a few label-sorted shards; natural: each device is one value of the id column "
        "data.partition.by (a writer, a user, a sensor) and gets that id's samples (Flower Datasets' "
        "NaturalIdPartitioner); with fewer devices than ids, a seeded choice of ids is used and the rest left out; "
        "more devices than ids is refused")
    by: str | None = Field(None, validate_default=True, description="the id column of a natural partition (natural only): npz: the array "
                           "train_<by>; loader: the key train_<by> of its dict; huggingface: the column <by> of the "
                           "train split; integers or strings, one per training sample")
    alpha: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration (dirichlet only): small is more "
                         "skewed; with per_device, of each device's own class proportions")
    shards_per_device: int = Field(2, ge=1, le=MAX_SAMPLES, description="label-sorted shards per device "
                                   "(shards only)")
    min_size: int = Field(10, ge=0, le=MAX_SAMPLES, description="smallest partition the Dirichlet split accepts "
                          "(dirichlet only; per_device ignores it)")
    per_device: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="instead of splitting the set, every device draws this many "
        "distinct samples of its own, seeded by (seed, device id), so devices may share samples and the fleet may "
        "outnumber the set; iid: a uniform draw; dirichlet: class proportions from Dir(alpha), class counts from a "
        "multinomial (a class's shortfall redrawn over the classes with samples left), then a uniform draw within "
        "each class; not with shards (default: split)")

    @field_validator("per_device")
    @classmethod
    def _drawable(cls, per_device: int | None, info: ValidationInfo) -> int | None:
        if per_device is not None and info.data.get("kind") in ("shards", "natural"):
            raise ValueError(f"{info.data['kind']} split the set and cannot be drawn per device; use kind iid or "
                             "dirichlet, or remove per_device")
        return per_device

    @field_validator("by")
    @classmethod
    def _column(cls, by: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if by is None:
            if kind == "natural":
                raise ValueError("kind natural splits by an id column: give by: COLUMN (e.g. by: writer)")
            return None
        if kind is not None and kind != "natural":
            raise ValueError(f"only kind natural splits by a column, but kind is {kind}; remove by or set "
                             "kind: natural")
        if not by or "\0" in by or len(by) > 200:
            raise ValueError(f"{shown(by)} is not a column name")
        return by


class Data(_Section):
    """The dataset and its split: a built-in dataset, the user's files (npz, folder, huggingface) or a loader."""

    name: str = Field("digits", description=f"one of {', '.join(DATASETS)} (built in); npz: an .npz file at "
                      "data.path; folder: image folders at data.path; huggingface: a dataset saved with "
                      "save_to_disk at data.path, or the hub dataset data.hub; loader: the data.loader function's "
                      "arrays (the default when data.loader is given)")
    loader: str | None = Field(
        None, validate_default=True, description="a function returning the data, file.py:function (the file "
        "relative to the scenario file, copied into the run directory) or package.module:function (importable); "
        "it is called with seed=... and returns (train_x, train_y, test_x, test_y) numpy arrays, or a dict with "
        "those keys, as an npz file holds them")
    path: str | None = Field(
        None, validate_default=True, description="the user's data, relative to the scenario file. npz: a file "
        "holding the arrays train_x (N x F features, N x H x W or N x C x H x W images, numbers), train_y "
        "(integer labels 0 to K-1), test_x, test_y; folder: a directory of train/<class>/*.png|jpg and "
        "test/<class>/*.png|jpg, class folders sorted by name giving the labels; huggingface: the folder "
        "Dataset.save_to_disk or DatasetDict.save_to_disk wrote (train and test splits, or one dataset split "
        "80/20 by seed), read offline")
    hub: str | None = Field(None, description="huggingface only: a Hugging Face Hub dataset id (e.g. "
                            "ylecun/mnist), downloaded by the datasets library, instead of data.path")
    features: str | list[str] | None = Field(
        None, description="huggingface only: the feature column (images become arrays as the folder form's; "
        "numbers or lists of numbers stack into N x F, N x H x W or N x C x H x W), or a list of numeric columns "
        "stacked into N x F (default: image, else img, else the only array column besides the label)")
    label: str | None = Field(None, description="huggingface only: the label column, integers 0 to K-1 (default: "
                              "label)")
    root: str | None = Field(None, description="directory of the dataset's files or a torchvision root "
                             "(built-in datasets; default: Debian's package for fashion-mnist, "
                             "~/.cache/fogsim/data otherwise)")
    download: bool = Field(False, description="let torchvision download the dataset into root")
    partition: Partition = Field(default_factory=Partition, description="how the training set is split")

    @model_validator(mode="before")
    @classmethod
    def _loader_names_itself(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("loader") is not None and "name" not in data:
            data = {**data, "name": "loader"}
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return _one_of(name, DATASETS + USER_DATA, "dataset")

    @field_validator("loader")
    @classmethod
    def _loader(cls, loader: str | None, info: ValidationInfo) -> str | None:
        from fogsim.data_files import loader_parts

        name = info.data.get("name")
        if loader is None:
            if name == "loader":
                raise ValueError("name loader needs the function: give loader: file.py:function or "
                                 "package.module:function")
            return None
        _path(loader)
        if name is not None and name != "loader":
            raise ValueError(f"a loader gives the data, but name is {shown(name)}; remove data.name or data.loader")
        loader_parts(loader)
        return loader

    @field_validator("path")
    @classmethod
    def _data_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if path is None:
            if name in ("npz", "folder"):
                what = "an .npz file" if name == "npz" else "a folder holding train/ and test/"
                raise ValueError(f"name {name} reads {what}: give its path (relative to the scenario file)")
            return None
        if name is not None and name not in ("npz", "folder", "huggingface"):
            raise ValueError(f"only name npz, folder or huggingface reads a path, but name is {shown(name)}; "
                             "remove data.path or set data.name")
        if not path:
            raise ValueError("an empty path; give the file or folder")
        return _path(path)

    @field_validator("hub")
    @classmethod
    def _hub(cls, hub: str | None, info: ValidationInfo) -> str | None:
        if hub is None:
            return None
        if info.data.get("name") != "huggingface":
            raise ValueError(f"only name huggingface reads a hub dataset, but name is {shown(info.data.get('name'))}; "
                             "remove data.hub or set data.name: huggingface")
        if info.data.get("path") is not None:
            raise ValueError("give data.path (a saved dataset) or data.hub (a hub id), not both")
        if not hub or "\0" in hub or len(hub) > 200 or hub != hub.strip():
            raise ValueError(f"{shown(hub)} is not a hub dataset id (e.g. ylecun/mnist)")
        return hub

    @field_validator("features", "label")
    @classmethod
    def _columns(cls, value, info: ValidationInfo):
        if value is None:
            return None
        if info.data.get("name") != "huggingface":
            raise ValueError(f"only name huggingface has columns to choose; remove data.{info.field_name}")
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("an empty list; name at least one column")
        for name in names:
            if not name or "\0" in name or len(name) > 200:
                raise ValueError(f"{shown(name)} is not a column name")
        return value

    @model_validator(mode="after")
    def _forms(self) -> "Data":
        if self.name == "huggingface" and self.path is None and self.hub is None:
            raise ValueError("name huggingface reads a dataset saved with save_to_disk: give its folder as "
                             "data.path (relative to the scenario file), or a hub id as data.hub")
        if self.partition.kind == "natural" and self.name not in ID_DATA:
            raise ValueError(f"partition kind natural splits by an id column, which {self.name} has none of; "
                             "ids come with name npz (an array train_<by>), a loader (a key train_<by>) or "
                             "name huggingface (a column); use kind iid, dirichlet or shards")
        return self

    @field_validator("root")
    @classmethod
    def _root(cls, root: str | None, info: ValidationInfo) -> str | None:
        if root is not None and info.data.get("name") in USER_DATA:
            raise ValueError(f"only the built-in datasets read root; with name {info.data['name']}, remove "
                             "data.root")
        return _path(root)

    @field_validator("download")
    @classmethod
    def _download(cls, download: bool, info: ValidationInfo) -> bool:
        if download and info.data.get("name") in USER_DATA:
            raise ValueError(f"only the built-in datasets are downloaded; with name {info.data['name']}, remove "
                             "data.download")
        return download


class ModelSpec(_Section):
    """The user's model: a builder function and the keyword arguments it is called with."""

    builder: str = Field(description="file.py:function (the file relative to the scenario file) or "
                         "package.module:function")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder, besides "
                                 "input_shape and num_classes")

    @field_validator("builder")
    @classmethod
    def _builder(cls, builder: str) -> str:
        return _builder_form(builder)

    @field_validator("args")
    @classmethod
    def _args(cls, args: dict[str, Any]) -> dict[str, Any]:
        for key in args:
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"{shown(key)} is not a keyword argument name")
            if key in ("input_shape", "num_classes"):
                raise ValueError(f"fogsim passes {key} itself (from the data); remove it from model.args")
        return args

    def __str__(self) -> str:
        return self.builder


def _model_form(value: Any) -> str:
    """Which form a scenario's model takes: a name (a built-in, or a builder as file.py:function) or a mapping."""
    return "form-mapping" if isinstance(value, (dict, ModelSpec)) else "form-name"


def _builder_form(builder: str) -> str:
    from fogsim.data_files import loader_parts

    _path(builder)
    loader_parts(builder, "model builder")
    return builder


class Training(TrainingSettings):
    """Local training of every device in each round it takes part in (``core.config.TrainingSettings``).

    Only ``epochs`` (per round, not in all) and the batch defaults differ from ``fogsim train``'s:
    a federated device holds a small partition, so its base batch and its largest batch are smaller.
    """

    epochs: float = Field(1.0, gt=0, le=MAX_ROUND_EPOCHS, description="local passes over the device's partition "
                          "per round")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description=_TRAINING["batch_size"].description)
    batch_max: int = Field(256, ge=1, le=MAX_BATCH, description=_TRAINING["batch_max"].description)


class Pruning(PruningSettings):
    """DynHP (or a competitor) on every device (``core.config.PruningSettings``).

    A federated run counts the pruning window in rounds, prunes once per round by default, and
    may let each device's budget choose its target (``compression: auto``).
    """

    compression: float | Literal["auto"] = Field(
        10.0, description="target compression 1/d* over all prunable tensors, >= 1; or auto: the densest "
        "model each device's budget allows at the minimum batch")
    prune_start: float = Field(0.0, ge=0, le=1, description="start of the pruning window, fraction of the rounds")
    prune_end: float = Field(0.6, ge=0, le=1, description="end of the pruning window (target reached), "
                             "fraction of the rounds")
    prune_every: float | None = Field(
        None, gt=0, le=MAX_EPOCHS, description="epochs of local progress between pruning steps; default: "
        "training.epochs, i.e. once per round, at its start, on the global weights the device received (under its "
        "own mask). Pruning on those shared weights keeps the masks of devices with equal targets equal; pruning in "
        "the middle of local training lets masks drift apart on non-IID data")

    @field_validator("compression", mode="before")
    @classmethod
    def _at_least_one(cls, value):
        return _compression(value)


def _compression(value):
    """A target compression: a finite number from 1 to MAX_COMPRESSION, or ``auto``."""
    if value == "auto" or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise ValueError(f"must be a number >= 1 or auto, got {shown(value)}")
    if not value <= MAX_COMPRESSION:  # also infinity and NaN
        raise ValueError(f"must be a finite number at most {MAX_COMPRESSION:g} or auto, got {shown(value)}")
    return float(value)


class Strategy(_Section):
    """The server's aggregation, its optimizer and what devices download."""

    name: Literal["masked-fedavg", "masked-fedavgm", "masked-fedadam", "fedavg", "fedavgm", "fedadam"] = Field(
        "masked-fedavg", description="masked-fedavg: pruned-mask-aware averaging by strategy.rule; masked-fedavgm / "
        "masked-fedadam: Flower's FedAvgM / FedAdam stepping on the pseudo-gradient of strategy.rule; fedavg, "
        "fedavgm, fedadam: Flower's own strategies, which average pruned zeros in")
    # delta is the default because it measured best of the three (benchmarks/aggregation.py, README).
    rule: Literal["keepers", "delta", "consensus"] = Field(
        "delta", description="mask-aware rule of the masked-* strategies: delta: the previous global value plus the "
        "example-weighted mean update over all clients, a client that pruned the entry adding a zero update; "
        "keepers: each entry averaged over the clients that kept it (the pruned-mask-aware averaging of the DynHP "
        "brief, the default before delta measured better); consensus: keepers' average where clients holding at "
        "least strategy.quorum of the examples kept the entry, 0 elsewhere")
    quorum: float = Field(0.5, gt=0, le=1, description="share of the round's examples (or clients, with uniform "
                          "weighting) that must have kept an entry for consensus to keep it (rule consensus only)")
    weighting: Literal["examples", "uniform"] = Field(
        "examples", description="weight of a client in the average: its number of training examples (n_k, as "
        "in the brief), or 1 for every client")
    download: Literal["sparse", "dense"] = Field(
        "sparse", description="what a device receives each round: sparse: the global model restricted to the "
        "device's last known mask, encoded like the uploads (a device that has no mask yet gets it dense); dense: "
        "the whole global model")
    server_lr: float | None = Field(
        None, gt=0, le=MAX_LR, description="server learning rate of *fedavgm (default 1.0) and *fedadam "
        "(eta, default 0.1), Flower's defaults")
    server_momentum: float = Field(0.9, ge=0, lt=1, description="server momentum of *fedavgm")
    beta_1: float = Field(0.9, ge=0, lt=1, description="first-moment decay of *fedadam")
    beta_2: float = Field(0.99, ge=0, lt=1, description="second-moment decay of *fedadam")
    tau: float = Field(1e-3, gt=0, le=1, description="adaptivity floor of *fedadam (added to the root of the "
                       "second moment)")


class FleetEntry(_Section):
    """``count`` devices of one profile, with some of its figures changed."""

    profile: str = Field(max_length=MAX_NAME_CHARS, description="name of a built-in profile or one from the "
                         "scenario's profile files")
    count: int = Field(1, gt=0, le=MAX_DEVICES, description="how many devices of this kind")
    overrides: dict[str, Any] = Field(default_factory=dict, description="profile fields to change for "
                                      "these devices, e.g. {memory_budget: 64KiB}")
    compression: float | Literal["auto"] | None = Field(
        None, description="target compression of these devices (a number >= 1 or auto); default: "
        "pruning.compression. Tiers with different targets keep nested masks, which is where mask-aware "
        "averaging differs from FedAvg")

    fog: str | None = Field(
        None, min_length=1, max_length=MAX_NAME_CHARS, description="name of the fog node (fog.nodes[j].name) "
        "these devices reach the cloud through (fog scenarios only; default: placed by fog.assign)")

    @field_validator("compression", mode="before")
    @classmethod
    def _at_least_one(cls, value):
        return _compression(value)

    @field_validator("profile", "fog")
    @classmethod
    def _names(cls, name: str | None) -> str | None:
        return check_name(name)


class FogNode(_Section):
    """One fog node: a gateway or base station between its devices and the cloud."""

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="the node's name, which fleet "
                      "entries name under fog")
    profile: str = Field("lte-gateway", max_length=MAX_NAME_CHARS, description="name of a fog-node profile "
                         "(fogsim/profiles/fog/): its compute, its wide-area uplink/downlink to the cloud and the "
                         "local links its devices use")
    overrides: dict[str, Any] = Field(default_factory=dict, description="profile fields to change for this node, "
                                      "e.g. {uplink: 2.0e+6}")

    @field_validator("name", "profile")
    @classmethod
    def _names(cls, name: str) -> str:
        return check_name(name)


class Fog(_Section):
    """Hierarchical aggregation: devices aggregate at fog nodes every round, fog nodes at the cloud every
    cloud_every rounds (HierFAVG, Liu et al. 2020). Absent: every device talks to the server directly."""

    cloud_every: int = Field(1, ge=1, le=MAX_ROUNDS, description="rounds between two aggregations at the cloud; "
                             "the last round always ends with one")
    sync_while_pruning: bool = Field(
        False, description="also aggregate at the cloud every round until the pruning window ends (rounds up to "
        "pruning.prune_end x rounds), so every region's devices prune the same shared weights and their masks stay "
        "aligned; then every cloud_every rounds")
    assign: Literal["round-robin", "by-profile"] = Field(
        "round-robin", description="where devices of fleet entries without fog go: round-robin: the k-th such "
        "device to node k mod (number of nodes); by-profile: the j-th distinct profile among those entries to "
        "node j mod (number of nodes), so one node serves one kind of device")
    nodes: list[FogNode] = Field(min_length=1, max_length=MAX_FOG_NODES, description="the fog nodes: a list of "
                                 "{name, profile, overrides}")
    evaluate: bool = Field(True, description="evaluate each fog node's own aggregate on the test set every round "
                           "(fog_nodes.csv accuracy and loss; one test pass per fog node with clients, turn off "
                           "for many fog nodes)")


class Simulation(_Section):
    """Where the fleet runs: Flower's simulation engine on Ray, or this one process."""

    engine: Literal["ray", "local"] = Field(
        "ray", description="ray: Flower's simulation engine on Ray, workers side by side on this machine's CPUs or a "
        "cluster; local: the whole run in this one process, one worker, no Ray start (fast for small runs; the "
        "same result files)")

    num_cpus: int = Field(2, ge=1, le=MAX_CPUS, description="CPUs Ray may use on this machine (ignored with address "
                          "and by the local engine)")
    client_cpus: float = Field(1.0, gt=0, le=MAX_CPUS, description="CPUs reserved by each running client")
    address: str | None = Field(
        None, description="an existing Ray cluster to run on: its address (host:port or ray://host:port), or auto "
        "for the one the RAY_ADDRESS environment variable names (default: start Ray on this machine)")
    nodes: int | None = Field(
        None, ge=1, le=MAX_NODES, description="Flower nodes (workers) that simulate the devices, each a cohort "
        "of them per round; any node simulates any device, so this is concurrency, not fleet size, and results do "
        "not depend on it (default: one per client_cpus of the CPUs Ray has, and one per 64 devices a round "
        "samples beyond that; 1 with the local engine)")
    state_memory: Annotated[int, size_field("state memory")] = Field(
        1024**3, description="bytes of memory for the devices' masks kept between rounds, e.g. 512MiB (each "
        "distinct mask is kept once); masks beyond it are written to a temporary directory")


class Evaluation(_Section):
    """Evaluation of the global model on the central test set, every round."""

    test_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="evaluate on the first N test samples "
                                     "only (default: all)")
    device_masks: bool = Field(True, description="also evaluate the global model under the mask of each device "
                               "of the round (device_accuracy; one test pass per client, turn off for big fleets)")


class Scenario(_Section):
    """A federated fog scenario."""

    name: str = Field("scenario", min_length=1, max_length=MAX_NAME_CHARS,
                      description="name of the run; the default run directory starts with it")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the model, the split, sampling, availability "
                      "and failures (0 to 2**32 - 1)")
    data: Data = Field(default_factory=Data, description="dataset and partition")
    model: Annotated[Union[Annotated[str, Tag("form-name")], Annotated[ModelSpec, Tag("form-mapping")]],
                     Discriminator(_model_form)] = Field(
        "mlp-small", description=f"one of {', '.join(MODELS)} (built in); or the user's own network: "
        "file.py:build (the file relative to the scenario file, copied into the run directory) or "
        "package.module:build (importable), called as build(input_shape=..., num_classes=...) with PyTorch seeded "
        "by seed, returning a torch.nn.Module; or {builder: file.py:build, args: {...}} to pass keyword arguments "
        "too. Any module trains with unstructured pruning (its activation memory measured with autograd's "
        "saved-tensor hooks); structured pruning needs a flat nn.Sequential")
    rounds: int = Field(5, gt=0, le=MAX_ROUNDS, description="federated rounds")
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of the available devices sampled each round")
    training: Training = Field(default_factory=Training, description="local training")
    pruning: Pruning = Field(default_factory=Pruning, description="pruning on every device")
    strategy: Strategy = Field(default_factory=Strategy, description="server aggregation")
    fleet: list[FleetEntry] = Field(min_length=1, max_length=MAX_FLEET_ENTRIES,
                                    description="the devices: a list of {profile, count, overrides}")
    profiles: list[str] = Field(default_factory=list, max_length=MAX_PROFILE_FILES, description="extra profile "
                                "files, relative to the scenario file")
    simulation: Simulation = Field(default_factory=Simulation, description="Ray settings")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="central evaluation")
    fog: Fog | None = Field(None, description="fog nodes between the devices and the cloud, and how often the "
                            "cloud aggregates (default: none, devices talk to the server directly)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str | ModelSpec) -> str | ModelSpec:
        if not isinstance(name, str):
            return name
        if ":" in name:
            return _builder_form(name)
        if name not in MODELS:
            raise ValueError(f"unknown model {shown(name)} (known: {', '.join(MODELS)}; or your own, as "
                             f"file.py:function or package.module:function){did_you_mean(name, MODELS)}")
        return name

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name)

    @field_validator("profiles")
    @classmethod
    def _profile_paths(cls, paths: list[str]) -> list[str]:
        return [_path(p) for p in paths]

    @model_validator(mode="after")
    def _consistent(self) -> "Scenario":
        t, p = self.training, self.pruning
        devices = sum(entry.count for entry in self.fleet)
        if devices > MAX_DEVICES:
            raise ValueError(f"fleet: {devices} devices in all, at most {MAX_DEVICES} are allowed; lower the counts")
        if t.epochs * self.rounds > MAX_EPOCHS:
            raise ValueError(f"training.epochs x rounds = {t.epochs * self.rounds:g} passes over each device's data, "
                             f"at most {MAX_EPOCHS} are allowed; lower one of them")
        if p.prune_end < p.prune_start:
            raise ValueError(f"pruning.prune_end ({p.prune_end:g}) must not be before pruning.prune_start "
                             f"({p.prune_start:g})")
        _check_topology(self)
        low = t.batch_min if t.batch_min is not None else t.batch_size
        if t.batch_max < low:
            raise ValueError(f"training.batch_max ({t.batch_max}) must be at least the minimum batch ({low})")
        if self.simulation.engine == "local" and self.simulation.address is not None:
            raise ValueError("simulation.address names a Ray cluster, but simulation.engine is local (this one "
                             "process); set simulation.engine: ray to run on the cluster")
        return self

    def divergence_advice(self) -> str:
        """What to change when training diverged, with the values this scenario used."""
        settings = [("training.lr", f"{self.training.lr:g}")]
        if self.training.weight_decay > 0:
            settings.append(("training.weight_decay", f"{self.training.weight_decay:g}"))
        if self.strategy.name.endswith(("fedavgm", "fedadam")):  # a server optimizer takes its own steps
            now = "Flower's default" if self.strategy.server_lr is None else f"{self.strategy.server_lr:g}"
            settings.insert(0, ("strategy.server_lr", now))
        return lower_advice(settings, "training.on_divergence")

    def train_config(self, compression: float) -> TrainConfig:
        """The core's config for one device; the pruning window is laid out over all rounds."""
        t, p = self.training, self.pruning
        return TrainConfig(
            method=p.method, compression=compression, epochs=t.epochs * self.rounds, batch_size=t.batch_size,
            batch_min=t.batch_min, batch_max=t.batch_max, lr=t.lr, lr_rule=t.lr_rule, optimizer=t.optimizer,
            weight_decay=t.weight_decay, on_divergence=t.on_divergence, schedule=p.schedule,
            prune_start=p.prune_start, prune_end=p.prune_end,
            prune_every=p.prune_every if p.prune_every is not None else t.epochs, criterion=p.criterion, scope=p.scope, granularity=p.granularity,
            seed=self.seed)


def _check_topology(scenario: Scenario) -> None:
    """Every fleet entry names a fog node that exists, and every fog node gets at least one device."""
    named = [(i, e.fog) for i, e in enumerate(scenario.fleet) if e.fog is not None]
    if scenario.fog is None:
        if named:
            raise ValueError(f"fleet[{named[0][0]}].fog: names fog node {shown(named[0][1])} but the scenario has "
                             "no fog section; add fog: {nodes: [{name: ...}]} or remove fleet[i].fog")
        return
    nodes = [node.name for node in scenario.fog.nodes]
    for j, name in enumerate(nodes):
        if name in nodes[:j]:
            raise ValueError(f"fog.nodes[{j}].name: {shown(name)} names two fog nodes; give each its own name")
    for index, name in named:
        if name not in nodes:
            raise ValueError(f"fleet[{index}].fog: unknown fog node {shown(name)} (fog.nodes: "
                             f"{', '.join(brief(n) for n in nodes[:20])})")
    empty = [j for j, count in enumerate(fog_device_counts(scenario)) if count == 0]
    if empty:
        j = empty[0]
        raise ValueError(f"fog.nodes[{j}] ({brief(nodes[j])}): no device belongs to it; name it under "
                         "fleet[i].fog, add devices, or remove the node")


def fog_placement(scenario: Scenario) -> list[tuple[int | None, int]]:
    """Where each fleet entry's devices go: ``(node, 0)`` when all go to fog node ``node`` (named
    under ``fleet[i].fog``, or by ``fog.assign: by-profile``), ``(None, offset)`` when they are
    spread round-robin, the entry's first device being the ``offset``-th device so spread."""
    fog = scenario.fog
    index = {node.name: j for j, node in enumerate(fog.nodes)}
    spread = 0  # devices placed round-robin so far
    profiles: dict[str, int] = {}
    placement: list[tuple[int | None, int]] = []
    for entry in scenario.fleet:
        if entry.fog is not None:
            placement.append((index[entry.fog], 0))
        elif fog.assign == "by-profile":
            placement.append((profiles.setdefault(entry.profile, len(profiles)) % len(fog.nodes), 0))
        else:
            placement.append((None, spread))
            spread += entry.count
    return placement


def fog_device_counts(scenario: Scenario) -> list[int]:
    """How many devices each fog node serves (``fog_placement``)."""
    n = len(scenario.fog.nodes)
    counts = [0] * n
    for entry, (node, offset) in zip(scenario.fleet, fog_placement(scenario)):
        if node is not None:
            counts[node] += entry.count
            continue
        full, rest = divmod(entry.count, n)
        for k in range(n):
            counts[k] += full + (1 if (k - offset) % n < rest else 0)
    return counts


_KEY_PATH = re.compile(r"[^.\[\]\s]+(?:\.[^.\[\]\s]+|\[\d{1,9}\])*")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_set(data: dict, assignment: str) -> None:
    """Apply one ``--set key.path=value`` (value in YAML, e.g. ``fleet[0].count=3``) to raw data."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not _KEY_PATH.fullmatch(key):
        raise FogsimError(f"--set {shown(assignment)}: write key.path=value, e.g. rounds=3 or fleet[0].count=2")
    steps = [name if name else int(index) for name, index in _STEP.findall(key)]
    try:
        value = parse_yaml(text)
    except Refused as error:
        raise FogsimError(f"--set {brief(key)}: in the value, {yaml_problem(error)}") from None
    except yaml.YAMLError:
        value = text
    node = data
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        where = key_path(tuple(steps[:i + 1]))
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise FogsimError(f"--set {brief(key)}: {where} does not exist")
        elif not isinstance(node, dict):
            raise FogsimError(f"--set {brief(key)}: {where} is not inside a mapping")
        if last:
            node[step] = value
        else:
            if isinstance(node, dict) and node.get(step) is None:
                node[step] = {}
            node = node[step]


def _unshared(data: Any) -> Any:
    """A copy in which every alias is written out, so that ``--set`` changes one place only.

    ``read_yaml`` has bounded the values and the depth an alias may expand to.
    """
    if isinstance(data, dict):
        return {key: _unshared(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_unshared(value) for value in data]
    return data


def parse_scenario(data: Any, source: str = "scenario", sets: list[str] = ()) -> Scenario:
    """Validate raw scenario data (after the ``--set`` assignments)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FogsimError(f"{shown_path(source)}: a scenario is a mapping of keys, got {type(data).__name__}")
    data = _unshared(data)
    for assignment in sets:
        apply_set(data, assignment)
    strange = [key for key in data if not isinstance(key, str)]
    if strange:
        raise FogsimError(f"{shown_path(source)}: key {shown(strange[0])} is not a name; scenario keys are words "
                          "such as rounds")
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        from fogsim.sim.profiles import Profile  # the keys fleet[i].overrides takes

        problem = describe(error, model=Scenario, nested={"overrides": Profile.model_fields})
        raise FogsimError(f"{shown_path(source)}: {problem}") from None


def load_scenario(path: str | Path, sets: list[str] = ()) -> Scenario:
    """Read and validate a scenario file."""
    return parse_scenario(read_yaml(Path(path), "scenario"), str(path), sets)


def reference(model: type[BaseModel] = Scenario, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key path, default, description)`` of every scenario key, sections expanded in place."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append((path, "", field.description or ""))
            rows += reference(annotation, f"{path}.")
            continue
        if name == "fleet":
            rows.append((path, "required", field.description or ""))
            rows += reference(FleetEntry, "fleet[i].")
            continue
        if model is Scenario and name == "fog":
            rows.append((path, "null", field.description or ""))
            rows += reference(Fog, "fog.")
            continue
        if model is Fog and name == "nodes":
            rows.append((path, "required", field.description or ""))
            rows += reference(FogNode, f"{prefix}nodes[j].")
            continue
        default = "required" if field.is_required() else json.dumps(field.get_default(call_default_factory=True))
        rows.append((path, default, field.description or ""))
    return rows


def resolved_yaml(scenario: Scenario) -> str:
    """The scenario with every default filled in, as YAML.

    A scenario without fog nodes has no ``fog`` keys here, and one on the default engine (Ray) no
    ``simulation.engine``, so its resolved form (and the identity of its checkpoints) is what it
    was before fog nodes and engines existed."""
    data = scenario.model_dump(mode="json")
    if data["simulation"]["engine"] == "ray":
        del data["simulation"]["engine"]
    if data["fog"] is None:
        del data["fog"]
    for key in ("loader", "path", "hub", "features", "label"):  # built-in datasets resolve as before these keys
        if data["data"][key] is None:
            del data["data"][key]
    if data["data"]["partition"]["by"] is None:
        del data["data"]["partition"]["by"]
    for entry in data["fleet"]:
        if entry["fog"] is None:
            del entry["fog"]
    return yaml.safe_dump(data, sort_keys=False)
