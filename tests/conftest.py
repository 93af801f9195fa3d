"""Shared pytest fixtures for tests that need real services (no mocks): a local multi-node Ray cluster and a
real MLflow tracking server. Both are session-scoped, since starting them costs seconds to tens of seconds.

- `clmlf_cache_dir`: one `$CLMLF_CACHE_DIR` (a tmp folder) for the whole session, set before any Ray node
  starts so that every node and trial generates or finds the demo data set in the same place (once).
- `ray_cluster`: a `RayCluster` from `ray.cluster_utils.Cluster`: a head node with 1 CPU and two worker nodes
  with 1 CPU and 1 GPU each (an advertised GPU resource: CUDA stays unavailable, so `device=auto` trains on
  CPU there). Connect a driver with `ray.init(address=cluster.address)` or pass `--address cluster.address`
  to a study script; disconnect with `ray.shutdown()`. The cluster is shut down at the end of the session.
- `mlflow_server`: `python -m mlflow server` on a free loopback port with a SQLite store and a local artifact
  root in a tmp folder; yields its `http://127.0.0.1:<port>` URI and stops it at the end of the session.
- `stoppable_mlflow_server`: a test's own such server (a `MlflowServer`), which the test may stop and start again on
  the same port and store.
- `small_demo_root`: a data root with a tiny demo set (16/8/8 posts, 32-pixel images), generated once.
- `free_loopback_port`: a TCP port on 127.0.0.1 that nothing listens on (e.g. an unreachable server's URI).
- `smoke_sweep`: the smoke layer sweep on two seeds, run once on `ray_cluster` with half a GPU per trial (two trials
  share each GPU) and its checkpoints kept; its folder holds the study folder `tune/sweep` and the MLflow store
  `mlflow.db`.
- `smoke_search`: the smoke search as a user starts it, `python studies/search.py --smoke-test` in a subprocess
  whose environment alone names the MLflow server (MLFLOW_TRACKING_URI) and the Ray cluster (RAY_ADDRESS); its
  Optuna study stored by default, its printed output kept.
- `study_arguments`, `read_trials_csv`, `result_rows`: a smoke study's command line in a test's folder, and what
  its study folder holds.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 120


def study_arguments(tmp_path: Path, name: str, *extra: str) -> list[str]:
    """A smoke study named `name` under `tmp_path` with its own SQLite MLflow store. Without the best model's
    analyses, which train a counterpart at the end: the tests of the analyses and the report draw their own."""
    return [
        "--smoke-test", "--no-analyses",
        "--storage-path", str(tmp_path / "tune"),
        "--name", name,
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]  # fmt: skip


def read_trials_csv(experiment: Path) -> list[dict[str, str]]:
    from results import storage

    with (experiment / storage.TRIALS_FILE).open() as handle:
        return list(csv.DictReader(handle))


def result_rows(trial_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_folder / "result.json").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def clmlf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-wide `$CLMLF_CACHE_DIR`, shared by the test process, Ray nodes and study subprocesses."""
    cache_dir = tmp_path_factory.mktemp("clmlf-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLMLF_CACHE_DIR", str(cache_dir))
        yield cache_dir


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo set generated once per module into a private cache, which the trainer finds through
    CLMLF_CACHE_DIR."""
    from clmlf.demo_data import ensure_demo_dataset

    cache = tmp_path_factory.mktemp("clmlf-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLMLF_CACHE_DIR", str(cache))
        ensure_demo_dataset()
        yield cache


SMALL_DEMO_SIZES_AND_IMAGE = ((16, 8, 8), 32)


@pytest.fixture(scope="session")
def small_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a 16/8/8-post demo set with 32-pixel images: for tests whose trials must be quick (those
    that force emulated bf16 or fp16 on the CPU, those that only check how trials are scheduled)."""
    from clmlf.demo_data import DemoSizes, generate_demo_dataset

    (train, dev, test), image_size = SMALL_DEMO_SIZES_AND_IMAGE
    root = tmp_path_factory.mktemp("small-demo")
    generate_demo_dataset(root, seed=7, sizes=DemoSizes(train=train, dev=dev, test=test), image_size=image_size)
    return root


@dataclass(frozen=True)
class RayCluster:
    address: str
    head_node_id: str
    gpu_node_ids: tuple[str, ...]

    @property
    def node_ids(self) -> tuple[str, ...]:
        return (self.head_node_id, *self.gpu_node_ids)


@pytest.fixture(scope="session")
def ray_cluster(clmlf_cache_dir: Path) -> Iterator[RayCluster]:
    """A local three-node Ray cluster (head: 1 CPU; two workers: 1 CPU + 1 advertised GPU each)."""
    import ray
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        # Nodes (and so every worker process) inherit the environment at start: the project must be importable
        # there even when it is not pip-installed, and Ray's log deduplication would hide per-trial lines.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        patch.setenv("RAY_DEDUP_LOGS", "0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
        try:
            gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
            cluster.wait_for_nodes()
            yield RayCluster(
                address=cluster.address,
                head_node_id=cluster.head_node.node_id,
                gpu_node_ids=tuple(node.node_id for node in gpu_nodes),
            )
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


SMOKE_SWEEP_NAME = "sweep"


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster) -> Path:
    from studies import layer_sweep

    folder = tmp_path_factory.mktemp("smoke-sweep")
    arguments = [
        "--smoke-test",
        "--seeds", "2",
        "--address", ray_cluster.address,
        # Two trials share each advertised GPU (and its node's one CPU).
        "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5",
        "--keep-checkpoints",
        "--storage-path", str(folder / "tune"),
        "--name", SMOKE_SWEEP_NAME,
        "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
    ]  # fmt: skip
    assert layer_sweep.main(arguments) == 0
    return folder


SMOKE_SEARCH_NAME = "searched"
SMOKE_SEARCH_TIMEOUT_S = 900
SMOKE_SEARCH_PASSWORD = "pw-4b1f9e-never-shown"


@dataclass(frozen=True)
class FinishedStudy:
    folder: Path  # the study's Tune folder
    log: str  # what its driver printed, stdout and stderr in order
    cwd: Path  # where the driver ran


@pytest.fixture(scope="session")
def smoke_search(
    tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster, mlflow_server: str
) -> FinishedStudy:
    cwd = tmp_path_factory.mktemp("smoke-search")
    # With credentials in the URI (the server takes any): none of the study's outputs may show the password.
    credentialed = mlflow_server.replace("://", f"://clmlf:{SMOKE_SEARCH_PASSWORD}@", 1)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": credentialed, "RAY_ADDRESS": ray_cluster.address}
    for name in ("CLMLF_TRACKING_URI", "CLMLF_RAY_ADDRESS"):
        environment.pop(name, None)
    command = [
        sys.executable, str(PROJECT_ROOT / "studies" / "search.py"),
        "--smoke-test", "--gpus-per-trial", "1",
        "--storage-path", str(cwd / "tune"), "--name", SMOKE_SEARCH_NAME,
    ]  # fmt: skip
    completed = subprocess.run(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=SMOKE_SEARCH_TIMEOUT_S, check=False,
    )  # fmt: skip
    (cwd / "driver.log").write_text(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-5000:]
    return FinishedStudy(cwd / "tune" / SMOKE_SEARCH_NAME, completed.stdout, cwd)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def free_loopback_port() -> int:
    return free_port()


class MlflowServer:
    """`python -m mlflow server` on a loopback port with a SQLite store and a local artifact root in `folder`; it can
    be stopped and started again on the same port and store (an outage)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log_path = self.folder / f"server-{self.starts}.log"
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--default-artifact-root", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # The job runner (GenAI features) starts a pool of huey workers that this test machine cannot spare.
        self.process = start_logged(command, log_path, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_until_answers(f"{self.uri}/health", self.process, log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on a free loopback port; yields its URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def stoppable_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A test's own MLflow server, started; the test may stop and start it (the same port and store)."""
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    server = MlflowServer(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def start_logged(
    command: list[str], log_path: Path, environment: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """A process writing to `log_path`, in its own process group: servers and raylets start children that
    `stop_process_group` must stop with them."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=cwd, start_new_session=True
        )


def wait_until_answers(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    stop_process_group(server)
    pytest.fail(
        f"mlflow server did not answer {url} within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
    )


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
