"""The server → hub tunnel in the original package's "command" convention, against a real sshd."""

import os

import pytest

from forwardbasespawner.ssh.openssh import TunnelError
from tests.standalone import make

pytestmark = pytest.mark.slow


@pytest.fixture
def node_script(tmp_path, sshd):
    """A forced command that records its calls and answers start with the configured exit code."""
    calls = tmp_path / "calls"
    script = tmp_path / "hub-tunnel"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$SSH_ORIGINAL_COMMAND" >> {calls}\n'
        f'case "$SSH_ORIGINAL_COMMAND" in start) sleep $(cat {tmp_path}/delay); echo "no route to the hub" >&2; exit $(cat {tmp_path}/code);;\n'
        f"  status) sleep $(cat {tmp_path}/status-delay); exit $(cat {tmp_path}/code);; esac\n"
    )
    script.chmod(0o755)
    (tmp_path / "code").write_text("217")
    (tmp_path / "delay").write_text("0")
    (tmp_path / "status-delay").write_text("0")
    key = sshd.add_forced_command_key(f"forced-{tmp_path.name}", str(script))
    return key, calls, tmp_path / "code"


def spawner_for(sshd, key):
    return make(
        ssh_create_remote_forward=True, ssh_remote_forward_mode="command", ssh_remote_node="127.0.0.1",
        ssh_remote_port=sshd.port, ssh_remote_username=sshd.user, ssh_remote_key=key,
        ssh_known_hosts=sshd.known_hosts,
    )  # fmt: skip


async def test_start_and_stop_run_on_the_node_as_the_original_ran_them(sshd, node_script):
    # forced-command scripts on jump nodes match the original's words literally: no arguments
    key, calls, _ = node_script
    spawner = spawner_for(sshd, key)
    await spawner.start()
    assert calls.read_text().splitlines() == ["start"]
    # the node's script makes its own tunnel: no port of ours goes into the state or the environment
    assert spawner.port_forward_info["remote"] == {} and "JUPYTERHUB_HUB_TUNNEL_PORT" not in spawner.get_env()
    await spawner.stop()
    assert calls.read_text().splitlines() == ["start", "stop"]


async def test_a_start_that_does_not_answer_in_time_is_followed_by_status(sshd, node_script, tmp_path):
    key, calls, _ = node_script
    (tmp_path / "delay").write_text("30")
    spawner = spawner_for(sshd, key)
    spawner.ssh_remote_command_timeout = 5  # 'status' gets as long: a whole ssh login on a loaded machine
    await spawner.start()  # status answers 217: the tunnel is up
    assert calls.read_text().splitlines() == ["start", "status"]
    await spawner.stop()


async def test_a_start_and_a_status_that_both_hang_fail_the_start_with_a_plain_reason(sshd, node_script, tmp_path):
    key, calls, _ = node_script
    (tmp_path / "delay").write_text("30")
    (tmp_path / "status-delay").write_text("30")
    spawner = spawner_for(sshd, key)
    spawner.ssh_remote_command_timeout = 2
    with pytest.raises(TunnelError, match="neither 'start' nor 'status'"):
        await spawner.start()
    assert calls.read_text().splitlines() == ["start", "status"]
    assert spawner.events[-1].get("failed") and "Traceback" not in spawner.events[-1]["message"]
    await spawner.stop()


async def test_another_exit_code_fails_the_start_with_the_nodes_reason(sshd, node_script):
    key, calls, code = node_script
    code.write_text("1")
    spawner = spawner_for(sshd, key)
    with pytest.raises(TunnelError, match="no route to the hub"):
        await spawner.start()
    # the node's own words go to the log, the user gets a plain reason
    assert "could not be set up" in spawner.events[-1]["message"]
    assert "no route to the hub" not in spawner.events[-1]["message"]
    await spawner.stop()
    assert calls.read_text().splitlines()[-1] == "stop"
    assert os.path.exists(key)
