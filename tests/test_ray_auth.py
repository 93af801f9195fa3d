"""Ray's token authentication as the cluster setups turn it on (RAY_AUTH_MODE=token on every node and client, one
token per cluster): a real `ray start --head` with its token in ~/.ray/auth_token, as `ray up` places it, refuses a
client that brings no token or another one, and accepts one that brings it, from ~/.ray/auth_token (the `ray up`
setups) or from the environment (the SLURM job).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, start_logged, stop_process_group
from test_slurm import processes_using

VENV_BIN = Path(sys.executable).parent
HEAD_START_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 60
# What the GCS answers a client without the right token, as the client logs it.
REFUSAL = "Authentication token is missing or incorrect"
CONNECTED = "connected and ran a task"
CLIENT = f"""
import sys
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
print("{CONNECTED}")
"""
AUTHENTICATION_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


@dataclass(frozen=True)
class AuthenticatedHead:
    address: str
    token: str


def base_environment(home: Path) -> dict[str, str]:
    """This process's environment without any Ray authentication setting, with `home` as HOME (where Ray looks for
    ~/.ray/auth_token)."""
    environment = {key: value for key, value in os.environ.items() if key not in AUTHENTICATION_VARIABLES}
    return {**environment, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def write_token(home: Path, token: str) -> Path:
    token_file = home / ".ray" / "auth_token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token)
    token_file.chmod(0o600)
    return token_file


@pytest.fixture(scope="module")
def authenticated_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthenticatedHead]:
    """`ray start --head --block` on this machine with free ports, its own temp dir and its own HOME holding the
    token, in its own process group; stopped by signalling that group (`ray stop` would stop every Ray here)."""
    folder = tmp_path_factory.mktemp("authenticated-head")
    home = folder / "home"
    token = secrets.token_hex(32)
    write_token(home, token)
    # Unix sockets live in Ray's temp dir, and their paths are short: pytest's tmp_path is too long for it.
    ray_temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp}",
        "--num-cpus=1", "--object-store-memory=100000000", "--include-dashboard=false",
        f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
    ]  # fmt: skip
    log_path = folder / "head.log"
    # No draining on SIGTERM: the node has nothing to hand over, and draining waits up to 30 s.
    environment = {**base_environment(home), "RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    head = start_logged(command, log_path, environment)
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while "This command will now block" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield AuthenticatedHead(address=f"127.0.0.1:{port}", token=token)
    finally:
        stop_process_group(head)
        assert processes_using(str(ray_temp)) == [], "the Ray head outlived its process group"
        # Ray's logs and session files, of the head and of the clients, never hold the token.
        leaked = [path for path in ray_temp.rglob("*") if path.is_file() and token.encode() in path.read_bytes()]
        shutil.rmtree(ray_temp, ignore_errors=True)
        assert leaked == [], leaked


def run_client(head: AuthenticatedHead, home: Path, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A driver process joining the head by its address, with `home` as HOME and `variables` on top; a refused one
    gives up after two tries instead of twenty."""
    home.mkdir(parents=True, exist_ok=True)
    environment = {**base_environment(home), "RAY_gcs_server_port_wait_time_s": "2", **variables}
    return subprocess.run(
        [sys.executable, "-c", CLIENT, head.address],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


def assert_refused(client: subprocess.CompletedProcess[str]) -> None:
    assert client.returncode != 0
    assert CONNECTED not in client.stdout
    assert REFUSAL in client.stderr, client.stderr[-3000:]


def assert_accepted(client: subprocess.CompletedProcess[str]) -> None:
    assert client.returncode == 0, client.stderr[-3000:]
    assert CONNECTED in client.stdout


@pytest.mark.slow
def test_a_client_without_authentication_is_refused(authenticated_head: AuthenticatedHead, tmp_path: Path) -> None:
    assert_refused(run_client(authenticated_head, tmp_path / "home", {"RAY_AUTH_MODE": "disabled"}))


@pytest.mark.slow
def test_a_client_with_another_token_is_refused(authenticated_head: AuthenticatedHead, tmp_path: Path) -> None:
    other_token = secrets.token_hex(32)
    assert other_token != authenticated_head.token
    variables = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": other_token}
    assert_refused(run_client(authenticated_head, tmp_path / "home", variables))


@pytest.mark.slow
def test_a_client_with_the_token_in_its_environment_is_accepted(
    authenticated_head: AuthenticatedHead, tmp_path: Path
) -> None:
    variables = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": authenticated_head.token}
    assert_accepted(run_client(authenticated_head, tmp_path / "home", variables))


@pytest.mark.slow
def test_a_client_with_the_token_in_its_home_is_accepted_only_with_token_mode_on(
    authenticated_head: AuthenticatedHead, tmp_path: Path
) -> None:
    """The token file alone is not enough for a driver that names the head's address: the cluster setups also set
    RAY_AUTH_MODE=token for every command on the nodes."""
    home = tmp_path / "home"
    write_token(home, authenticated_head.token)
    assert_refused(run_client(authenticated_head, home, {}))
    assert_accepted(run_client(authenticated_head, home, {"RAY_AUTH_MODE": "token"}))
