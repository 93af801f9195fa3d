"""The smoke layer sweep on a local multi-node cluster of real raylets, reached the way a cluster user reaches
one: a `ray start --head` with no CPUs, two `ray start` workers advertising one GPU each, the study driven with
`--address auto` and logging to an MLflow server started with cluster.yaml's own command. One worker is killed
while its trial runs and a replacement joins, as the autoscaler would start one: the study still finishes every
trial, and the killed trial is recorded as retried.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, start_logged, stop_process_group, wait_until_answers
from mlflow.tracking import MlflowClient
from test_cluster_config import mlflow_server_command_from_cluster_yaml

from results.storage import TRIALS_FILE
from studies import cli, layer_sweep, runner
from tracking.mlflow_logging import experiment_name
from tracking.mlflow_runs import child_runs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
STUDY_NAME = "cluster-sweep"
# tiny preset, smoke sweep: fusion 1-2 and image 1-2 through the shared point (1, 1).
SMOKE_TRIALS = 3
# Long enough that the worker is killed after a trial's first checkpoint and before its last epoch.
EPOCHS = 4
NODE_START_TIMEOUT_S = 60
STUDY_TIMEOUT_S = 300
# Small object stores: the trials pass nothing big through them, and the machine is shared.
OBJECT_STORE_BYTES = 100_000_000


@dataclass
class RayNode:
    """One `ray start --block` process: its process group holds the node's raylet and everything it started."""

    process: subprocess.Popen
    log_path: Path
    node_id: str = ""


def ray_environment(cache_dir: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
            "CLMLF_CACHE_DIR": str(cache_dir),
            # Token auth keeps its token in ~/.ray, which other clusters on this machine share and rewrite.
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            # A killed raylet is declared dead after a few seconds instead of half a minute.
            "RAY_health_check_period_ms": "1000",
        }
    )
    environment.pop("RAY_ADDRESS", None)
    return environment


def start_node(arguments: list[str], log_path: Path, environment: dict[str, str]) -> RayNode:
    command = [str(VENV_BIN / "ray"), "start", *arguments, "--block", "--disable-usage-stats"]
    node = RayNode(start_logged(command, log_path, environment), log_path)
    node.node_id = wait_for_raylet_node_id(node)
    return node


def wait_for_raylet_node_id(node: RayNode) -> str:
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            pytest.fail(f"`ray start` exited with {node.process.returncode}:\n{node.log_path.read_text()[-3000:]}")
        for pid in descendants(node.process.pid):
            arguments = command_line(pid)
            if arguments and Path(arguments[0]).name == "raylet":
                node_ids = [argument.split("=", 1)[1] for argument in arguments if argument.startswith("--node_id=")]
                if node_ids and "This command will now block" in node.log_path.read_text():
                    return node_ids[0]
        time.sleep(0.5)
    pytest.fail(f"no raylet came up within {NODE_START_TIMEOUT_S} s:\n{node.log_path.read_text()[-3000:]}")


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (psutil is not in the environment)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces; the parent pid is the second field after it.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill_node(node: RayNode) -> None:
    """SIGKILL the node's whole process tree, as a lost machine would end it (no graceful shutdown)."""
    victims = [node.process.pid, *descendants(node.process.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait(timeout=30)


def result_rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        # The driver may be writing the last line right now.
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def first_reporting_node(experiment: Path) -> tuple[str, str] | None:
    """(trial id, node id) of a trial that has reported an epoch (so it has a checkpoint) and not its last."""
    for trial_dir in sorted(experiment.glob("trial_*")):
        rows = result_rows(trial_dir)
        if rows and len(rows) < EPOCHS - 1:
            return trial_dir.name.removeprefix("trial_"), rows[-1]["trial/node_id"]
    return None


def log_tail(path: Path) -> str:
    return path.read_text()[-4000:] if path.is_file() else "(no log)"


@pytest.mark.slow
@pytest.mark.timeout(STUDY_TIMEOUT_S + 2 * NODE_START_TIMEOUT_S + 60)
def test_smoke_sweep_on_a_local_cluster_finishes_every_trial_when_a_gpu_worker_dies(tmp_path, clmlf_cache_dir):
    # Sockets live under the temp dir and Unix socket paths are short: pytest's tmp_path is too long for it.
    ray_temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    environment = ray_environment(clmlf_cache_dir)
    head_port = free_port()
    nodes: list[RayNode] = []
    mlflow_server: subprocess.Popen | None = None
    driver: subprocess.Popen | None = None
    common_node_arguments = [
        f"--node-ip-address={LOOPBACK}",
        f"--temp-dir={ray_temp}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
    ]

    def start_gpu_worker(label: str) -> RayNode:
        # Several raylets on one host: each node's agent ports must differ (the defaults are fixed numbers).
        arguments = [
            f"--address={LOOPBACK}:{head_port}",
            "--num-cpus=1",
            "--num-gpus=1",
            f"--dashboard-agent-listen-port={free_port()}",
            *common_node_arguments,
        ]
        node = start_node(arguments, tmp_path / f"{label}.log", environment)
        nodes.append(node)
        return node

    try:
        head_arguments = [
            "--head",
            f"--port={head_port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            *common_node_arguments,
        ]
        nodes.append(start_node(head_arguments, tmp_path / "head.log", environment))
        worker_a = start_gpu_worker("worker-a")
        worker_b = start_gpu_worker("worker-b")

        mlflow_folder = tmp_path / "mlflow"
        mlflow_folder.mkdir()
        mlflow_port = free_port()
        tracking_uri = f"http://{LOOPBACK}:{mlflow_port}"
        server_command = mlflow_server_command_from_cluster_yaml(
            executable=str(VENV_BIN / "mlflow"),
            host=LOOPBACK,
            port=mlflow_port,
            backend_store_uri=f"sqlite:///{mlflow_folder / 'mlflow.db'}",
            artifacts_destination=str(mlflow_folder / "artifacts"),
        )
        # One web worker instead of the default four: the machine is shared and one study is light traffic.
        server_command += ["--workers", "1"]
        server_log = mlflow_folder / "server.log"
        mlflow_server = start_logged(
            server_command, server_log, {**environment, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        )
        wait_until_answers(f"{tracking_uri}/health", mlflow_server, server_log)

        storage = tmp_path / "tune"
        experiment = storage / STUDY_NAME
        study_command = [
            sys.executable, str(PROJECT_ROOT / "studies" / "layer_sweep.py"),
            "--smoke-test", "--no-analyses",
            "--address", "auto",
            "--gpus-per-trial", "1",
            "--tracking-uri", tracking_uri,
            "--storage-path", str(storage),
            "--name", STUDY_NAME,
            "--set", f"finetune_epochs={EPOCHS - cli.SMOKE_OVERRIDES['frozen_text_epochs']}",
        ]  # fmt: skip
        driver_log = tmp_path / "study.log"
        # On the head, `auto` finds the cluster that `ray start --head` recorded; RAY_ADDRESS says the same
        # without touching the machine-wide /tmp/ray record that other clusters here use.
        driver = start_logged(
            study_command, driver_log, {**environment, "RAY_ADDRESS": f"{LOOPBACK}:{head_port}"}, cwd=tmp_path
        )

        deadline = time.monotonic() + STUDY_TIMEOUT_S
        victim = None
        while victim is None and driver.poll() is None and time.monotonic() < deadline:
            victim = first_reporting_node(experiment)
            time.sleep(0.2)
        assert victim is not None, f"no trial reported an epoch before the study ended:\n{log_tail(driver_log)}"
        killed_trial, killed_node_id = victim
        killed_worker = {worker_a.node_id: worker_a, worker_b.node_id: worker_b}[killed_node_id]
        surviving_worker = worker_b if killed_worker is worker_a else worker_a
        kill_node(killed_worker)
        nodes.remove(killed_worker)
        start_gpu_worker("worker-replacement")

        driver.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert driver.returncode == 0, log_tail(driver_log)

        with (experiment / TRIALS_FILE).open() as handle:
            rows = list(csv.DictReader(handle))
        trial_ids = sorted(row["trial_id"] for row in rows)
        assert len(rows) == SMOKE_TRIALS and {row["status"] for row in rows} == {"TERMINATED"}, rows
        assert killed_trial in trial_ids

        placed_on = {
            row["trial/node_id"] for trial_id in trial_ids for row in result_rows(experiment / f"trial_{trial_id}")
        }
        assert {killed_worker.node_id, surviving_worker.node_id} <= placed_on
        assert nodes[0].node_id not in placed_on, "a trial ran on the head, which has no CPU for trials"
        killed_rows = result_rows(experiment / f"trial_{killed_trial}")
        assert [row["epoch"] for row in killed_rows][-1] == EPOCHS - 1
        assert killed_rows[-1]["trial/node_id"] != killed_worker.node_id

        client = MlflowClient(tracking_uri)
        mlflow_experiment = client.get_experiment_by_name(experiment_name(layer_sweep.KIND, "demo"))
        parents = client.search_runs(
            [mlflow_experiment.experiment_id],
            filter_string=f"tags.`clmlf.role` = 'study' and tags.`clmlf.study_name` = '{STUDY_NAME}'",
        )
        assert len(parents) == 1
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["clmlf.best_trial_id"] in trial_ids
        trial_runs = child_runs(tracking_uri, parent.info.run_id)
        assert sorted(run.data.tags["clmlf.trial_id"] for run in trial_runs) == trial_ids
        for run in trial_runs:
            assert run.info.status == "FINISHED", run.data.tags
            assert run.data.tags["clmlf.status"] == "TERMINATED"
            steps = [metric.step for metric in client.get_metric_history(run.info.run_id, "dev/score")]
            assert sorted(set(steps)) == list(range(EPOCHS))
        retries = {run.data.tags["clmlf.trial_id"]: int(run.data.tags["clmlf.retries"]) for run in trial_runs}
        assert retries[killed_trial] >= 1, retries
        assert retries[killed_trial] <= runner.RETRIES_PER_TRIAL

        # The study says which trials were retried: trials.csv, the printed summary and the report.
        retried_rows = {row["trial_id"]: int(row["retries"]) for row in rows if int(row["retries"])}
        assert killed_trial in retried_rows, rows
        summary = driver_log.read_text()
        retried_section = summary[summary.index("retried trials") :].split("\n\n")[0]
        assert f"{killed_trial}: {retried_rows[killed_trial]} retries" in retried_section
        report_markdown = (experiment / "report" / "demo" / "summary.md").read_text()
        retried_report = report_markdown[report_markdown.index("## Retried trials") :]
        assert killed_trial in retried_report
    finally:
        if driver is not None:
            stop_process_group(driver)
        if mlflow_server is not None:
            stop_process_group(mlflow_server)
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(ray_temp, ignore_errors=True)
