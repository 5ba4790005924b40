"""Hub restarts with many tunnelled servers on two jump nodes (two real sshd on loopback). Prints JSON.

For each kind of restart — SIGTERM, SIGKILL (a crash) and "container" (the Hub killed, every ssh
process of it killed and its control directory wiped, as a new pod starts) — every server is probed
through the proxy from before the Hub goes down until after it is back:

- ``failed_share_down``: the share of probes that failed while the Hub was down or starting;
- ``seconds_to_all_answering``: from the new Hub answering its API to every server answering
  through the proxy (polled as fast as the machine allows); ``seconds_one_pass_all_answering`` is
  one such pass while nothing is wrong, the measurement's own floor.

The servers are :class:`benchmarks.multiport.MultiPortSpawner` servers: one process serves them all.

    .venv/bin/python benchmarks/hub_restart.py [--servers 500] [--probe-interval 1.0] [--backend openssh|asyncssh]

With ``--backend asyncssh`` the tunnels live in the Hub process and go with it: the figure that
matters there is the time to all answering after the restart.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from tests.hubharness import Hub  # noqa: E402
from tests.probing import Prober  # noqa: E402
from tests.processes import ssh_processes  # noqa: E402
from tests.sshd import SSHServer, free_port  # noqa: E402


def hub_config(nodes, control, backend):
    ports = [n.port for n in nodes]
    keys = [n.client_key for n in nodes]
    return f"""
c.JupyterHub.spawner_class = "benchmarks.multiport.MultiPortSpawner"
c.JupyterHub.concurrent_spawn_limit = 0
c.MultiPortSpawner.ssh_node = "127.0.0.1"
c.MultiPortSpawner.ssh_port = lambda spawner, info: {ports!r}[spawner.user.id % 2]
c.MultiPortSpawner.ssh_key = lambda spawner, info: {keys!r}[spawner.user.id % 2]
c.MultiPortSpawner.ssh_username = {nodes[0].user!r}
c.MultiPortSpawner.ssh_known_hosts = {control + ".known_hosts"!r}
c.MultiPortSpawner.ssh_control_dir = {control!r}
c.MultiPortSpawner.ssh_during_startup = True
c.MultiPortSpawner.ssh_backend = {backend!r}
c.MultiPortSpawner.ssh_adopt_grace = 60
c.Spawner.poll_interval = 600
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 120
"""


async def all_answering(prober, servers, since):
    """Seconds from ``since`` until every server answered once, polling the silent ones."""
    waiting = dict(servers)
    gate = asyncio.Semaphore(100)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3), connector=aiohttp.TCPConnector(limit=0)) as session:

        async def probe(key, prefix):
            async with gate:
                if await prober.probe_once(session, *key, prefix) is None:
                    waiting.pop(key, None)

        while waiting:
            await asyncio.gather(*(probe(k, p) for k, p in list(waiting.items())))
            if waiting:
                await asyncio.sleep(0.05)
    return time.monotonic() - since


async def restart(hub, kind):
    if kind == "sigterm":
        await hub.stop_hub()
    elif kind == "sigkill":
        hub.kill_hub()
    else:
        hub.kill_hub()
        for pid in ssh_processes(hub.control_dir):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(hub.control_dir, ignore_errors=True)


async def main(args):
    work = tempfile.mkdtemp(prefix="fbs-bench-restart-")
    nodes = [SSHServer(os.path.join(work, f"node{i}")) for i in range(2)]
    multiport = None
    hub = None
    results = {"servers": args.servers, "nodes": 2, "backend": args.backend, "probe_interval_s": args.probe_interval, "runs": {}}
    try:
        for node in nodes:
            await node.start()
        control = os.path.join(work, "ctl")
        with open(control + ".known_hosts", "w") as f:
            for node in nodes:
                f.write(open(node.known_hosts).read())
        control_port = free_port()
        multiport = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "benchmarks", "multiport.py"), str(control_port)],
            stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        multiport.stdout.readline()
        os.environ["FBS_MULTIPORT_URL"] = f"http://127.0.0.1:{control_port}"
        hub = Hub(os.path.join(work, "hub"), extra_config=hub_config(nodes, control, args.backend), debug=False)
        hub.control_dir = control
        await hub.start()
        users = [f"b{i}" for i in range(args.servers)]
        status, _ = await hub.request("POST", "/users", body={"usernames": users})
        assert status in (201, 409), status
        gate = asyncio.Semaphore(50)

        async def spawn(user):
            async with gate:
                status, reply = await hub.request("POST", f"/users/{user}/server", body={})
                assert status in (201, 202), reply
                await hub.wait_for(lambda: _ready(hub, user), timeout=300, interval=0.5)

        started = time.monotonic()
        await asyncio.gather(*(spawn(u) for u in users))
        results["spawn_all_s"] = round(time.monotonic() - started, 1)
        servers = {(u, ""): f"fbs-multi-{u}-default-" for u in users}
        results["masters"] = len(ssh_processes(control))
        for kind in ("sigterm", "sigkill", "container"):
            # one pass over all servers while all answer: the floor of seconds_to_all_answering
            floor = await all_answering(Prober(hub, servers), servers, time.monotonic())
            prober = Prober(hub, servers, interval=args.probe_interval)
            prober.start()
            await asyncio.sleep(2)
            prober.phase = "down"
            await restart(hub, kind)
            await asyncio.sleep(2)
            prober.phase = "starting"
            await hub.start_hub()
            ready = time.monotonic()
            prober.phase = "up"
            to_all = await all_answering(prober, servers, ready)
            await asyncio.sleep(3)
            await prober.stop()
            down = prober.attempts["down"] + prober.attempts["starting"]
            failed_down = len(prober.failed_in("down")) + len(prober.failed_in("starting"))
            results["runs"][kind] = {
                "probes_while_down": down,
                "failed_share_down": round(failed_down / down, 4) if down else None,
                "failed_after_ready": len(prober.failed_in("up")),
                "seconds_to_all_answering": round(to_all, 2),
                "seconds_one_pass_all_answering": round(floor, 2),
                "masters_after": len(ssh_processes(control)),
            }
            print(json.dumps({kind: results["runs"][kind]}), file=sys.stderr, flush=True)
        gate = asyncio.Semaphore(50)

        async def stop(user):
            async with gate:
                await hub.request("DELETE", f"/users/{user}/server")

        await asyncio.gather(*(stop(u) for u in users))
    finally:
        if hub is not None:
            await hub.close()
        if multiport is not None:
            os.killpg(multiport.pid, signal.SIGKILL)
            multiport.wait()
        for node in nodes:
            await node.stop()
        for pid in ssh_processes(os.path.join(work, "ctl")):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


async def _ready(hub, user):
    model = await hub.server_model(user)
    return model and model["ready"] and not model["pending"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    parser.add_argument("--backend", choices=["openssh", "asyncssh"], default="openssh")
    asyncio.run(main(parser.parse_args()))
