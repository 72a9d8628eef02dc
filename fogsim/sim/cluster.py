"""Where the simulation runs: Ray started on this machine, or an existing Ray cluster.

fogsim starts (or attaches to) Ray itself, before Flower's simulation engine, so that the
fleet description can be put in Ray's object store once (``shared.SharedSpec``); the engine
then finds Ray running and uses it as it is.

``simulation.address: auto`` is resolved here, explicitly: to the cluster the ``RAY_ADDRESS``
environment variable names, or refused. Ray's own ``auto`` would attach to whatever cluster
it finds on the machine, which on a shared host may be another user's. For the same reason no
address means ``local`` to Ray: a new Ray here, never a cluster ``RAY_ADDRESS`` or the last
``ray start`` on the machine happens to name.
"""

from __future__ import annotations

import os
import socket
import sys

from fogsim import signals
from fogsim.errors import FogsimError, brief, shown
from fogsim.sim.scenario import Simulation

CONNECT_TIMEOUT_S = 10  # an address nobody answers at is refused after this, not retried for minutes by Ray
HANDSHAKE_TIMEOUT_S = 5  # what answers must greet as gRPC within this (Ray's GCS does at once)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def resolve_address(address: str | None) -> str | None:
    """The cluster address to attach to, ``None`` to start Ray here; ``auto`` means ``RAY_ADDRESS``.

    An address must be ``host:port`` or ``ray://host:port``; nothing is contacted here.
    """
    if address is None:
        return None
    if address != "auto":
        _host_port(address, f"simulation.address: {shown(address)}")
        return address
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if not named or named == "auto":
        raise FogsimError("simulation.address: auto needs the RAY_ADDRESS environment variable to name the cluster "
                          "(e.g. RAY_ADDRESS=10.0.0.5:6379); or write that address in simulation.address")
    _host_port(named, f"simulation.address: auto: RAY_ADDRESS={shown(named)}")
    return named


def _host_port(address: str, named: str) -> tuple[str, int]:
    """``address`` split into host and port; ``named`` is how a refusal names it."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if ("://" in bare or not host.strip("[]") or not host.isprintable() or " " in host or not port.isdigit()
            or not 0 < int(port) < 65536):
        raise FogsimError(f"{named} is not host:port or ray://host:port (e.g. 10.0.0.5:6379)")
    name = host.strip("[]")
    if ":" not in name and not _is_host_name(name):  # an IPv6 literal is checked by the connection
        raise FogsimError(f"{named}: the host is not a host name or address (labels of letters, digits and "
                          "hyphens, at most 63 characters each and 253 in all)")
    return name, int(port)


def _is_host_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(0 < len(label) <= 63 and label.isascii() and
                                    all(c.isalnum() or c in "-_" for c in label) for label in labels)


def _speaks_grpc(sock: socket.socket) -> bool:
    """Whether the peer answers as a gRPC server does (Ray's GCS and its client server are): an
    HTTP/2 server sends a SETTINGS frame first (RFC 9113, 3.4), here within ``HANDSHAKE_TIMEOUT_S``."""
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        sock.sendall(HTTP2_PREFACE + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # the client preface, empty SETTINGS
        header = b""
        while len(header) < 9:
            chunk = sock.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:  # a timeout (silence), or the peer closed on the preface
        return False
    return header[3] == 0x04 and int.from_bytes(header[5:9], "big") & 0x7FFFFFFF == 0


def init_args(simulation: Simulation, verbose: bool = False) -> dict:
    """``ray.init`` arguments for ``simulation`` (Flower's backend config ``init_args``)."""
    init = {"logging_level": "INFO" if verbose else "ERROR", "log_to_driver": verbose}
    address = resolve_address(simulation.address)
    if address:
        init["address"] = address
    else:
        init.update(address="local", num_cpus=simulation.num_cpus, include_dashboard=False)
    return init


def check_reachable(address: str) -> None:
    """Refuse, in one line and within ``CONNECT_TIMEOUT_S`` + ``HANDSHAKE_TIMEOUT_S``, an address where
    nothing answers, or where what answers is not Ray (``ray.init`` would wait for it forever)."""
    host, port = _host_port(address, f"simulation.address: {shown(address)}")
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise FogsimError(f"simulation.address: nothing answers at {brief(address, 80)} ({reason}); start the cluster "
                          "first (ray start --head --port=6379 on the head) or correct the address") from None
    with sock:
        if not _speaks_grpc(sock):
            raise FogsimError(f"simulation.address: something answers at {brief(address, 80)} but it is not Ray "
                              "(no gRPC handshake); give the address of the Ray head (ray start --head prints it)")


def start_ray(simulation: Simulation, verbose: bool = False) -> None:
    """Start Ray on this machine or attach to the cluster ``simulation.address`` names.

    Workers import fogsim from the same paths as this process (as Flower's own Ray start
    does); on a cluster of several machines those paths must hold the code on every node.
    """
    import ray

    init = init_args(simulation, verbose)
    here = init["address"] == "local"
    if not here:
        check_reachable(init["address"])
    pythonpath = os.pathsep.join(p for p in [*sys.path, os.environ.get("PYTHONPATH", "")] if p)
    try:
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init)
        signals.reclaim()  # Ray's core installs its own SIGTERM handler in this process
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = "this machine" if here else brief(init["address"], 80)
        raise FogsimError(f"simulation.address: cannot start or reach Ray at {where}: "
                          f"{brief(' '.join(str(error).split()), 300)}") from None


def ray_cpus() -> float:
    """CPUs of the Ray this process started or attached to (a cluster's, all its machines together)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def stop_ray() -> None:
    import ray

    ray.shutdown()
