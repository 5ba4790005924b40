"""Tunnels on a real Hub: servers reached only through OpenSSH forwards via a real sshd."""

import asyncio
import contextlib
import os
import secrets
import signal

import aiohttp
import pytest

from forwardbasespawner.ssh.ports import port_is_free
from tests.conftest import ssh_config
from tests.hubharness import running_hub, server_token
from tests.processes import process_alive, processes_with, ssh_masters, ssh_processes

pytestmark = pytest.mark.slow
NODE_WATCHER_TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd):
    directory = tmp_path_factory.mktemp("hub")
    control = f"{directory}/ctl"
    config = (
        ssh_config(sshd, control)
        + f"""
c.SimulatedRemoteSpawner.ssh_check_interval = 1
c.SimulatedRemoteSpawner.ssh_restore_attempts = 2
c.SimulatedRemoteSpawner.ssh_tunnel_grace = 8
c.SimulatedRemoteSpawner.ssh_adopt_grace = 5
c.SimulatedRemoteSpawner.ssh_during_startup = lambda spawner: bool((spawner.user_options or {{}}).get("tunnel"))
c.SimulatedRemoteSpawner.setuptunnel_allowed_nodes = ["127.0.0.1", "127.0.0.2"]  # nothing listens on .2
c.SimulatedRemoteSpawner.ssh_create_remote_forward = lambda spawner, info: bool((spawner.user_options or {{}}).get("hubtunnel"))
c.SimulatedRemoteSpawner.ssh_remote_node = "127.0.0.1"
c.SimulatedRemoteSpawner.ssh_remote_port = {sshd.port}
c.SimulatedRemoteSpawner.ssh_remote_username = {sshd.user!r}
c.SimulatedRemoteSpawner.ssh_remote_key = {sshd.client_key!r}
c.Spawner.poll_interval = 1
c.JupyterHub.custom_scopes = {{"custom:sshnode:restart": {{"description": "rebuild the tunnels through a node"}}}}
c.JupyterHub.services.append({{"name": "node-watcher", "api_token": {NODE_WATCHER_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "node-watcher", "scopes": ["custom:sshnode:restart"], "services": ["node-watcher"]}})
"""
    )
    async with running_hub(directory, config) as hub:
        yield hub


async def answers_through_proxy(hub, user, server):
    try:
        async with hub.session.get(f"{hub.url}/user/{user}/{server}/probe", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200 and (await r.json())["marker"].startswith(f"fbs-sim-{user}-{server}-")
    except (aiohttp.ClientError, asyncio.TimeoutError):  # e.g. a hung master: connected, never answered
        return False


async def stop(hub, user, server):
    await hub.request("DELETE", f"/users/{user}/servers/{server}")
    await hub.wait_stopped(user, server)


async def test_tunnel_during_start_then_nothing_left(hub, no_leaks):
    no_leaks.append("fbs-sim-ann-t1-")
    await hub.spawn("ann", "t1", {"tunnel": True})
    model = await hub.wait_ready("ann", "t1")
    state = model["state"]
    assert state["tunnel_open"] and state["tunnel_node"] == "127.0.0.1"
    backend_port = int(state["port_forward_info"]["service"].rsplit(":", 1)[1])
    assert state["custom_port"] != backend_port  # the Hub talks to the forward, not the server
    assert await answers_through_proxy(hub, "ann", "t1")
    assert len(ssh_masters(hub.control_dir)) == 1
    async with hub.session.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.admin_token}"}) as r:
        metrics = await r.text()
    for line in (
        "forwardbasespawner_ssh_masters_up 1.0",
        "forwardbasespawner_ssh_forwards_wanted 1.0",
        "forwardbasespawner_ssh_forwards_up 1.0",
        "forwardbasespawner_ssh_forward_setup_seconds_count",
    ):
        assert line in metrics, line
    await stop(hub, "ann", "t1")
    await hub.wait_for(lambda: asyncio.sleep(0, not ssh_processes(hub.control_dir)))

    # the master's socket, log and journal go right after its process (not in the same instant:
    # a check at once raced the removal, seen once in a full run)
    async def control_dir_empty():
        return not os.listdir(hub.control_dir)

    await hub.wait_for(control_dir_empty)


async def test_tunnel_later_through_setuptunnel(hub, no_leaks):
    no_leaks.append("fbs-sim-ann-t2-")
    await hub.spawn("ann", "t2", {"later": True, "events": 1})
    events = await hub.progress_events("ann", "t2")
    assert events[-1].get("ready") is True
    assert await answers_through_proxy(hub, "ann", "t2")
    await stop(hub, "ann", "t2")


async def test_hub_restart_adopts_the_masters_and_their_forwards(hub, no_leaks):
    no_leaks.append("fbs-sim-bea-")
    for server in ("r1", "r2"):
        await hub.spawn("bea", server, {"tunnel": True})
    for server in ("r1", "r2"):
        await hub.wait_ready("bea", server)
    before = ssh_masters(hub.control_dir)
    assert len(before) == 1
    await hub.restart_hub()  # SIGTERM: the master keeps serving, the new Hub adopts it
    for server in ("r1", "r2"):
        await hub.wait_ready("bea", server)
        assert await answers_through_proxy(hub, "bea", server)
    assert ssh_masters(hub.control_dir) == before  # the same master: adopted, not replaced
    assert await metric(hub, "forwardbasespawner_ssh_adoptions_total", outcome="forward") >= 2
    for server in ("r1", "r2"):
        await stop(hub, "bea", server)


async def metric(hub, name, **labels):
    """The sum of a Prometheus counter's samples on the Hub's /hub/metrics with these labels."""
    async with hub.session.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.admin_token}"}) as r:
        assert r.status == 200
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_killed_master_heals_without_an_api_call(hub, no_leaks):
    no_leaks.append("fbs-sim-cid-k-")
    await hub.spawn("cid", "k", {"tunnel": True})
    await hub.wait_ready("cid", "k")
    (pid,) = ssh_masters(hub.control_dir)
    os.kill(pid, 9)

    async def healed():
        return ssh_masters(hub.control_dir) not in ([], [pid]) and await answers_through_proxy(hub, "cid", "k")

    await hub.wait_for(healed)
    await stop(hub, "cid", "k")


async def test_node_restarted_api(hub, no_leaks):
    no_leaks.append("fbs-sim-dee-n-")
    await hub.spawn("dee", "n", {"tunnel": True, "system": "JUWELS"})
    await hub.wait_ready("dee", "n")
    (before,) = ssh_masters(hub.control_dir)
    alice = await hub.user_token("alice")
    status, reply = await hub.request("POST", "/recreateforward/127.0.0.1", token=alice)
    assert status == 403 and "custom:sshnode:restart" in reply["message"]
    status, reply = await hub.request("POST", "/recreateforward/bad;name", token=NODE_WATCHER_TOKEN)
    assert status == 400
    # a healthy master is left alone: a rebuild would cut every connection through it
    rebuilds = "forwardbasespawner_ssh_node_rebuilds_total"
    restores = await metric(hub, "forwardbasespawner_ssh_restores_total")
    left_alone = await metric(hub, rebuilds, node="127.0.0.1", outcome="left_alone")
    rebuilt = await metric(hub, rebuilds, node="127.0.0.1", outcome="rebuilt")
    status, reply = await hub.request("POST", "/recreateforward/127.0.0.1", token=NODE_WATCHER_TOKEN)
    assert status == 202 and reply["jump_hosts"] == ["127.0.0.1"]

    async def looked_at():  # the rebuild runs on after the answer
        return await metric(hub, rebuilds, node="127.0.0.1", outcome="left_alone") == left_alone + 1

    await hub.wait_for(looked_at)
    assert await metric(hub, rebuilds, node="127.0.0.1", outcome="rebuilt") == rebuilt
    assert process_alive(before), "the healthy master was replaced"
    assert await metric(hub, "forwardbasespawner_ssh_restores_total") == restores
    assert await answers_through_proxy(hub, "dee", "n")
    # a master that lost a forward (here: hung, so that its check fails) is rebuilt
    os.kill(before, signal.SIGSTOP)
    try:
        status, reply = await hub.request("POST", "/recreateforward/127.0.0.1", token=NODE_WATCHER_TOKEN)
        assert status == 202

        async def replaced():
            return ssh_masters(hub.control_dir) not in ([], [before]) and await answers_through_proxy(hub, "dee", "n")

        await hub.wait_for(replaced)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before, signal.SIGCONT)
    # old callers name the system, and use GET: with a token only, never a browser's cookie
    status, reply = await hub.request("GET", "/recreateforward/JUWELS", token=NODE_WATCHER_TOKEN)
    assert status == 202 and reply["jump_hosts"] == ["127.0.0.1"]
    await hub.wait_for(lambda: answers_through_proxy(hub, "dee", "n"))
    await stop(hub, "dee", "n")


CANARY = "/tmp/fbs-canary-must-not-exist"
HOSTILE_TUNNELS = [
    ({"service": f"127.0.0.1:22; touch {CANARY}"}, 400),
    ({"service": f"$(touch {CANARY}):80"}, 400),
    ({"service": f"`touch {CANARY}`:80"}, 400),
    ({"service": "127.0.0.1:80", "ssh_node": f"-oProxyCommand=touch {CANARY}"}, 400),
    ({"service": "127.0.0.1:80", "ssh_node": f"127.0.0.1 -oLocalCommand=touch {CANARY}"}, 400),
    ({"service": "127.0.0.1:80", "ssh_node": "evil.example.org"}, 403),
    ({"service": "127.0.0.1:80", "ssh_forward_options": {"ProxyCommand": f"touch {CANARY}"}}, 403),
    ({"service": "127.0.0.1:80", "ssh_key": "/etc/shadow"}, 403),
    ({"service": "127.0.0.1:80", "ssh_username": "root; touch x"}, 403),
    ({"service": "127.0.0.1:80", "ssh_port": 2222}, 403),
    ({"service": "127.0.0.1:80", "ProxyCommand": f"touch {CANARY}"}, 400),
    ({"service": "[::1:80"}, 400),
    ({"service": "::1:80"}, 400),
    ({"service": "127.0.0.1"}, 400),
    ({"service": "127.0.0.1:0"}, 400),
    ({"service": "127.0.0.1:99999"}, 400),
    ({"service": 8080}, 400),
    ({"service": "a" * 300 + ":80"}, 400),
    ({}, 400),
    (["127.0.0.1:80"], 400),
]


@pytest.mark.parametrize("body, expected", HOSTILE_TUNNELS)
async def test_hostile_setuptunnel_bodies(hub, tunnel_world, body, expected):
    status, reply = await hub.request("POST", "/users/setuptunnel/eve/w", token=tunnel_world, body=body)
    assert status == expected, reply
    assert isinstance(reply, dict) and reply["message"]
    assert not os.path.exists(CANARY)
    model = await hub.server_model("eve", "w")
    assert model["ready"], "a refused request must not disturb the server"


async def test_huge_setuptunnel_body_is_413(hub, tunnel_world):
    status, _ = await hub.request("POST", "/users/setuptunnel/eve/w", token=tunnel_world, data=b"{" + b" " * 20000 + b"}")
    assert status == 413


async def test_setuptunnel_authorization(hub, tunnel_world):
    eve = await hub.user_token("eve")
    status, _ = await hub.request("POST", "/users/setuptunnel/eve/w", token=eve, body={"service": "127.0.0.1:80"})
    assert status == 403
    mallory = await hub.user_token("mallory")
    status, _ = await hub.request("POST", "/users/setuptunnel/eve/w", token=mallory, body={"service": "127.0.0.1:80"})
    assert status == 404


@pytest.fixture(scope="module")
async def tunnel_world(hub):
    """eve's server "w", running without a tunnel; yields its own API token."""
    await hub.spawn("eve", "w", {})
    await hub.wait_ready("eve", "w")
    yield server_token("fbs-sim-eve-w-")
    await stop(hub, "eve", "w")
    assert processes_with("fbs-sim-eve-w-") == []


async def test_an_unreachable_node_ends_the_server_only_after_the_grace_period(hub, sshd, no_leaks):
    no_leaks.append("fbs-sim-fay-l-")
    await hub.spawn("fay", "l", {"tunnel": True})
    model = await hub.wait_ready("fay", "l")
    await sshd.stop()
    try:

        async def given_up_on_by_the_supervisor():
            return await metric(hub, "forwardbasespawner_ssh_forwards_failed") > 0

        await hub.wait_for(given_up_on_by_the_supervisor, timeout=60)
        # the tunnel is lost, but the server itself is not ended for that (ssh_tunnel_grace = 8)
        still = await hub.server_model("fay", "l")
        assert still["ready"] and not still["pending"] and still["started"] == model["started"]
        await hub.wait_for(lambda: hub.wait_stopped("fay", "l"), timeout=60)
        status, reply = await hub.request("GET", "/users/progress/events/fay/l")
        assert any("connection to the server was lost" in e.get("message", "") for e in reply["events"]), reply
        assert await metric(hub, "forwardbasespawner_tunnel_events_total", event="given_up") >= 1
        await hub.wait_for(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", model["state"]["custom_port"])))
    finally:
        await sshd.start()


async def test_server_reaches_the_hub_through_a_reverse_tunnel(hub, no_leaks):
    no_leaks.append("fbs-sim-gus-h-")
    await hub.spawn("gus", "h", {"tunnel": True, "hubtunnel": True, "events": 2})
    events = await hub.progress_events("gus", "h")
    assert [e["message"].split(": ", 1)[1] for e in events if "remote step" in e.get("message", "")] == [
        "remote step 1 of 2 via the hub tunnel", "remote step 2 of 2 via the hub tunnel",
    ]  # fmt: skip
    model = await hub.wait_ready("gus", "h")
    port = model["state"]["port_forward_info"]["remote"]["port"]
    assert model["state"]["remote_forward_open"] and not port_is_free("127.0.0.1", port)
    await hub.restart_hub()  # both tunnels come back, the reverse one on the same port
    model = await hub.wait_ready("gus", "h")
    assert model["state"]["port_forward_info"]["remote"]["port"] == port
    status, _ = await hub.request("POST", "/users/progress/events/gus/h", body={"message": "after restart"})
    assert status == 204
    await hub.wait_for(lambda: asyncio.sleep(0, not port_is_free("127.0.0.1", port)))
    await stop(hub, "gus", "h")
    await hub.wait_for(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", port)))


async def test_failed_setuptunnel_ends_the_spawn_with_a_reason(hub, no_leaks):
    no_leaks.append("fbs-sim-hal-q-")
    await hub.spawn("hal", "q", {"later": True, "quiet": True})
    await hub.wait_for(lambda: asyncio.sleep(0, processes_with("fbs-sim-hal-q-")))
    answers = []

    async def setup_tunnel():  # with the progress stream open, as the spawn page has it
        answers.append(await hub.request("POST", "/users/setuptunnel/hal/q", body={"service": "127.0.0.1:9", "ssh_node": "127.0.0.2"}))

    events = await asyncio.wait_for(hub.progress_events("hal", "q", on_open=setup_tunnel), 30)
    ((status, reply),) = answers
    assert status == 422 and "could not be set up" in reply["message"], reply
    assert events[-1]["failed"] is True
    assert any("tunnel to the server could not be set up" in e.get("message", "") for e in events)
    await hub.wait_stopped("hal", "q")


async def test_a_server_that_ends_by_itself_leaves_no_forward_and_its_stop_runs(hub, no_leaks):
    # JupyterHub's user.stop() polls first and skips spawner.stop() for a server that is gone:
    # only the base's poll() can remove the forward and run the subclass's _stop() (which here
    # kills the process group the remote "job" left: its start script's children)
    no_leaks.append("fbs-sim-ida-e-")
    await hub.spawn("ida", "e", {"tunnel": True})
    model = await hub.wait_ready("ida", "e")
    port = model["state"]["custom_port"]
    assert not port_is_free("127.0.0.1", port)
    (pid,) = processes_with("fbs-sim-ida-e-")
    os.kill(pid, 9)  # the job ends without the Hub's doing
    await hub.wait_stopped("ida", "e")
    await hub.wait_for(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", port)))
    status, reply = await hub.request("GET", "/users/progress/events/ida/e")
    assert reply["events"][-1]["failed"] is True and "has stopped" in reply["events"][-1]["message"], reply
