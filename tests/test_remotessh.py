"""RemoteSSHSpawner's remote accounts: one per user by default, a shared one only when asked; the
start script is sent inline; ssh's failures do not reach users. Against a real sshd."""

import asyncio

import pytest

from forwardbasespawner.hooks import resolve
from forwardbasespawner.remotessh import RemoteSSHSpawner
from forwardbasespawner.ssh.spec import InvalidSpec
from tests import standalone


def make(name="alice", server="", **kwargs):
    return standalone.make(name, server, cls=RemoteSSHSpawner, remote_host="127.0.0.1", **kwargs)


async def test_each_user_has_their_own_account_by_default():
    assert await make("alice")._resolve_account() == ("alice", "")
    assert await make("bob")._resolve_account() == ("bob", "")
    spawner = make("carol", remote_username="jh-{username}", remote_key="/keys/{username}_ed25519")
    assert await spawner._resolve_account() == ("jh-carol", "/keys/carol_ed25519")
    # the tunnel logs in as the same account with the same key
    assert await resolve(spawner.ssh_username, spawner, {}) == "jh-carol"
    assert await resolve(spawner.ssh_key, spawner, {}) == "/keys/carol_ed25519"


async def test_a_shared_account_is_refused_unless_asked_for():
    with pytest.raises(InvalidSpec, match="remote_shared_account"):
        await make(remote_username="jupyter")._resolve_account()
    with pytest.raises(InvalidSpec, match="remote_shared_account"):
        await make(remote_username="")._resolve_account()
    assert await make(remote_username="jupyter", remote_shared_account=True)._resolve_account() == ("jupyter", "")


async def test_a_callable_decides_per_user():
    async def account(spawner):
        await asyncio.sleep(0)
        return f"u{spawner.user.id}"

    assert (await make(remote_username=account)._resolve_account())[0] == "u7"


@pytest.mark.parametrize("name", ["-oProxyCommand=x", "a b", "a;b", "a\n", "ü"])
async def test_user_names_that_are_no_account_are_refused(name):
    with pytest.raises(InvalidSpec):
        await make(name)._resolve_account()


async def test_relative_or_broken_key_templates_are_refused():
    with pytest.raises(InvalidSpec):
        await make(remote_key="keys/{username}")._resolve_account()
    with pytest.raises(InvalidSpec):
        await make(remote_key="/keys/{nope}")._resolve_account()


async def test_the_account_of_a_start_survives_a_hub_restart():
    spawner = make("dora")
    await spawner._resolve_account()
    spawner.remote_pid = 1234
    state = spawner.get_state()
    assert state["remote_account"] == ["dora", ""]
    again = make("dora")
    again.load_state(state)
    assert again._remote_account() == ("dora", "")


def test_the_default_start_command_needs_nothing_installed_remotely():
    argv = make()._start_argv()
    assert argv[:3] == ["python3", "-I", "-c"] and "forwardbasespawner" not in argv[3].split("'")[0]
    assert make(remote_start_command=["/opt/rs"])._start_argv() == ["/opt/rs"]


@pytest.mark.slow
async def test_a_server_starts_on_a_real_sshd_without_the_package_and_ssh_errors_stay_in_the_log(sshd, tmp_path, caplog):
    """Over a real sshd: status runs the inline script; a wrong key fails with a message that
    names no account or key, and the reason is in the log."""
    spawner = make(
        sshd.user, remote_port=sshd.port, remote_username="{username}", remote_key=sshd.client_key,
        ssh_known_hosts=sshd.known_hosts,
    )  # fmt: skip
    await spawner._resolve_account()
    code, out, err = await spawner._remote("status", "1")  # PID 1 always runs
    assert code == 0, err
    wrong = make(sshd.user, remote_port=sshd.port, remote_key=str(tmp_path / "nokey"), ssh_known_hosts=sshd.known_hosts)
    await wrong._resolve_account()
    with pytest.raises(RuntimeError) as e:
        await wrong._remote("status", "1")
    assert sshd.user not in str(e.value) and "nokey" not in str(e.value)
    assert any("nokey" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records)
