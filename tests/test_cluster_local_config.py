"""cluster-local.yaml (Ray's local provider, for machines the user already has) against everything `ray up` checks
before it logs in to a machine, and against what the studies need there: every worker address joins, the CLMLF_*
defaults in every node's environment pointing at the shared folder, MLflow on the head's loopback address behind a
password made on the head (started by the config's own commands, restarted cleanly by a second `ray up` with the same
password), Ray's token authentication on every node, the dashboard and Ray's client server for the head alone, no
credentials in the file.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import free_port
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.local.config import LOCAL_CLUSTER_NODE_TYPE
from ray.autoscaler._private.util import prepare_config, validate_config
from test_cluster_config import (
    ENVIRONMENT_FILE,
    MLFLOW_PORT,
    PROJECT_MOUNT,
    RAY_CLIENT_SERVER_PORT,
    RAY_TOKEN_FILE,
    REPOSITORY_ROOT,
    assert_dashboard_and_client_server_are_for_the_head_alone,
    assert_every_command_is_valid_bash,
    assert_mlflow_is_for_the_head_alone,
    assert_no_credentials,
    assert_ray_is_started_from_the_projects_venv,
    assert_ray_token_reaches_every_node,
    assert_setup_checks_the_token,
    commands_containing,
    load_cluster_yaml,
    mlflow_server_command_from_cluster_yaml,
    node_environment,
    option_value,
    run_like_ray,
    worker_environment_after_setup,
    write_ubuntu_bashrc,
)

LOCAL_YAML = REPOSITORY_ROOT / "cluster-local.yaml"
MLFLOW_START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def raw_config() -> dict[str, Any]:
    return load_cluster_yaml(LOCAL_YAML)


@pytest.fixture(scope="module")
def settings(raw_config: dict[str, Any]) -> dict[str, Any]:
    return raw_config["metadata"]["settings"]


@pytest.fixture(scope="module")
def config(raw_config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` holds when it starts logging in to the machines: the local provider's preparation and
    defaults, Ray's schema and consistency checks, and the provider's own bootstrap (commands._bootstrap_config;
    for this provider every step is offline)."""
    return _bootstrap_config(copy.deepcopy(raw_config), no_config_cache=True)


def test_cluster_local_yaml_passes_what_ray_up_checks_first(config: dict[str, Any], settings: dict[str, Any]):
    assert config["provider"]["type"] == "local"
    # One node type for the head and every listed machine, all of which join at `ray up` and stay.
    assert list(config["available_node_types"]) == [LOCAL_CLUSTER_NODE_TYPE]
    node_type = config["available_node_types"][LOCAL_CLUSTER_NODE_TYPE]
    assert node_type["min_workers"] == node_type["max_workers"] == len(settings["worker_ips"])
    assert config["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert config["worker_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]


def test_rays_validation_rejects_a_misspelt_key(raw_config: dict[str, Any]) -> None:
    misspelt = copy.deepcopy(raw_config)
    misspelt["worker_start_ray_command"] = misspelt.pop("worker_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(misspelt))


def test_settings_block_feeds_the_provider_and_login(config: dict[str, Any], settings: dict[str, Any]) -> None:
    assert config["provider"]["head_ip"] == settings["head_ip"]
    assert config["provider"]["worker_ips"] == settings["worker_ips"]
    assert settings["head_ip"] not in settings["worker_ips"]
    assert len(set(settings["worker_ips"])) == len(settings["worker_ips"])
    assert config["auth"]["ssh_user"] == settings["ssh_user"]


def test_ray_is_started_from_the_projects_venv(config: dict[str, Any]) -> None:
    assert_ray_is_started_from_the_projects_venv(config)


def test_working_tree_is_pushed_and_installed_as_on_aws(config: dict[str, Any]) -> None:
    aws = load_cluster_yaml()
    assert config["file_mounts"] == aws["file_mounts"] == {PROJECT_MOUNT: ".", RAY_TOKEN_FILE: RAY_TOKEN_FILE}
    assert config["rsync_filter"] == aws["rsync_filter"]
    project_install = commands_containing(aws["setup_commands"], "pip install -e")
    assert project_install and project_install[0] in config["setup_commands"]


def test_every_shared_path_uses_the_settings_folder(settings: dict[str, Any]) -> None:
    shared = settings["shared_folder"]
    mentioned = set(re.findall(r"(/mnt/[^/\s'\"`]+)", LOCAL_YAML.read_text()))
    assert mentioned == {shared}


def test_setup_stops_when_the_shared_folder_is_not_mounted(
    config: dict[str, Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    checks = commands_containing(config["setup_commands"], "test -d")
    assert len(checks) == 1 and f"{settings['shared_folder']}/data" in checks[0]
    missing = run_like_ray(checks[0].replace(settings["shared_folder"], str(tmp_path / "not-mounted")), tmp_path)
    assert missing.returncode != 0
    assert "mount the shared folder" in missing.stderr
    (tmp_path / "mounted" / "data").mkdir(parents=True)
    present = run_like_ray(checks[0].replace(settings["shared_folder"], str(tmp_path / "mounted")), tmp_path)
    assert present.returncode == 0, present.stderr


def test_worker_environment_reaches_the_commands_ray_runs_later(
    config: dict[str, Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    environment = worker_environment_after_setup(config, tmp_path, "192.0.2.10")
    assert "CLMLF_TRACKING_URI" not in environment
    assert "MLFLOW_TRACKING_PASSWORD" not in environment
    assert environment["RAY_AUTH_MODE"] == "token"
    assert environment["CLMLF_STORAGE_PATH"] == f"{settings['shared_folder']}/tune"
    assert environment["CLMLF_DATA_ROOT"] == f"{settings['shared_folder']}/data"
    assert environment["CLMLF_RAY_ADDRESS"] == "auto"
    assert environment["PATH"].startswith(f"{tmp_path}/clmlf-studies/.venv/bin:")
    assert (tmp_path / ENVIRONMENT_FILE).read_text().count("RAY_AUTH_MODE") == 1


def test_mlflow_runs_on_the_heads_loopback_with_a_password_and_artifacts_on_the_shared_folder(
    config: dict[str, Any], settings: dict[str, Any]
) -> None:
    command = mlflow_server_command_from_cluster_yaml(cluster_yaml=LOCAL_YAML)
    assert_mlflow_is_for_the_head_alone(config, command)
    assert option_value(command, "--app-name") == "basic-auth"
    assert option_value(command, "--port") == MLFLOW_PORT
    assert option_value(command, "--artifacts-destination") == f"{settings['shared_folder']}/mlflow-artifacts"
    assert "--serve-artifacts" in command
    # The database stays on the head's own disk: SQLite over NFS locks unreliably.
    assert option_value(command, "--backend-store-uri").startswith("sqlite:///$HOME/")
    start = commands_containing(config["head_start_ray_commands"], "mlflow server")[0]
    assert 'MLFLOW_AUTH_CONFIG_PATH="$HOME/mlflow/basic-auth.ini"' in start
    worker_commands = config["worker_setup_commands"] + config["worker_start_ray_commands"]
    assert not commands_containing(worker_commands, "mlflow server")


def test_ray_runs_with_token_authentication_from_a_token_outside_the_repository(config: dict[str, Any]) -> None:
    assert_ray_token_reaches_every_node(config)


def test_setup_stops_without_the_token_and_keeps_it_private(config: dict[str, Any], tmp_path: Path) -> None:
    assert_setup_checks_the_token(config, tmp_path)


def test_dashboard_and_client_server_are_for_the_head_alone(config: dict[str, Any]) -> None:
    assert_dashboard_and_client_server_are_for_the_head_alone(config, firewall_required=False)


def test_without_sudo_the_client_server_rule_warns_and_ray_up_goes_on(config: dict[str, Any], tmp_path: Path) -> None:
    """A machine where this account may not change the firewall without a password: `sudo -n` refuses (a shell
    function stands in for it, so that nothing here touches this machine's firewall)."""
    rule = commands_containing(config["head_start_ray_commands"], "iptables")[0]
    result = run_like_ray(f"sudo() {{ echo 'sudo: a password is required' >&2; return 1; }}; {rule}", tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"port {RAY_CLIENT_SERVER_PORT}" in result.stderr and "warning" in result.stderr


def mlflow_pid(home: Path) -> int:
    return int((home / "mlflow" / "server.pid").read_text())


def mlflow_answer(uri: str, credentials: tuple[str, str] | None = None) -> int:
    """The HTTP status of a call to MLflow's REST API, with or without a user name and password."""
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
    if credentials is not None:
        encoded = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {encoded}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for_health(uri: str) -> None:
    deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no MLflow answered at {uri} within {MLFLOW_START_TIMEOUT_S} s")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_head_starts_mlflow_with_its_own_commands_and_a_second_ray_up_restarts_it(
    config: dict[str, Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    """The head's setup and start commands that concern MLflow, run as Ray runs them on a node whose home is a tmp
    folder (holding this checkout as ~/clmlf-studies), on a free port, with one web worker and the shared folder in
    tmp: the server starts, answers only with the password from the head's environment, and `ray up` run again stops
    exactly that server and starts a new one that takes the same password."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "clmlf-studies").symlink_to(REPOSITORY_ROOT)
    write_ubuntu_bashrc(home)
    port = str(free_port())

    def on_this_machine(command: str) -> str:
        # One web worker and no job runner, as for the other test servers: the machine is shared.
        return (
            command.replace(f":{MLFLOW_PORT}", f":{port}")
            .replace(f"--port {MLFLOW_PORT}", f"--port {port} --workers 1")
            .replace("setsid nohup", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup")
            .replace(settings["shared_folder"], str(tmp_path / "shared"))
        )

    # The head's setup (common commands first) as far as it writes the environment and MLflow's folders.
    setup = [
        command
        for command in config["head_setup_commands"]
        if ENVIRONMENT_FILE in command or command.startswith("mkdir") or "basic-auth.ini" in command
    ]
    start = [command for command in config["head_start_ray_commands"] if "ray " not in command]
    assert any("mlflow server" in command for command in start)
    start = [command for command in start if "iptables" not in command]
    uri = f"http://127.0.0.1:{port}"
    started: list[int] = []
    try:
        for _ in range(2):  # a second `ray up` runs the same commands again
            for command in [*setup, *start]:
                result = run_like_ray(on_this_machine(command), home, timeout=MLFLOW_START_TIMEOUT_S + 30)
                if (home / "mlflow" / "server.pid").is_file() and mlflow_pid(home) not in started:
                    started.append(mlflow_pid(home))
                assert result.returncode == 0, f"{command}\n{result.stderr}"
            wait_for_health(uri)
            environment = node_environment(home)
            assert environment["CLMLF_TRACKING_URI"] == uri
            credentials = (environment["MLFLOW_TRACKING_USERNAME"], environment["MLFLOW_TRACKING_PASSWORD"])
            assert len(credentials[1]) >= 24
            assert mlflow_answer(uri) == 401
            assert mlflow_answer(uri, (credentials[0], credentials[1] + "x")) == 401
            assert mlflow_answer(uri, credentials) == 200
        # The password, its hash in the user store and the runs: in a folder that other accounts cannot open.
        assert (home / "mlflow").stat().st_mode & 0o077 == 0
        assert (home / "mlflow" / "basic-auth.ini").stat().st_mode & 0o077 == 0
        assert credentials[1] not in (home / ENVIRONMENT_FILE).read_text(), "the password sits in the environment file"
        first, second = started
        assert first != second
        assert not process_alive(first), "the second `ray up` left the first MLflow server running"
        assert process_alive(second)
        assert (tmp_path / "shared" / "mlflow-artifacts").is_dir()
        assert (home / "mlflow" / "mlflow.db").is_file()
    finally:
        for pid in started:
            if process_alive(pid):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(process_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.5)


def test_no_credentials_in_the_file(config: dict[str, Any]) -> None:
    assert_no_credentials(LOCAL_YAML.read_text())
    assert "ssh_private_key" not in config["auth"]


def test_every_command_is_valid_bash(config: dict[str, Any]) -> None:
    assert_every_command_is_valid_bash(config)
