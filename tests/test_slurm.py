"""slurm/clmlf-study.sbatch submitted to a real SLURM: a controller and two `slurmd` nodes on this machine (node1 and
node2, both at the loopback address, one CPU each), authenticated by munge. Each node offers one GPU through SLURM's
GRES whose device file is /dev/null: SLURM grants it and sets CUDA_VISIBLE_DEVICES as it would for a real card, Ray
advertises it, and CUDA stays unavailable, so the trials train on CPU. That device file is the only thing that
differs from a GPU cluster.

The smoke layer sweep runs as a job: Ray's head on node1 and a worker on node2 (srun), MLflow started on the head,
and the Tune folder and the MLflow runs are checked after the job, with nothing it started left running. Before the
sweep, the job's driver checks that its Ray cluster turns away a client without the job's token and its MLflow a
request without the job's password. A second job joins an MLflow server that is already running instead of starting
one, and a job whose node-local folder sits on shared storage stops before it starts anything.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, start_logged
from mlflow.tracking import MlflowClient
from test_cluster_local import ray_environment, result_rows

from results.storage import TRIALS_FILE
from studies import layer_sweep
from tracking.mlflow_logging import experiment_name
from tracking.mlflow_runs import child_runs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SBATCH_SCRIPT = PROJECT_ROOT / "slurm" / "clmlf-study.sbatch"
SLURM_PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "srun")
NODES = ("node1", "node2")
SLURM_START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 600
SMOKE_TRIALS = 3
# Small object stores: the trials pass nothing big through them, and the machine is shared.
RAY_START_ARGUMENTS = "--object-store-memory=100000000"
# Set for a job by its test alone, never taken from the environment the tests run in.
JOB_VARIABLES = (
    "CLMLF_TRACKING_URI", "MLFLOW_TRACKING_URI", "CLMLF_RAY_ADDRESS", "CLMLF_STORAGE_PATH", "CLMLF_MLFLOW_DIR",
    "CLMLF_LOCAL_DIR", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
)  # fmt: skip


@dataclass(frozen=True)
class Slurm:
    folder: Path
    environment: dict[str, str]

    def command(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(arguments), env=self.environment, capture_output=True, text=True, timeout=timeout, check=False
        )


def slurm_configuration(folder: Path, controller_port: int, node_ports: list[int]) -> str:
    host = socket.gethostname()
    lines = [
        "ClusterName=clmlf-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge.socket'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}/%n",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd-%n.log'}",
        # No cgroups: processes are tracked through /proc, and tasks are not bound to cores.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "GresTypes=gpu",
        "ReturnToService=2",
        "MpiDefault=none",
    ]
    for node, port in zip(NODES, node_ports, strict=True):
        lines.append(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs=1 RealMemory=2000 "
            "Gres=gpu:1 State=UNKNOWN"
        )
    lines.append(f"PartitionName=test Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def wait_for_idle_nodes(slurm: Slurm) -> None:
    deadline = time.monotonic() + SLURM_START_TIMEOUT_S
    states = ""
    while time.monotonic() < deadline:
        states = slurm.command("sinfo", "--noheader", "--Node", "--format=%N %t").stdout
        if sorted(line.split()[1] for line in states.splitlines() if line.strip()) == ["idle", "idle"]:
            return
        time.sleep(0.5)
    logs = "\n".join(path.read_text()[-1500:] for path in sorted(slurm.folder.glob("*.log")))
    pytest.fail(f"SLURM nodes not idle within {SLURM_START_TIMEOUT_S} s: {states}\n{logs}")


@pytest.fixture(scope="module")
def slurm(clmlf_cache_dir) -> Iterator[Slurm]:
    """A private SLURM: its own munge socket and key, configuration, ports and state, all in one folder."""
    missing = [program for program in SLURM_PROGRAMS if shutil.which(program) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here (no {', '.join(missing)}); .ci/run installs slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM runs its daemons as root")
    folder = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))
    for name in ("state", "spool"):
        (folder / name).mkdir()
    configuration = folder / "slurm.conf"
    configuration.write_text(slurm_configuration(folder, free_port(), [free_port() for _ in NODES]))
    (folder / "gres.conf").write_text(f"NodeName={','.join(NODES)} Name=gpu File=/dev/null\n")
    slurm = Slurm(folder, {**ray_environment(clmlf_cache_dir), "SLURM_CONF": str(configuration)})
    munge_key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={munge_key}"], check=True, timeout=30)
    munge = start_logged(
        [
            "munged", "--foreground", "--force",
            f"--socket={folder / 'munge.socket'}", f"--key-file={munge_key}",
            f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
            f"--log-file={folder / 'munged.log'}",
        ],
        folder / "munged.out",
        slurm.environment,
    )  # fmt: skip
    try:
        for command in (["slurmctld"], *(["slurmd", "-N", node] for node in NODES)):
            started = slurm.command(*command)
            assert started.returncode == 0, f"{command}: {started.stderr}"
        wait_for_idle_nodes(slurm)
        yield slurm
    finally:
        slurm.command("scontrol", "shutdown")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            (folder / name).exists() and pid_alive(folder / name)
            for name in ("slurmctld.pid", *(f"slurmd-{node}.pid" for node in NODES))
        ):
            time.sleep(0.5)
        munge.terminate()
        munge.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def pid_alive(pid_file: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    return False


def submit(slurm: Slurm, job_folder: Path, variables: dict[str, str], *study: str) -> tuple[int, str]:
    """`sbatch --wait` the script with the study and its arguments; (the job's exit code, its output)."""
    output = job_folder / "job.out"
    inherited = {key: value for key, value in slurm.environment.items() if key not in JOB_VARIABLES}
    environment = {
        **inherited,
        **variables,
        "CLMLF_PROJECT_DIR": str(PROJECT_ROOT),
        "CLMLF_RAY_START_ARGS": RAY_START_ARGUMENTS,
    }
    try:
        finished = subprocess.run(
            ["sbatch", "--wait", f"--output={output}", f"--chdir={job_folder}", str(SBATCH_SCRIPT), *study],
            env=environment,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        slurm.command("scancel", "--full", "--partition=test")
        raise
    return finished.returncode, output.read_text() if output.is_file() else finished.stderr


def processes_using(text: str) -> list[str]:
    """Command lines of the running processes that mention `text` (a job's Ray folder, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and entry.name != str(os.getpid()):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in command:
                    found.append(command)
    return found


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    # Unix sockets live in Ray's session folder, and their paths are short: pytest's tmp_path is too long.
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# The smoke sweep's driver, after two checks from inside the job: a request to the job's MLflow without the password,
# and a Ray client with the job's environment less its token.
CHECKED_SWEEP = """
import os, subprocess, sys, urllib.error, urllib.request

from studies import layer_sweep

try:
    with urllib.request.urlopen(os.environ["CLMLF_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"):
        print("MLflow without the password: answered")
except urllib.error.HTTPError as error:
    print(f"MLflow without the password: HTTP {error.code}")
without_token = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_TOKEN"}
client = subprocess.run(
    [sys.executable, "-c", "import os, ray; ray.init(address=os.environ['CLMLF_RAY_ADDRESS'])"],
    env={**without_token, "RAY_AUTH_MODE": "disabled", "RAY_gcs_server_port_wait_time_s": "2"},
    capture_output=True, text=True, timeout=120,
)
refused = client.returncode != 0 and "Authentication token is missing or incorrect" in client.stderr
print(f"Ray without the token: {'refused' if refused else 'not refused'}")
sys.exit(layer_sweep.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_batch_script_runs_a_study_on_two_nodes_with_its_own_mlflow(slurm, tmp_path, ray_temp_dir):
    storage, mlflow_folder, local_folder = tmp_path / "tune", tmp_path / "mlflow", tmp_path / "node-local"
    local_folder.mkdir()
    study = tmp_path / "checked_sweep.py"
    study.write_text(CHECKED_SWEEP)
    variables = {
        "CLMLF_STORAGE_PATH": str(storage),
        "CLMLF_MLFLOW_DIR": str(mlflow_folder),
        "CLMLF_LOCAL_DIR": str(local_folder),
        "CLMLF_RAY_TEMP_DIR": str(ray_temp_dir),
    }
    returncode, output = submit(
        slurm, tmp_path, variables, str(study), "--smoke-test", "--no-analyses", "--name", "slurm-sweep"
    )
    assert returncode == 0, output
    assert "Ray cluster ready: 2 nodes" in output
    assert "'GPU': 2.0" in output, "SLURM's GPUs did not reach Ray"
    assert "Ray without the token: refused" in output
    assert "MLflow without the password: HTTP 401" in output
    assert "MLflow: started http://127.0.0.1:" in output

    experiment = storage / "slurm-sweep"
    with (experiment / TRIALS_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SMOKE_TRIALS and {row["status"] for row in rows} == {"TERMINATED"}, rows
    trial_ids = sorted(row["trial_id"] for row in rows)
    placed_on = {
        result["trial/node_id"] for trial_id in trial_ids for result in result_rows(experiment / f"trial_{trial_id}")
    }
    assert len(placed_on) == len(NODES), "the trials did not use both nodes"

    # The server was the job's: it has stopped, its database came back from the node's own disk into the job's own
    # folder, and it holds the study.
    job_folders = list(mlflow_folder.glob("job-*"))
    assert len(job_folders) == 1, job_folders
    assert f"MLflow: database copied to {job_folders[0] / 'mlflow.db'}" in output
    assert list(local_folder.iterdir()) == [], "the job left its node-local folder behind"
    database = f"sqlite:///{job_folders[0] / 'mlflow.db'}"
    client = MlflowClient(database)
    mlflow_experiment = client.get_experiment_by_name(experiment_name(layer_sweep.KIND, "demo"))
    parents = client.search_runs([mlflow_experiment.experiment_id], filter_string="tags.`clmlf.role` = 'study'")
    assert [parent.info.status for parent in parents] == ["FINISHED"]
    trial_runs = child_runs(database, parents[0].info.run_id)
    assert sorted(run.data.tags["clmlf.trial_id"] for run in trial_runs) == trial_ids
    assert processes_using(str(ray_temp_dir)) == [], "Ray processes outlived the job"
    assert processes_using(str(mlflow_folder)) == [], "the job's MLflow server outlived the job"


PROBE = """
import json, os, sys
import mlflow, ray

ray.init(address=os.environ["CLMLF_RAY_ADDRESS"], logging_level="ERROR")
mlflow.set_tracking_uri(os.environ["CLMLF_TRACKING_URI"])
mlflow.set_experiment("slurm-probe")
with mlflow.start_run(run_name=sys.argv[1]):
    mlflow.log_metric("ray_nodes", sum(node["Alive"] for node in ray.nodes()))
    mlflow.log_metric("ray_gpus", ray.cluster_resources().get("GPU", 0))
"""


@pytest.mark.slow
def test_the_batch_script_joins_an_mlflow_server_given_by_a_variable(slurm, tmp_path, ray_temp_dir, mlflow_server):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    variables = {
        "CLMLF_TRACKING_URI": mlflow_server,
        "CLMLF_MLFLOW_DIR": str(tmp_path / "unused-mlflow"),
        "CLMLF_STORAGE_PATH": str(tmp_path / "tune"),
        "CLMLF_RAY_TEMP_DIR": str(ray_temp_dir),
    }
    returncode, output = submit(slurm, tmp_path, variables, str(probe), "joined")
    assert returncode == 0, output
    assert f"MLflow: joining {mlflow_server}" in output
    assert not (tmp_path / "unused-mlflow").exists(), "the job started its own MLflow server"
    client = MlflowClient(mlflow_server)
    runs = client.search_runs(
        [client.get_experiment_by_name("slurm-probe").experiment_id], filter_string="attributes.run_name = 'joined'"
    )
    assert len(runs) == 1
    assert runs[0].data.metrics == {"ray_nodes": len(NODES), "ray_gpus": len(NODES)}
    assert processes_using(str(ray_temp_dir)) == []


# `df` as it answers for a folder on NFS: a file system that cannot be mounted here.
NFS_DF = """#!/usr/bin/env bash
printf 'Type\\nnfs4\\n'
"""


def test_the_batch_script_refuses_shared_storage_for_sqlite_before_starting_anything(slurm, tmp_path, ray_temp_dir):
    fake_bin, local_folder = tmp_path / "bin", tmp_path / "node-local"
    fake_bin.mkdir()
    local_folder.mkdir()
    (fake_bin / "df").write_text(NFS_DF)
    (fake_bin / "df").chmod(0o755)
    variables = {
        "PATH": f"{fake_bin}:{slurm.environment['PATH']}",
        "CLMLF_LOCAL_DIR": str(local_folder),
        "CLMLF_MLFLOW_DIR": str(tmp_path / "mlflow"),
        "CLMLF_RAY_TEMP_DIR": str(ray_temp_dir),
    }
    returncode, output = submit(slurm, tmp_path, variables, "studies/layer_sweep.py", "--smoke-test")
    assert returncode == 2, output
    assert "is on nfs4, shared storage where SQLite's locks are unreliable" in output
    assert "CLMLF_LOCAL_DIR" in output
    assert not any(ray_temp_dir.iterdir()), "Ray started although MLflow's database had nowhere safe to go"
    assert list(local_folder.iterdir()) == [], "the refused job left its node-local folder behind"


def test_the_batch_script_refuses_a_missing_study_before_starting_anything(slurm, tmp_path, ray_temp_dir):
    returncode, output = submit(slurm, tmp_path, {"CLMLF_RAY_TEMP_DIR": str(ray_temp_dir)}, "studies/no_such.py")
    assert returncode == 2
    assert "no study script studies/no_such.py" in output
    assert not any(ray_temp_dir.iterdir()), "Ray started for a study that does not exist"
