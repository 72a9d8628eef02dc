"""Where the simulation runs: ``simulation.address`` resolved, and a real two-node Ray cluster on this machine.

The cluster tests start their own Ray head and a second Ray node with ``ray start``, in their own
temporary directory and on ports picked free, and stop exactly the processes that cluster runs
(found by a marker in their environment), never ``ray stop``, which would stop every Ray of the
machine's user, other people's runs included.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fogsim.cli import main
from fogsim.errors import FogsimError
from fogsim.sim.cluster import check_reachable, init_args, resolve_address, start_ray, stop_ray
from fogsim.sim.reports import WALL_COLUMNS
from fogsim.sim.run import prepare, run
from fogsim.sim.scenario import Simulation

QUICKSTART = "scenarios/quickstart.yaml"
SHORT = ["rounds=2", "simulation.engine=ray"]  # the quick start runs locally; these runs are about Ray
MARKER = "FOGSIM_TEST_RAY_CLUSTER"
START_TIMEOUT_S = 180  # one `ray start` on a loaded 2-core machine; a cluster that does not come up fails here
RUN_TIMEOUT_S = 300  # one two-round run on the cluster; a hung attach fails here instead of hanging the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- resolving simulation.address -------------------------------------------------------------


def test_no_address_starts_ray_here_with_num_cpus(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # must not be attached to: no address means here
    init = init_args(Simulation(num_cpus=3))
    assert init["address"] == "local" and init["num_cpus"] == 3
    assert resolve_address(None) is None


@pytest.mark.parametrize("address", ["10.0.0.5:6379", "head.example.org:6379", "ray://10.0.0.5:10001",
                                     "[::1]:6379"])
def test_an_address_is_passed_through_without_num_cpus(monkeypatch, address):
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:1")
    init = init_args(Simulation(address=address, num_cpus=3))
    assert init["address"] == address and "num_cpus" not in init
    assert resolve_address(address) == address


def test_auto_is_the_cluster_ray_address_names(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", " 10.0.0.5:6379 ")
    assert resolve_address("auto") == "10.0.0.5:6379"
    assert init_args(Simulation(address="auto"))["address"] == "10.0.0.5:6379"


@pytest.mark.parametrize("value", [None, "", "auto"])
def test_auto_without_ray_address_is_refused(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", value)
    with pytest.raises(FogsimError) as refused:
        resolve_address("auto")
    message = str(refused.value)
    assert "RAY_ADDRESS" in message and "simulation.address" in message and "\n" not in message


@pytest.mark.parametrize("address", ["head", "head:port", "10.0.0.5:70000", "http://10.0.0.5:8265",
                                     "head\n:6379", "he ad:6379"])
def test_a_malformed_address_is_refused(address):
    with pytest.raises(FogsimError, match="simulation.address: .* is not host:port or ray://host:port"):
        resolve_address(address)


def test_a_refusal_quotes_a_long_address_cut_short():
    with pytest.raises(FogsimError) as refused:
        resolve_address("h" * 5000)
    assert len(str(refused.value)) < 200


def test_a_job_server_address_in_ray_address_is_refused_for_auto(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")  # the address `ray job submit` uses, not ray.init
    with pytest.raises(FogsimError, match="auto: RAY_ADDRESS='http://10.0.0.5:8265' is not host:port"):
        resolve_address("auto")


def test_an_address_where_nothing_answers_is_refused_at_once():
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(FogsimError, match=f"nothing answers at {nobody}"):
        check_reachable(nobody)
    with pytest.raises(FogsimError, match=f"nothing answers at ray://{nobody}"):
        start_ray(Simulation(address=f"ray://{nobody}"))
    assert time.monotonic() - started < 5


@contextmanager
def listening(reply: bytes | None):
    """A TCP server on a free port that accepts and then stays silent (``reply`` None) or answers
    ``reply`` and closes: something that answers, but not Ray."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if reply is not None:
                conn.sendall(reply)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x00" * 9],
                         ids=["silent", "http1", "zeros"])
def test_an_address_where_something_else_answers_is_refused_within_seconds(reply):
    """ray.init would wait there forever; a gRPC server (Ray's GCS) greets with HTTP/2 SETTINGS."""
    from fogsim.sim.cluster import HANDSHAKE_TIMEOUT_S

    with listening(reply) as address:
        started = time.monotonic()
        with pytest.raises(FogsimError, match=f"something answers at {address} but it is not Ray") as refused:
            check_reachable(address)
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT_S + 2 and "\n" not in str(refused.value)


def test_a_grpc_server_passes_the_handshake():
    import concurrent.futures

    import grpc

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    finally:
        server.stop(None)


@pytest.mark.parametrize("host", ["h" * 300, "a." * 130 + "b", "x" * 64 + ".example.org", "bad!host", "é.org"])
def test_a_host_that_cannot_be_a_host_name_is_refused_before_anything_is_contacted(host):
    with pytest.raises(FogsimError, match="the host is not a host name or address") as refused:
        resolve_address(f"{host}:6379")
    assert len(str(refused.value)) < 300


def scenario_file(tmp_path, address):
    data = yaml.safe_load(Path(QUICKSTART).read_text())
    data["simulation"] = {"address": address}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", ["run", "validate"])
def test_commands_refuse_auto_without_ray_address(tmp_path, capsys, monkeypatch, command):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "runs" / "x"
    extra = ["--out", str(out), "--quiet"] if command == "run" else []
    assert main([command, str(scenario_file(tmp_path, "auto")), *extra]) == 2
    err = capsys.readouterr().err
    assert "simulation.address: auto needs the RAY_ADDRESS environment variable" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_run_refuses_an_address_where_nothing_answers(tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    address = f"127.0.0.1:{free_port()}"
    assert main(["run", str(scenario_file(tmp_path, address)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"nothing answers at {address}" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


# --- a real cluster: a head and a second node on this machine ---------------------------------


def marked_pids(mark: str) -> list[int]:
    """The processes whose environment carries ``mark``: everything the test's ``ray start`` began."""
    needle = f"{MARKER}={mark}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone, or another user's
                pass
    return found


def stop_marked(mark: str, grace_s: float = 3) -> None:
    """SIGTERM every process of this cluster, SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_pids(mark):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while marked_pids(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not marked_pids(mark):
            return
    assert not marked_pids(mark), f"Ray processes of the test cluster survived SIGKILL: {marked_pids(mark)}"


def ray_start(args: list[str], env: dict) -> None:
    ray = shutil.which("ray") or pytest.fail("the `ray` command is not on PATH")
    done = subprocess.run([ray, "start", *args], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == 0, f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def node_ports() -> list[str]:
    """Every port a Ray node would otherwise take from a fixed default, picked free instead."""
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            "--min-worker-port=0", "--max-worker-port=0"]  # 0: workers take ports the system gives them


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node, one CPU each, on this machine: (GCS address, Ray client address)."""
    temp = tempfile.mkdtemp(prefix="fr", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({MARKER: temp, "RAY_USAGE_STATS_ENABLED": "0"})
    port, client_port = free_port(), free_port()
    common = [f"--temp-dir={temp}", "--num-cpus=1", "--disable-usage-stats"]
    try:
        ray_start(["--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                   "--include-dashboard=false", *common, *node_ports()], env)
        ray_start([f"--address=127.0.0.1:{port}", *common, *node_ports()], env)
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
    finally:
        stop_marked(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The shortened quickstart on the local engine, in this process: the files a run on Ray writes too
    (test_sim_run), without starting a third Ray (that no address means Ray here, whatever RAY_ADDRESS
    says: test_no_address_starts_ray_here_with_num_cpus)."""
    out = tmp_path_factory.mktemp("local") / "run"
    run(prepare(QUICKSTART, [*SHORT, "simulation.engine=local"]), out)
    return out


def run_on(address: str, out: Path) -> None:
    """The shortened quickstart through ``fogsim run`` on the cluster, in a process that cannot hang the suite."""
    command = [sys.executable, "-m", "fogsim", "run", QUICKSTART, "--out", str(out), "--quiet",
               *[f"--set={s}" for s in SHORT], f"--set=simulation.address={address}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run on {address} did not end in {RUN_TIMEOUT_S} s")
    assert done.returncode == 0, f"the run on {address} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def assert_same_run(a: Path, b: Path) -> None:
    rounds_a, rounds_b = (pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS) for out in (a, b))
    assert list(rounds_a["round"]) == [1, 2]
    pd.testing.assert_frame_equal(rounds_a, rounds_b)
    pd.testing.assert_frame_equal(pd.read_csv(a / "clients.csv"), pd.read_csv(b / "clients.csv"))


@pytest.mark.slow
def test_workers_on_both_nodes_import_fogsim_on_this_import_path(cluster):
    """Attached the way a run attaches, both nodes are alive, see this process's import path, and run fogsim."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import fogsim.sim.client_app

    @ray.remote(num_cpus=1)
    def where_fogsim_is():
        import fogsim.sim.client_app

        return fogsim.sim.client_app.__file__, os.environ.get("PYTHONPATH", "").split(os.pathsep)

    start_ray(Simulation(address=cluster[0]))
    try:
        nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        assert len(nodes) == 2 and ray.cluster_resources()["CPU"] == 2
        found = ray.get([where_fogsim_is.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                         .remote() for node in nodes], timeout=RUN_TIMEOUT_S)
    finally:
        stop_ray()
    for module, pythonpath in found:
        assert module == fogsim.sim.client_app.__file__
        assert {p for p in sys.path if p} <= set(pythonpath)


@pytest.mark.slow
def test_a_run_on_the_cluster_equals_a_local_run(cluster, local_run, tmp_path):
    run_on(cluster[0], tmp_path / "cluster")
    assert_same_run(local_run, tmp_path / "cluster")


@pytest.mark.slow
def test_a_signal_while_connecting_to_an_address_ends_the_run_at_once(tmp_path):
    """SIGTERM while fogsim waits on what answers at the address: exit 143 within seconds, one line."""
    with listening(None) as address:
        out = tmp_path / "x"
        process = subprocess.Popen([sys.executable, "-m", "fogsim", "run", str(scenario_file(tmp_path, address)),
                                    "--out", str(out), "--quiet"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not out.exists():  # the run directory is claimed just before Ray is reached
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
            time.sleep(0.02)
        time.sleep(0.3)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and time.monotonic() - sent < 5, err[-2000:]
    assert [line for line in err.splitlines() if line.strip()] == ["fogsim: interrupted by SIGTERM; what finished "
                                                                   "is kept"], err[-2000:]
