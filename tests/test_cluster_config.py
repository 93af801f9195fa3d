"""cluster.yaml against Ray's own checks (the ones `ray up` runs before it talks to AWS) and against what the
studies need on a cluster: GPU workers scaled from zero, MLflow on the head's private address with a database and
S3 artifacts, the CLMLF_* defaults in every node's environment, no credentials, only SSH open to the outside.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.command_runner import _with_interactive
from ray.autoscaler._private.util import (
    check_legacy_fields,
    prepare_config,
    validate_config,
    with_head_node_ip,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPOSITORY_ROOT / "cluster.yaml"
CLUSTER_DOCS = REPOSITORY_ROOT / "docs" / "clusters.md"
CLUSTER_DOCS_SECTION = "## AWS"
PROJECT_MOUNT = "~/clmlf-studies"
ENVIRONMENT_FILE = "clmlf-cluster.env"
MLFLOW_PORT = "5000"
# AWS instance families with NVIDIA GPUs: g4dn, g5, g6, g6e, p3, p4d, p5, ...
GPU_INSTANCE_FAMILY = re.compile(r"^[gp]\d")
COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
UNSPECIFIED_ADDRESSES = {"", "0.0.0.0", "::", "[::]", "*"}
SHELL_OPERATORS = {"&", "&&", "|", "||", ";", ">", ">>", "<", "2>&1"}


def load_cluster_yaml(path: Path = CLUSTER_YAML) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def prepared_cluster_config(path: Path = CLUSTER_YAML) -> dict[str, Any]:
    """What `ray up` holds after its offline steps (commands._bootstrap_config): legacy-field check, defaults
    filled and setup commands merged (prepare_config), then the JSON schema and consistency checks
    (validate_config). The steps after that need AWS: the AWS provider's fillout_available_node_types_resources
    asks EC2 for instance types and bootstrap_config looks up key pairs, subnets and security groups, so this
    stops before them."""
    config = load_cluster_yaml(path)
    check_legacy_fields(config)
    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def mlflow_server_command_from_cluster_yaml(
    *,
    executable: str | None = None,
    host: str | None = None,
    port: int | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    cluster_yaml: Path = CLUSTER_YAML,
) -> list[str]:
    """The `mlflow server` command line the head's start commands run, split into arguments, from the MLflow
    executable on (the systemd wrapper left out). Each given value replaces the cluster-specific one (the
    venv's mlflow, the `hostname -I` expression, the port, the SQLite file, the S3 destination), so a test
    can start the same server locally."""
    commands = load_cluster_yaml(cluster_yaml).get("head_start_ray_commands", [])
    matches = [command for command in commands if re.search(r"\bmlflow server\b", command)]
    if len(matches) != 1:
        raise ValueError(
            f"{cluster_yaml}: expected one `mlflow server` command in head_start_ray_commands, found {len(matches)}"
        )
    arguments = shlex.split(matches[0])
    start = next(
        (
            index
            for index, argument in enumerate(arguments[:-1])
            if Path(argument).name == "mlflow" and arguments[index + 1] == "server"
        ),
        None,
    )
    if start is None:
        raise ValueError(f"{cluster_yaml}: no `mlflow server` words in {matches[0]!r}")
    # Up to the first shell operator: a command may go on with redirections, `&` and more commands.
    command = list(itertools.takewhile(lambda word: word not in SHELL_OPERATORS, arguments[start:]))
    if executable is not None:
        command[0] = executable
    replacements = {
        "--host": host,
        "--port": None if port is None else str(port),
        "--backend-store-uri": backend_store_uri,
        "--artifacts-destination": artifacts_destination,
    }
    for option, value in replacements.items():
        if value is None:
            continue
        if option not in command:
            raise ValueError(f"{cluster_yaml}: the `mlflow server` command has no {option} to replace")
        command[command.index(option) + 1] = value
    return command


def option_value(arguments: list[str], option: str) -> str:
    assert option in arguments, f"{option} missing from {arguments}"
    return arguments[arguments.index(option) + 1]


def all_commands(config: dict[str, Any]) -> list[str]:
    return [command for key in COMMAND_LISTS for command in config.get(key, [])]


def commands_containing(commands: list[str], text: str) -> list[str]:
    return [command for command in commands if text in command]


def run_like_ray(command: str, home: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs a command the way Ray's SSH command runner does on a node (`bash --login -c -i` after
    `source ~/.bashrc`), with `home` as the node's home folder."""
    environment = {"HOME": str(home), "PATH": os.environ["PATH"], "USER": os.environ.get("USER", "ubuntu")}
    return subprocess.run(
        " ".join(_with_interactive(command)),
        shell=True,
        cwd=home,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def node_environment(home: Path) -> dict[str, str]:
    result = run_like_ray("env -0", home)
    assert result.returncode == 0, result.stderr
    return dict(entry.split("=", 1) for entry in result.stdout.split("\0") if "=" in entry)


def write_ubuntu_bashrc(home: Path) -> None:
    # Ubuntu's ~/.bashrc returns early for non-interactive shells; what setup appends must still be read.
    (home / ".bashrc").write_text("case $- in\n    *i*) ;;\n      *) return;;\nesac\nHISTCONTROL=ignoreboth\n")


def evaluate_in_bash(expression: str) -> str:
    """The value a node's shell gives a double-quoted word such as `$(hostname -I | awk '{print $1}')`."""
    return subprocess.run(
        ["bash", "-c", f'echo "{expression}"'], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@pytest.fixture(scope="module")
def raw_config() -> dict[str, Any]:
    return load_cluster_yaml()


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return prepared_cluster_config()


@pytest.fixture(scope="module")
def settings(raw_config: dict[str, Any]) -> dict[str, Any]:
    return raw_config["metadata"]["settings"]


@pytest.fixture(scope="module")
def head_type(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"][config["head_node_type"]]


@pytest.fixture(scope="module")
def gpu_worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"] and node_type["resources"].get("GPU", 0) > 0
    }


def test_cluster_yaml_passes_rays_validation_and_default_filling(config: dict[str, Any]) -> None:
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    # prepare_config merged the common setup commands in front of each node kind's own.
    assert config["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert config["worker_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]


def test_rays_validation_rejects_a_misspelt_key(raw_config: dict[str, Any]) -> None:
    misspelt = copy.deepcopy(raw_config)
    misspelt["head_start_ray_command"] = misspelt.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(misspelt))


def test_settings_block_feeds_the_provider_and_node_types(
    config: dict[str, Any], settings: dict[str, Any], head_type: dict[str, Any], gpu_worker_types: dict
) -> None:
    assert config["provider"]["region"] == settings["region"]
    assert head_type["node_config"]["InstanceType"] == settings["head_instance_type"]
    assert [node["node_config"]["InstanceType"] for node in gpu_worker_types.values()] == [
        settings["gpu_instance_type"]
    ]
    assert config["max_workers"] == settings["max_gpu_workers"]


def test_gpu_workers_scale_from_zero_and_are_released_when_idle(
    config: dict[str, Any], gpu_worker_types: dict[str, dict[str, Any]]
) -> None:
    assert gpu_worker_types, "no worker node type declares a GPU"
    for name, node_type in gpu_worker_types.items():
        assert node_type["min_workers"] == 0, name
        assert 0 < node_type["max_workers"] <= config["max_workers"], name
        assert node_type["resources"]["GPU"] >= 1, name
        assert node_type["resources"].get("CPU", 0) >= 1, name
        assert GPU_INSTANCE_FAMILY.match(node_type["node_config"]["InstanceType"]), name
    assert config["idle_timeout_minutes"] > 0


def test_head_has_no_gpu_and_takes_no_trials(head_type: dict[str, Any]) -> None:
    assert head_type["resources"].get("GPU", 0) == 0
    assert head_type["resources"].get("CPU") == 0
    assert not GPU_INSTANCE_FAMILY.match(head_type["node_config"]["InstanceType"])
    assert head_type["max_workers"] == 0


def test_ray_is_started_from_the_projects_venv(config: dict[str, Any]) -> None:
    assert_ray_is_started_from_the_projects_venv(config)


def assert_ray_is_started_from_the_projects_venv(config: dict[str, Any]) -> None:
    venv_ray = f"{PROJECT_MOUNT}/.venv/bin/ray"
    head_start = commands_containing(config["head_start_ray_commands"], "ray start")
    worker_start = commands_containing(config["worker_start_ray_commands"], "ray start")
    assert len(head_start) == 1 and len(worker_start) == 1
    assert f"{venv_ray} start --head" in head_start[0]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start[0]
    assert f"{venv_ray} start --address=$RAY_HEAD_IP:6379" in worker_start[0]
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        for word in re.findall(r"\S*\bray (?:start|stop)\b", command):
            assert word.startswith(venv_ray), f"not the venv's ray: {command}"


def test_working_tree_is_pushed_and_installed_like_the_readme(config: dict[str, Any]) -> None:
    assert config["file_mounts"] == {PROJECT_MOUNT: "."}
    assert (
        f"cd {PROJECT_MOUNT} && python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" in config["setup_commands"]
    )
    installs = commands_containing(config["setup_commands"], "pip install")
    assert any("ray[default]" in command and "boto3" in command for command in installs)


def test_local_venv_and_data_are_not_pushed(config: dict[str, Any]) -> None:
    assert ".gitignore" in config["rsync_filter"]
    ignored = (REPOSITORY_ROOT / ".gitignore").read_text().split()
    assert ".venv/" in ignored or ".venv" in ignored
    assert any(pattern.strip("/") == "data" for pattern in ignored)


def test_data_is_copied_from_the_bucket_once_per_node(config: dict[str, Any], settings: dict[str, Any]) -> None:
    copies = commands_containing(config["setup_commands"], "s3 sync")
    assert len(copies) == 1
    guard = re.fullmatch(r"test -f (\S+) \|\| \((.*) && touch (\S+)\)", copies[0])
    assert guard, copies[0]
    assert guard.group(1) == guard.group(3), "the marker checked is not the marker written"
    assert guard.group(2).endswith(f"aws s3 sync s3://{settings['bucket']}/data ~/data")


def test_mlflow_server_runs_on_the_head_with_a_database_and_s3_artifacts(
    config: dict[str, Any], settings: dict[str, Any]
) -> None:
    command = mlflow_server_command_from_cluster_yaml()
    assert command[0] == f"/home/ubuntu/{PROJECT_MOUNT.removeprefix('~/')}/.venv/bin/mlflow"
    assert re.fullmatch(r"sqlite:////\S+\.db|postgresql(\+\w+)?://\S+", option_value(command, "--backend-store-uri"))
    assert option_value(command, "--artifacts-destination") == f"s3://{settings['bucket']}/mlflow-artifacts"
    assert "--serve-artifacts" in command
    assert option_value(command, "--port") == MLFLOW_PORT
    # Started in the background, as a service that outlives the SSH session of `ray up`.
    start = commands_containing(config["head_start_ray_commands"], "mlflow server")[0]
    assert start.startswith("sudo systemd-run --unit=")
    worker_commands = config["worker_setup_commands"] + config["worker_start_ray_commands"]
    assert not commands_containing(worker_commands, "mlflow server")


def test_mlflow_listens_on_the_private_address_the_trials_use(config: dict[str, Any]) -> None:
    host = option_value(mlflow_server_command_from_cluster_yaml(), "--host")
    assert host not in UNSPECIFIED_ADDRESSES
    assert host not in {"localhost", "127.0.0.1"}, "the workers could not reach it"
    address = ipaddress.ip_address(evaluate_in_bash(host))
    assert not address.is_unspecified and not address.is_loopback
    head_uri = commands_containing(config["head_setup_commands"], "CLMLF_TRACKING_URI=")
    assert len(head_uri) == 1
    assert f"CLMLF_TRACKING_URI=http://{host}:{MLFLOW_PORT}" in head_uri[0]
    worker_uri = [c for c in config["worker_setup_commands"] if c not in config["setup_commands"]]
    assert any(f"CLMLF_TRACKING_URI=http://$RAY_HEAD_IP:{MLFLOW_PORT}" in command for command in worker_uri)


def test_local_relay_for_port_forwarding_binds_only_to_loopback(config: dict[str, Any]) -> None:
    relays = commands_containing(config["head_start_ray_commands"], "socat")
    assert len(relays) == 1
    assert f"TCP-LISTEN:{MLFLOW_PORT},bind=127.0.0.1," in relays[0]


def test_mlflow_command_is_accepted_by_the_installed_mlflow(tmp_path: Path) -> None:
    from mlflow.cli import server

    command = mlflow_server_command_from_cluster_yaml(
        executable="mlflow",
        host="127.0.0.1",
        port=5123,
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
    )
    assert command[:2] == ["mlflow", "server"]
    context = server.make_context("mlflow server", command[2:])
    assert context.params["host"] == "127.0.0.1"
    assert context.params["port"] == 5123
    assert context.params["backend_store_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert context.params["artifacts_destination"] == str(tmp_path / "artifacts")
    assert context.params["serve_artifacts"] is True


def test_mlflow_command_helper_names_the_file_when_an_option_is_missing(tmp_path: Path) -> None:
    without_host = load_cluster_yaml()
    without_host["head_start_ray_commands"] = [
        re.sub(r' --host "[^"]*"', "", command) for command in without_host["head_start_ray_commands"]
    ]
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(yaml.safe_dump(without_host))
    with pytest.raises(ValueError, match=r"cluster\.yaml.*--host"):
        mlflow_server_command_from_cluster_yaml(host="127.0.0.1", cluster_yaml=cluster_yaml)


def worker_environment_after_setup(config: dict[str, Any], home: Path, head_ip: str) -> dict[str, str]:
    """The environment of a command Ray runs on a worker after its setup commands wrote the environment file (run
    twice: `ray up` reruns setup after a config change)."""
    write_ubuntu_bashrc(home)
    writes = with_head_node_ip(commands_containing(config["worker_setup_commands"], ENVIRONMENT_FILE), head_ip)
    for _ in range(2):
        for command in writes:
            result = run_like_ray(command, home)
            assert result.returncode == 0, f"{command}\n{result.stderr}"
    return node_environment(home)


def test_worker_environment_reaches_the_commands_ray_runs_later(
    config: dict[str, Any], settings: dict[str, Any], tmp_path: Path
) -> None:
    environment = worker_environment_after_setup(config, tmp_path, "10.0.3.7")
    assert environment["CLMLF_TRACKING_URI"] == f"http://10.0.3.7:{MLFLOW_PORT}"
    assert environment["CLMLF_STORAGE_PATH"] == f"s3://{settings['bucket']}/tune"
    assert environment["CLMLF_RAY_ADDRESS"] == "auto"
    assert environment["CLMLF_DATA_ROOT"] == str(tmp_path / "data")
    assert environment["PATH"].startswith(f"{tmp_path}/clmlf-studies/.venv/bin:")
    assert (tmp_path / ENVIRONMENT_FILE).read_text().count("CLMLF_TRACKING_URI") == 1
    assert (tmp_path / ".bashrc").read_text().count(ENVIRONMENT_FILE) == 1


def test_head_environment_points_at_its_own_private_address(config: dict[str, Any], tmp_path: Path) -> None:
    write_ubuntu_bashrc(tmp_path)
    for command in commands_containing(config["head_setup_commands"], ENVIRONMENT_FILE):
        result = run_like_ray(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    private_address = evaluate_in_bash(option_value(mlflow_server_command_from_cluster_yaml(), "--host"))
    environment = node_environment(tmp_path)
    assert environment["CLMLF_TRACKING_URI"] == f"http://{private_address}:{MLFLOW_PORT}"
    assert environment["CLMLF_RAY_ADDRESS"] == "auto"


def test_every_bucket_address_uses_the_settings_bucket(settings: dict[str, Any]) -> None:
    buckets = set(re.findall(r"s3://([^/\s'\"]+)", CLUSTER_YAML.read_text()))
    assert buckets == {settings["bucket"]}


def test_no_credentials_in_the_file(config: dict[str, Any]) -> None:
    assert_no_credentials(CLUSTER_YAML.read_text())
    assert "aws_credentials" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        profile_arn = node_type["node_config"]["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@/-]+", profile_arn), name


def assert_no_credentials(text: str) -> None:
    forbidden = [
        r"(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"aws_access_key_id",
        r"aws_secret_access_key",
        r"aws_session_token",
        r"secret",
        r"passw(?:or)?d",
        r"BEGIN [A-Z ]*PRIVATE KEY",
        r"ssh_private_key",
    ]
    for pattern in forbidden:
        assert not re.search(pattern, text, re.IGNORECASE), pattern


def test_security_group_adds_nothing_open_to_the_internet(config: dict[str, Any]) -> None:
    security_group = config["provider"]["security_group"]
    assert security_group["GroupName"]
    for rule in security_group.get("IpPermissions", []):
        world = {r["CidrIp"] for r in rule.get("IpRanges", [])} | {r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])}
        if world & {"0.0.0.0/0", "::/0"}:
            assert (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) == ("tcp", 22, 22), rule
    # A node type with its own groups would bypass the group Ray creates and its rules.
    for name, node_type in config["available_node_types"].items():
        assert "SecurityGroupIds" not in node_type["node_config"], name
        assert "NetworkInterfaces" not in node_type["node_config"], name


def test_effective_security_group_opens_only_ssh_to_the_internet(config: dict[str, Any]) -> None:
    pytest.importorskip("boto3", reason="Ray's AWS provider module needs boto3")
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    # The rules Ray's launcher gives a new group: its defaults plus provider.security_group.IpPermissions.
    rules = _create_default_inbound_rules({"sg-cluster"}, config["provider"]["security_group"].get("IpPermissions"))
    open_to_world = [
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"])
        for rule in rules
        if ({r["CidrIp"] for r in rule.get("IpRanges", [])} | {r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])})
        & {"0.0.0.0/0", "::/0"}
    ]
    assert open_to_world == [("tcp", 22, 22)]
    within_group = [rule for rule in rules if rule.get("UserIdGroupPairs")]
    assert within_group == [
        {"FromPort": -1, "ToPort": -1, "IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-cluster"}]}
    ]


def test_every_command_is_valid_bash(config: dict[str, Any]) -> None:
    assert_every_command_is_valid_bash(config)


def assert_every_command_is_valid_bash(config: dict[str, Any]) -> None:
    for command in all_commands(config):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


def test_the_cluster_docs_show_the_commands_cluster_yaml_runs(config: dict[str, Any]) -> None:
    docs = CLUSTER_DOCS.read_text()
    assert CLUSTER_DOCS_SECTION in docs
    section = docs.split(CLUSTER_DOCS_SECTION, 1)[1].split("\n## ", 1)[0]
    shown = [
        commands_containing(config["setup_commands"], "pip install -e")[0],
        commands_containing(config["setup_commands"], "s3 sync")[0],
        commands_containing(config["head_start_ray_commands"], "ray start")[0],
        commands_containing(config["head_start_ray_commands"], "mlflow server")[0],
    ]
    for command in shown:
        assert command in section, f"docs/clusters.md's AWS section does not show: {command}"
