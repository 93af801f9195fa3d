"""cluster.yaml against Ray's own checks (the ones `ray up` runs before it talks to AWS) and against what the
studies need on a cluster: GPU workers scaled from zero, MLflow on the head's loopback address with a database and
S3 artifacts, the CLMLF_* defaults in every node's environment, no credentials. And against who else can reach it:
Ray's token authentication on every node, with the token from outside the repository; the dashboard and Ray's client
server for the head alone; a cluster and a security group named for their user, the group opening SSH to the
addresses that user gives and nothing else.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
import subprocess
import textwrap
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
from ray.scripts.scripts import start as ray_start

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPOSITORY_ROOT / "cluster.yaml"
CLUSTER_DOCS = REPOSITORY_ROOT / "docs" / "clusters.md"
CLUSTER_DOCS_SECTION = "## AWS"
PROJECT_MOUNT = "~/clmlf-studies"
ENVIRONMENT_FILE = "clmlf-cluster.env"
MLFLOW_PORT = "5000"
LOOPBACK = "127.0.0.1"
# Ray's token, where `ray get-auth-token --generate` writes it and where Ray looks for it on every node.
RAY_TOKEN_FILE = "~/.ray/auth_token"
RAY_CLIENT_SERVER_PORT = "10001"
CLUSTER_NAME_PREFIX = "clmlf-studies-"
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
    venv's mlflow, the host, the port, the SQLite file, the S3 destination), so a test
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
    assert config["cluster_name"] == settings["cluster_name"]
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
    assert config["file_mounts"][PROJECT_MOUNT] == "."
    assert set(config["file_mounts"]) == {PROJECT_MOUNT, RAY_TOKEN_FILE}
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


def test_mlflow_listens_on_the_heads_loopback_address_only(config: dict[str, Any]) -> None:
    """The study driver on the head is MLflow's only client (trials never talk to it), so nothing but the head and
    SSH port forwarding (`ray attach -p 5000`, which ends at the head's loopback address) may reach it."""
    assert_mlflow_is_for_the_head_alone(config, mlflow_server_command_from_cluster_yaml())


def assert_mlflow_is_for_the_head_alone(config: dict[str, Any], server_command: list[str]) -> None:
    assert option_value(server_command, "--host") == LOOPBACK
    head_uri = commands_containing(config["head_setup_commands"], "CLMLF_TRACKING_URI=")
    assert len(head_uri) == 1
    assert f"CLMLF_TRACKING_URI=http://{LOOPBACK}:{MLFLOW_PORT}" in head_uri[0]
    worker_commands = [c for c in config["worker_setup_commands"] if c not in config["setup_commands"]]
    assert not commands_containing(worker_commands, "CLMLF_TRACKING_URI"), "workers cannot reach the head's loopback"


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
        re.sub(r" --host \S+", "", command) for command in without_host["head_start_ray_commands"]
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
    assert "CLMLF_TRACKING_URI" not in environment
    assert environment["RAY_AUTH_MODE"] == "token"
    assert environment["CLMLF_STORAGE_PATH"] == f"s3://{settings['bucket']}/tune"
    assert environment["CLMLF_RAY_ADDRESS"] == "auto"
    assert environment["CLMLF_DATA_ROOT"] == str(tmp_path / "data")
    assert environment["PATH"].startswith(f"{tmp_path}/clmlf-studies/.venv/bin:")
    assert (tmp_path / ENVIRONMENT_FILE).read_text().count("RAY_AUTH_MODE") == 1
    assert (tmp_path / ".bashrc").read_text().count(ENVIRONMENT_FILE) == 1


def test_head_environment_points_at_its_own_mlflow_with_token_authentication(
    config: dict[str, Any], tmp_path: Path
) -> None:
    write_ubuntu_bashrc(tmp_path)
    for command in commands_containing(config["head_setup_commands"], ENVIRONMENT_FILE):
        result = run_like_ray(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    environment = node_environment(tmp_path)
    assert environment["CLMLF_TRACKING_URI"] == f"http://{LOOPBACK}:{MLFLOW_PORT}"
    assert environment["CLMLF_RAY_ADDRESS"] == "auto"
    assert environment["RAY_AUTH_MODE"] == "token"


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
        # A secret or password written out; the files only name where one comes from ($variable, "$(command)").
        r"secret\w*\s*[:=]\s*[\"']?(?![\"'$])\S",
        r"passw(?:or)?d\w*\s*[:=]\s*[\"']?(?![\"'$])\S",
        r"BEGIN [A-Z ]*PRIVATE KEY",
        r"ssh_private_key",
    ]
    for pattern in forbidden:
        assert not re.search(pattern, text, re.IGNORECASE), pattern


def test_every_node_joins_the_users_own_security_group(config: dict[str, Any], settings: dict[str, Any]) -> None:
    assert re.fullmatch(r"sg-[\w-]+", settings["security_group_id"])
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == [settings["security_group_id"]], name
        assert "NetworkInterfaces" not in node_type["node_config"], name
    # A group that Ray's launcher makes opens SSH to 0.0.0.0/0, whatever the file says: it must make none.
    assert "security_group" not in config["provider"]


def test_rays_launcher_makes_and_changes_no_security_group(config: dict[str, Any]) -> None:
    pytest.importorskip("boto3", reason="Ray's AWS provider module needs boto3")
    from ray.autoscaler._private.aws.config import _configure_security_group

    # The step of `ray up` that would create a group (and open SSH to the world in it) calls AWS only for node types
    # without their own groups; with every node in the user's group it returns the config as it was.
    assert _configure_security_group(copy.deepcopy(config)) == config


def test_the_cluster_name_is_the_users(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """`ray down` ends every node tagged with the cluster's name: a name shared by colleagues in one account would let
    one end another's cluster."""
    assert config["cluster_name"].startswith(CLUSTER_NAME_PREFIX)
    assert len(config["cluster_name"]) > len(CLUSTER_NAME_PREFIX)
    assert re.fullmatch(r"[A-Za-z0-9][\w.-]*", config["cluster_name"])


FAKE_AWS = """#!/usr/bin/env bash
printf '%s\\n' "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@")" >> "$AWS_CALLS"
case "$2" in create-security-group) echo sg-0123456789abcdef0 ;; esac
"""


# What cluster.yaml holds until its user runs the docs' commands.
SETTINGS_PLACEHOLDERS = {"cluster_name": "clmlf-studies-YOUR-NAME", "security_group_id": "sg-REPLACE-WITH-YOUR-GROUP"}


def test_the_docs_make_the_users_group_with_ssh_from_the_users_addresses(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    """The docs' commands that make the security group and write it and the cluster name into cluster.yaml, run
    against a copy of the file as it is shipped, with a recording stand-in for the AWS CLI (the one thing that cannot
    run here)."""
    section = docs_section(CLUSTER_DOCS_SECTION)
    blocks = [
        block for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL) if "create-security-group" in block
    ]
    assert len(blocks) == 1, "docs/clusters.md's AWS section has no single block that makes the security group"
    # The user fills in their addresses; 192.0.2.0/24 is a documentation range.
    block = textwrap.dedent(blocks[0])
    script = re.sub(r"^ssh_cidr=.*$", "ssh_cidr=192.0.2.0/24", block, flags=re.MULTILINE)
    assert script != block, "the block does not set ssh_cidr"
    (tmp_path / "bin").mkdir()
    fake_aws = tmp_path / "bin" / "aws"
    fake_aws.write_text(FAKE_AWS)
    fake_aws.chmod(0o755)
    shipped = CLUSTER_YAML.read_text()
    for key, placeholder in SETTINGS_PLACEHOLDERS.items():
        shipped = shipped.replace(f"&{key} {settings[key]}", f"&{key} {placeholder}")
    (tmp_path / "cluster.yaml").write_text(shipped)
    environment = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "USER": "alice",
        "AWS_CALLS": str(tmp_path / "calls.jsonl"),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    created = [call for call in calls if call[:2] == ["ec2", "create-security-group"]]
    assert len(created) == 1
    assert option_value(created[0], "--group-name") == f"{CLUSTER_NAME_PREFIX}alice"
    ingress = [call for call in calls if call[:2] == ["ec2", "authorize-security-group-ingress"]]
    rules = sorted(
        (option_value(call, "--protocol"), "--port" in call and option_value(call, "--port")) for call in ingress
    )
    assert rules == [("all", False), ("tcp", "22")], ingress
    for call in ingress:
        assert option_value(call, "--group-id") == "sg-0123456789abcdef0"
        if "--cidr" in call:
            assert option_value(call, "--cidr") == "192.0.2.0/24"
        else:
            assert option_value(call, "--source-group") == "sg-0123456789abcdef0", "not the group's own members"
    edited = prepared_cluster_config(tmp_path / "cluster.yaml")
    assert edited["cluster_name"] == f"{CLUSTER_NAME_PREFIX}alice"
    for node_type in edited["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"]


def test_ray_runs_with_token_authentication_from_a_token_outside_the_repository(config: dict[str, Any]) -> None:
    assert_ray_token_reaches_every_node(config)


def assert_ray_token_reaches_every_node(config: dict[str, Any]) -> None:
    """The token file travels as a file mount (to the head from the user's machine, to the workers from the head);
    its source is outside the repository, so no push or commit takes it along."""
    assert config["file_mounts"][RAY_TOKEN_FILE] == RAY_TOKEN_FILE
    source = Path(RAY_TOKEN_FILE).expanduser().resolve()
    assert not source.is_relative_to(REPOSITORY_ROOT)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert not [path for path in tracked if "auth_token" in path]
    environment_writes = commands_containing(config["setup_commands"], ENVIRONMENT_FILE)
    assert any("'export RAY_AUTH_MODE=token'" in command for command in environment_writes)


def test_setup_stops_without_the_token_and_keeps_it_private(config: dict[str, Any], tmp_path: Path) -> None:
    assert_setup_checks_the_token(config, tmp_path)


def assert_setup_checks_the_token(config: dict[str, Any], home: Path) -> None:
    checks = commands_containing(config["setup_commands"], "auth_token")
    assert len(checks) == 1
    assert config["setup_commands"].index(checks[0]) == 0, "the token is checked before anything is installed"
    missing = run_like_ray(checks[0], home)
    assert missing.returncode != 0
    assert "ray get-auth-token --generate" in missing.stderr
    token_file = home / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text("0123456789abcdef" * 4)
    token_file.chmod(0o644)
    present = run_like_ray(checks[0], home)
    assert present.returncode == 0, present.stderr
    assert token_file.stat().st_mode & 0o777 == 0o600


def ray_start_parameters(command: str) -> dict[str, Any]:
    """The options of the `ray start` in a start command, as Ray's own command line parses them."""
    arguments = shlex.split(command)
    start = next(i for i, word in enumerate(arguments[:-1]) if word.endswith("/ray") and arguments[i + 1] == "start")
    words = list(itertools.takewhile(lambda word: word not in SHELL_OPERATORS, arguments[start + 2 :]))
    return ray_start.make_context("ray start", words).params


def test_dashboard_and_client_server_are_for_the_head_alone(config: dict[str, Any]) -> None:
    assert_dashboard_and_client_server_are_for_the_head_alone(config, firewall_required=True)


def assert_dashboard_and_client_server_are_for_the_head_alone(config: dict[str, Any], firewall_required: bool) -> None:
    """The dashboard (with its job API) on loopback, where `ray dashboard` forwards; the client server, which Ray
    always binds to the node's address, behind a firewall rule that admits only the head itself, set before Ray
    starts."""
    commands = config["head_start_ray_commands"]
    head_start = commands_containing(commands, "ray start")[0]
    parameters = ray_start_parameters(head_start)
    assert parameters["dashboard_host"] == LOOPBACK
    assert parameters["ray_client_server_port"] == int(RAY_CLIENT_SERVER_PORT)
    rules = commands_containing(commands, "iptables")
    assert len(rules) == 1 and commands.index(rules[0]) < commands.index(head_start)
    rule = f"iptables -I INPUT -p tcp --dport {RAY_CLIENT_SERVER_PORT} ! -i lo -j REJECT"
    assert rule in rules[0]
    assert ("||" in rules[0].split(rule)[1]) is not firewall_required, "a missing rule must fail `ray up` here"


def test_every_command_is_valid_bash(config: dict[str, Any]) -> None:
    assert_every_command_is_valid_bash(config)


def assert_every_command_is_valid_bash(config: dict[str, Any]) -> None:
    for command in all_commands(config):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


def docs_section(heading: str) -> str:
    docs = CLUSTER_DOCS.read_text()
    assert heading in docs
    return docs.split(heading, 1)[1].split("\n## ", 1)[0]


def test_the_cluster_docs_show_the_commands_cluster_yaml_runs(config: dict[str, Any]) -> None:
    section = docs_section(CLUSTER_DOCS_SECTION)
    shown = [
        commands_containing(config["setup_commands"], "pip install -e")[0],
        commands_containing(config["setup_commands"], "s3 sync")[0],
        commands_containing(config["head_start_ray_commands"], "ray start")[0],
        commands_containing(config["head_start_ray_commands"], "mlflow server")[0],
    ]
    for command in shown:
        assert command in section, f"docs/clusters.md's AWS section does not show: {command}"
