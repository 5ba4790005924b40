"""A Hub restart of every kind never costs a user their server or its reachability.

Ten servers reached only through SSH forwards via a real sshd. The Hub is restarted with SIGTERM,
killed with SIGKILL (a crash), and restarted as a new container would be (every ssh process of
the Hub gone and its control directory wiped), while every server is probed through the proxy
every 0.1 s, from before the Hub goes down until 30 s after the new Hub is ready.
"""

import asyncio
import os
import shutil
import signal
import time

import aiohttp
import pytest

from tests.conftest import ssh_config
from tests.hubharness import running_hub
from tests.probing import Prober
from tests.processes import process_alive, processes_with, ssh_masters, ssh_processes

pytestmark = pytest.mark.slow
SERVERS = [(f"rs{i}", "") for i in range(5)] + [(f"rs{i}", "second") for i in range(5)]
AFTER_READY = 30  # seconds of probing after the new Hub answers


def marker(user, server):
    return f"fbs-sim-{user}-{server or 'default'}-"


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd):
    directory = tmp_path_factory.mktemp("hub")
    control = f"{directory}/ctl"
    config = (
        ssh_config(sshd, control)
        + """
c.SimulatedRemoteSpawner.ssh_during_startup = True
c.SimulatedRemoteSpawner.ssh_adopt_grace = 10
c.Spawner.poll_interval = 5
"""
    )
    async with running_hub(directory, config, debug=False) as hub:
        yield hub


@pytest.fixture(scope="module")
async def servers(hub):
    for user, server in SERVERS:
        await hub.request("POST", f"/users/{user}")
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        status, reply = await hub.request("POST", path, body={})
        assert status in (201, 202), reply
    for user, server in SERVERS:
        await hub.wait_ready(user, server)
    yield {key: marker(*key) for key in SERVERS}
    for user, server in SERVERS:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        await hub.request("DELETE", path)
    for user, server in SERVERS:
        await hub.wait_stopped(user, server)
    await hub.wait_for(lambda: asyncio.sleep(0, not ssh_processes(hub.control_dir)))
    leaked = {m: processes_with(m) for m in (marker(*k) for k in SERVERS) if processes_with(m)}
    assert not leaked, leaked


async def wipe_like_a_new_container(hub):
    hub.kill_hub()
    masters = ssh_processes(hub.control_dir)
    for pid in masters:
        os.kill(pid, signal.SIGKILL)
    # gone with the container: their listening ports are free once they have exited (a kill
    # returns before that; binding a forward's port at once raced it)
    for _ in range(100):
        if not any(process_alive(pid) for pid in masters):
            break
        await asyncio.sleep(0.05)
    shutil.rmtree(hub.control_dir, ignore_errors=True)


@pytest.mark.parametrize("kind", ["sigterm", "sigkill", "container"])
async def test_servers_stay_reachable_across_a_hub_restart(hub, servers, kind):
    masters_before = ssh_masters(hub.control_dir)
    assert len(masters_before) == 1  # one node, one master
    prober = Prober(hub, servers)
    prober.start()
    try:
        await asyncio.sleep(1)
        prober.phase = "hub down"
        if kind == "sigterm":
            await hub.stop_hub()
        elif kind == "sigkill":
            hub.kill_hub()
        else:
            await wipe_like_a_new_container(hub)
        await asyncio.sleep(1)
        prober.phase = "hub starting"
        await hub.start_hub()
        ready_at = time.monotonic() - prober.started
        prober.phase = "hub up"
        for key in SERVERS:
            await hub.wait_ready(*key)
        await asyncio.sleep(AFTER_READY)
    finally:
        await prober.stop()
    assert prober.ok > 0
    if kind == "container":
        # the tunnels went with the container: every server answers within 2 s of the Hub being ready
        late = [f for f in prober.failed_in("hub up") if f[0] > ready_at + 2]
        assert not late, f"servers still unreachable 2 s after the Hub was ready: {prober.summary()}"
        assert not prober.failed_in("before"), prober.summary()
        # and the probes do see an outage when there is one (the forwards died with the container)
        assert prober.failed_in("hub down") or prober.failed_in("hub starting"), prober.summary()
    else:
        assert not prober.failures, f"a server did not answer while the Hub restarted: {prober.summary()}"
    # exactly one master for the node, adopted (the same process) unless the container went away
    masters_after = ssh_masters(hub.control_dir)
    assert len(masters_after) == 1, masters_after
    if kind != "container":
        assert masters_after == masters_before
    assert all(len(processes_with(m)) == 1 for m in servers.values()), "a server died"


async def test_a_port_taken_at_restore_moves_the_forward_and_keeps_the_url(hub, sshd):
    user = "mover"
    await hub.request("POST", f"/users/{user}")
    status, reply = await hub.request("POST", f"/users/{user}/server", body={})
    assert status in (201, 202), reply
    model = await hub.wait_ready(user)
    old_port = model["state"]["custom_port"]
    prober = Prober(hub, {(user, ""): marker(user, "")})
    # the tunnels go (a new container) and another process takes the forward's port meanwhile
    await wipe_like_a_new_container(hub)
    foreign = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", old_port)
    try:
        await hub.start_hub()
        model = await hub.wait_ready(user)
        assert model["state"]["custom_port"] != old_port
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            assert await prober.probe_once(session, user, "", marker(user, "")) is None  # the same URL
    finally:
        foreign.close()
        await foreign.wait_closed()
    await hub.request("DELETE", f"/users/{user}/server")
    await hub.wait_stopped(user)
    assert processes_with(marker(user, "")) == []
