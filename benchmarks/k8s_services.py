"""The Kubernetes side of a spawn: API calls and wall time per spawn and per stop, 200 concurrent
spawns against the test API server with 50 ms latency, and the Hub's event-loop lag meanwhile;
then ListServers on a real Hub with 1,000 and 10,000 servers. Prints JSON.

The spawners here are ForwardBaseSpawners in this process (this process's loop is the Hub's loop),
calling the real kubernetes_asyncio client; the API server is tests/k8sapi.py.

    .venv/bin/python benchmarks/k8s_services.py [--spawns 200] [--latency 0.05] [--servers 1000 10000]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyterhub import orm  # noqa: E402
from jupyterhub.objects import Hub as HubObject  # noqa: E402

from forwardbasespawner import ForwardBaseSpawner  # noqa: E402
from tests.hubharness import REPO, Hub  # noqa: E402


async def loop_lag(stop, samples):
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append((time.perf_counter() - start - 0.005) * 1000)


def summary(values):
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 2), "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
            "max": round(ordered[-1], 2)}  # fmt: skip


async def api_stats(session, url, reset=False):
    async with session.get(f"{url}/_test/stats" + ("?reset=1" if reset else "")) as r:
        return await r.json()


async def spawns(count, latency):
    """The test API server runs in its own process, as a real one would: this loop is the Hub's only."""
    token = "bench-token"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(REPO, "tests", "k8sapi.py"), str(latency), token, stdout=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{int(await proc.stdout.readline())}"
    try:
        async with aiohttp.ClientSession() as session:
            return await _spawns(url, token, session, count)
    finally:
        proc.kill()
        await proc.wait()


async def _spawns(url, token, session, count):
    db = orm.new_session_factory("sqlite://")()
    spawners = []
    for i in range(count):
        user = SimpleNamespace(name=f"user{i}@example.org", id=i, url=f"/user/u{i}/", db=db)
        orm_spawner = SimpleNamespace(name="", display_name="", server=None, state=None, user_options={})
        spawner = ForwardBaseSpawner(
            user=user, hub=HubObject(ip="127.0.0.1", port=8081, base_url="/hub/"), orm_spawner=orm_spawner,
            namespace="jh", k8s_api_host=url, k8s_api_token=token, k8s_hub_selector={"component": "hub"},
        )  # fmt: skip
        spawner.port = 30000 + i
        spawner.start_id = f"sid{i}"
        spawners.append(spawner)
    await spawners[0].reconcile_services_once()  # once per Hub; not part of a spawn
    await api_stats(session, url, reset=True)
    lag = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(loop_lag(stop, lag))

    async def timed(coro):
        start = time.perf_counter()
        await coro
        return (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    create = await asyncio.gather(*(timed(s.ssh_default_svc()) for s in spawners))
    create_wall = time.perf_counter() - start
    create_calls = (await api_stats(session, url, reset=True))["calls"]
    start = time.perf_counter()
    delete = await asyncio.gather(*(timed(s.ssh_default_svc_remove()) for s in spawners))
    delete_wall = time.perf_counter() - start
    stats = await api_stats(session, url, reset=True)
    stop.set()
    await ticker
    assert stats["services"] == 0
    await spawners[0].k8s_client().close()
    return {
        "concurrent_spawns": count,
        "api_calls_per_spawn": round(create_calls / count, 2),
        "api_calls_per_stop": round(stats["calls"] / count, 2),
        "spawn_ms": summary(create),
        "stop_ms": summary(delete),
        "all_spawns_wall_s": round(create_wall, 2),
        "all_stops_wall_s": round(delete_wall, 2),
        "hub_loop_lag_ms": summary(lag),
    }


async def list_servers(sizes, runs=5):
    results = {}
    token = "lister-" + os.urandom(8).hex()
    config = f"""
c.JupyterHub.custom_scopes = {{"custom:servers:list": {{"description": "list"}}}}
c.JupyterHub.services.append({{"name": "lister", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{"name": "lister", "scopes": ["custom:servers:list"], "services": ["lister"]}})
"""
    with tempfile.TemporaryDirectory(prefix="fbs-bench-list-") as directory:
        hub = Hub(directory, extra_config=config, debug=False)
        await hub.start()
        session = orm.new_session_factory(f"sqlite:///{directory}/jupyterhub.sqlite")()
        try:
            have = 0
            for size in sizes:
                for i in range(have, size):
                    user = orm.User(name=f"bulk{i:05d}")
                    spawner = orm.Spawner(user=user, name="", state={"start_id": f"sid{i}"})
                    spawner.server = orm.Server(base_url=f"/user/bulk{i:05d}/")
                    session.add_all([user, spawner])
                session.commit()
                have = size
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    status, listed = await hub.request("GET", "/servers", token=token)
                    times.append((time.perf_counter() - start) * 1000)
                    assert status == 200 and len(listed) == size
                results[f"servers_{size}"] = {"median_ms": round(statistics.median(times), 1), "runs": runs}
        finally:
            session.close()
            await hub.close()
    return results


async def main(args):
    result = {"benchmark": "k8s_services", "api_latency_ms": args.latency * 1000}
    result["spawns"] = await spawns(args.spawns, args.latency)
    result["list_servers"] = await list_servers(args.servers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--servers", type=int, nargs="+", default=[1000, 10000])
    asyncio.run(main(parser.parse_args()))
