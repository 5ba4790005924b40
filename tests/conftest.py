import os
import shutil
import signal

import pytest

from tests.hubharness import CHP, Hub
from tests.k8sapi import KubernetesAPI
from tests.processes import processes_with
from tests.sshd import SSHServer

# every answer of the four routes that any test receives through Hub.request is checked against
# the documented OpenAPI spec (docs/source/_static/rest-api.yml)
pytest_plugins = ["tests.rest_api_check"]


def pytest_configure(config):
    if not os.path.exists(CHP):
        raise pytest.UsageError(f"{CHP} is missing: run `make test` (it installs configurable-http-proxy)")


@pytest.fixture(scope="module")
async def hub(tmp_path_factory):
    """A real JupyterHub + configurable-http-proxy for this test module."""
    directory = tmp_path_factory.mktemp("hub")
    hub = Hub(directory)
    try:
        await hub.start()
        yield hub
    finally:
        await hub.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def no_leaks():
    """Tests add the marker prefixes of their servers' processes; any still alive afterwards fails the test."""
    markers = []
    yield markers
    leaked = {m: processes_with(m) for m in markers if m and processes_with(m)}
    for pids in leaked.values():  # keep the machine clean for the next test, then fail this one
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes left behind: {leaked}"


@pytest.fixture(scope="module")
async def sshd(tmp_path_factory):
    """A real OpenSSH sshd on loopback with its own host and client keys, for this test module."""
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def k8s_api():
    """The schema-validating Kubernetes API test server, for this test module."""
    server = KubernetesAPI()
    await server.start()
    yield server
    await server.stop()


def ssh_config(sshd, control_dir, cls="SimulatedRemoteSpawner"):
    """Hub config lines that point ``cls``'s tunnels at ``sshd``."""
    return f"""
c.{cls}.ssh_node = "127.0.0.1"
c.{cls}.ssh_port = {sshd.port}
c.{cls}.ssh_username = {sshd.user!r}
c.{cls}.ssh_key = {sshd.client_key!r}
c.{cls}.ssh_known_hosts = {sshd.known_hosts!r}
c.{cls}.ssh_control_dir = {control_dir!r}
c.{cls}.ssh_master_idle_timeout = 0
"""
