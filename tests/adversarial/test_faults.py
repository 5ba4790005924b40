"""Faults, each followed by convergence and a leak check (no stray process, ssh master, control
socket, listener or Service). All traffic on loopback; every process is stopped by PID."""

import asyncio
import json
import os
import signal
import stat

import pytest

from forwardbasespawner.ssh.ports import port_is_free
from tests.adversarial.conftest import count
from tests.conftest import ssh_config
from tests.hubharness import running_hub, server_token
from tests.processes import processes_with, ssh_processes

pytestmark = pytest.mark.slow
NS = "adv"


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd, k8s_api):
    directory = tmp_path_factory.mktemp("fault-hub")
    control = f"{directory}/ctl"
    config = (
        ssh_config(sshd, control, "AdversarialSpawner")
        + f"""
c.JupyterHub.spawner_class = "tests.adversarial.spawners.AdversarialSpawner"
c.AdversarialSpawner.ssh_check_interval = 1
c.AdversarialSpawner.ssh_restore_attempts = 3
c.AdversarialSpawner.ssh_during_startup = lambda spawner: bool((spawner.user_options or {{}}).get("tunnel"))
c.AdversarialSpawner.svc_create = lambda spawner: bool((spawner.user_options or {{}}).get("svc"))
c.AdversarialSpawner.namespace = {NS!r}
c.AdversarialSpawner.k8s_api_host = {k8s_api.url!r}
c.AdversarialSpawner.k8s_api_token = {k8s_api.token!r}
c.AdversarialSpawner.k8s_api_timeout = 2
c.AdversarialSpawner.k8s_api_retries = 6
c.AdversarialSpawner.k8s_hub_selector = {{"component": "hub"}}
c.AdversarialSpawner.dns_name_template = "127.0.0.1"
c.Spawner.poll_interval = 1
c.Spawner.http_timeout = 6
"""
    )
    async with running_hub(directory, config) as hub:
        yield hub


async def answers(hub, user, server):
    try:
        async with hub.session.get(f"{hub.url}/user/{user}/{server}/probe") as r:
            return r.status == 200 and (await r.json())["marker"].startswith(f"fbs-sim-{user}-")
    except Exception:
        return False


async def outcome(hub, user, server):
    """Converged: 'ready' (answers through the proxy) or 'stopped' (with a failed event saying why)."""

    async def settled():
        model = await hub.server_model(user, server)
        if model and model["ready"] and not model["pending"] and await answers(hub, user, server):
            return "ready"
        if not model or not (model["ready"] or model["pending"]):
            return "stopped"
        return None

    return await hub.wait_for(settled, timeout=90)


def control_sockets(hub):
    try:
        names = os.listdir(hub.control_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:  # a master's files come and go while we look
            if stat.S_ISSOCK(os.lstat(os.path.join(hub.control_dir, name)).st_mode):
                found.append(name)
        except FileNotFoundError:
            continue
    return found


async def assert_no_leaks(hub, marker, ports=(), k8s_api=None):
    """Nothing of the server is left: its processes, its listeners, ssh masters and their
    sockets (masters exit when idle), its Services."""

    async def clean():
        return (
            processes_with(marker) == []
            and all(port_is_free("127.0.0.1", p) for p in ports)
            and ssh_processes(hub.control_dir) == []
            and control_sockets(hub) == []
            and (k8s_api is None or not [k for k in k8s_api.services if k[0] == NS])
        )

    try:
        await hub.wait_for(clean, timeout=60)
    except AssertionError:
        count("leaks")
        left = {
            "processes": processes_with(marker), "busy ports": [p for p in ports if not port_is_free("127.0.0.1", p)],
            "ssh": ssh_processes(hub.control_dir), "sockets": control_sockets(hub),
            "services": k8s_api and [k for k in k8s_api.services if k[0] == NS],
        }  # fmt: skip
        raise AssertionError(f"left behind: {left}") from None


async def stop(hub, user, server):
    await hub.request("DELETE", f"/users/{user}/servers/{server}")
    await hub.wait_stopped(user, server)


async def test_kill_9_the_master_mid_spawn(hub):
    await hub.spawn("ken", "k", {"tunnel": True, "events": 4, "event_delay": 0.3})

    async def master():
        return ssh_processes(hub.control_dir)

    pids = await hub.wait_for(master, timeout=60, interval=0.02)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    count("faults_injected")
    result = await outcome(hub, "ken", "k")
    model = await hub.server_model("ken", "k")
    if result == "stopped":
        status, reply = await hub.request("GET", "/users/progress/events/ken/k")
        assert reply["events"][-1]["failed"], reply
    ports = [model["state"]["custom_port"]] if model and model["state"].get("custom_port") else []
    await stop(hub, "ken", "k")
    await assert_no_leaks(hub, "fbs-sim-ken-", ports)


async def test_sshd_stopped_mid_forward_then_back(hub, sshd):
    await hub.spawn("sid", "f", {"tunnel": True})
    model = await hub.wait_ready("sid", "f")
    port = model["state"]["custom_port"]
    await sshd.stop()
    count("faults_injected")
    await sshd.start()
    assert await outcome(hub, "sid", "f") in ("ready", "stopped")
    await stop(hub, "sid", "f")
    await assert_no_leaks(hub, "fbs-sim-sid-", [port])


@pytest.mark.parametrize(
    "faults",
    [
        [{"status": 500}, {"status": 500}],
        [{"status": 429}, {"status": 429}, {"status": 429}],
        [{"reset": True}, {"reset": True}],
        [{"delay": 10}],
    ],
    ids=["500s", "429s", "resets", "10s-stall"],
)
async def test_kubernetes_faults_on_create_and_delete(hub, k8s_api, faults):
    user = f"kay{len(faults)}{faults[0].get('status', 'x')}"
    k8s_api.faults[:] = [dict(f, method="POST") for f in faults]  # the create's (never a watch's GET)
    count("faults_injected", len(faults))
    await hub.spawn(user, "", {"tunnel": True, "svc": True})
    model = await hub.wait_ready(user)
    services = [k for k in k8s_api.services if k[0] == NS]
    assert len(services) == 1, services
    k8s_api.faults[:] = [dict(f, method="DELETE") for f in faults]  # and again while the Service is deleted
    count("faults_injected", len(faults))
    await stop(hub, user, "")
    await assert_no_leaks(hub, f"fbs-sim-{user}-", [model["state"]["custom_port"]], k8s_api)


async def test_a_remote_that_never_calls_setuptunnel(hub):
    await hub.spawn("nil", "n", {"later": True, "quiet": True})
    count("faults_injected")

    async def reserved():
        model = await hub.server_model("nil", "n")
        return model and model["pending"] and processes_with("fbs-sim-nil-n-")

    await hub.wait_for(reserved, timeout=30)
    await hub.wait_stopped("nil", "n")  # JupyterHub's http_timeout ends the start
    status, reply = await hub.request("GET", "/users/progress/events/nil/n")
    assert status == 200
    await assert_no_leaks(hub, "fbs-sim-nil-")
    # it can be started again afterwards
    await hub.spawn("nil", "n", {"later": False})  # (an empty body would reuse the last options)
    await hub.wait_ready("nil", "n")
    await stop(hub, "nil", "n")
    await assert_no_leaks(hub, "fbs-sim-nil-")


async def test_a_remote_that_posts_ten_thousand_events(hub):
    await hub.spawn("ten", "t", {"tunnel": True})
    model = await hub.wait_ready("ten", "t")
    token = server_token("fbs-sim-ten-t-")
    log_start = len(hub.log_text())
    count("faults_injected")
    statuses = []
    queue = asyncio.Queue()
    for i in range(10000):
        queue.put_nowait(i)

    async def poster():
        while not queue.empty():
            i = queue.get_nowait()
            body = {"progress": i % 100, "message": "A" * 4000} if i % 2 else {"ready": True, "message": "R" * 4096}
            status, _ = await hub.request("POST", "/users/progress/events/ten/t", token=token, body=body)
            statuses.append(status)

    await asyncio.gather(*(poster() for _ in range(20)))
    count("requests", len(statuses))
    count("status_5xx", sum(s >= 500 for s in statuses))
    assert set(statuses) <= {204, 409, 429}, sorted(set(statuses))
    # the burst is taken in full: each of its calls is answered (204, or 409 for the even-numbered
    # "ready" events: the server is ready already), never 429
    assert statuses.count(204) + statuses.count(409) >= 200
    status, reply = await hub.request("GET", "/users/progress/events/ten/t")
    events = reply["events"]
    assert len(events) <= 200 and sum(len(json.dumps(e)) for e in events) <= 256 * 1024
    assert sum(1 for e in events if e.get("ready")) <= 1  # a spawn has at most one ready event
    model = await hub.server_model("ten", "t")
    assert len(json.dumps(model["state"])) <= 256 * 1024 + 4096  # the state row is bounded too
    assert await answers(hub, "ten", "t")
    assert "Traceback" not in hub.log_text()[log_start:]
    await stop(hub, "ten", "t")
    await assert_no_leaks(hub, "fbs-sim-ten-", [model["state"]["custom_port"]])
