"""The server → hub tunnel in the original package's "command" convention, against a real sshd."""

import os

import pytest

from forwardbasespawner.ssh.openssh import TunnelError
from tests.test_spawner_unit import make

pytestmark = pytest.mark.slow


@pytest.fixture
def node_script(tmp_path, sshd):
    """A forced command that records its calls and answers start with the configured exit code."""
    calls = tmp_path / "calls"
    script = tmp_path / "hub-tunnel"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$SSH_ORIGINAL_COMMAND" >> {calls}\n'
        f'case "$SSH_ORIGINAL_COMMAND" in start*) echo "no route to the hub" >&2; exit $(cat {tmp_path}/code);; esac\n'
    )
    script.chmod(0o755)
    (tmp_path / "code").write_text("217")
    key = sshd.add_forced_command_key(f"forced-{tmp_path.name}", str(script))
    return key, calls, tmp_path / "code"


def spawner_for(sshd, key):
    return make(
        ssh_create_remote_forward=True, ssh_remote_forward_mode="command", ssh_remote_node="127.0.0.1",
        ssh_remote_port=sshd.port, ssh_remote_username=sshd.user, ssh_remote_key=key,
        ssh_known_hosts=sshd.known_hosts,
    )  # fmt: skip


async def test_start_and_stop_run_on_the_node(sshd, node_script):
    key, calls, _ = node_script
    spawner = spawner_for(sshd, key)
    await spawner.start()
    assert calls.read_text().split("\n")[:1] == [f"start {spawner.start_id}"]
    start_id = spawner.start_id
    await spawner.stop()
    assert calls.read_text().splitlines() == [f"start {start_id}", f"stop {start_id}"]


async def test_another_exit_code_fails_the_start_with_the_nodes_reason(sshd, node_script):
    key, calls, code = node_script
    code.write_text("1")
    spawner = spawner_for(sshd, key)
    with pytest.raises(TunnelError, match="no route to the hub"):
        await spawner.start()
    assert "no route to the hub" in spawner.events[-1]["message"]
    await spawner.stop()
    assert calls.read_text().splitlines()[-1].startswith("stop ")
    assert os.path.exists(key)
