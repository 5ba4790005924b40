"""Time from "Start" to the Jupyter server answering through the tunnel, in the demo (a real Hub,
a real Jupyter server started over SSH, an OpenSSH forward). Prints JSON.

Per spawn: the total (the spawn request until /user/<name>/api/status answers through the proxy
and the tunnel), the remote server's own start (the start script's time from its start to the
server listening, which it reports in an event), and the rest: SSH to start it, events, SetupTunnel
and the forward, JupyterHub's own checks and routing.

    .venv/bin/python benchmarks/demo_spawn.py [--spawns 10]
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.demorun import PASSWORDS, start_demo, stop_demo  # noqa: E402


async def login(session, url, user):
    async with session.get(f"{url}/hub/login") as r:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
    async with session.post(f"{url}/hub/login", data={"username": user, "password": PASSWORDS[url], "_xsrf": xsrf}) as r:
        assert r.status == 200
    async with session.get(f"{url}/hub/home") as r:
        return re.search(r'xsrf_token: "([^"]+)"', await r.text()).group(1)


async def one_spawn(session, url, user, xsrf, token):
    headers = {"X-XSRFToken": xsrf}
    start = time.perf_counter()
    async with session.post(f"{url}/hub/api/users/{user}/server", headers=headers, json={}) as r:
        assert r.status in (201, 202), await r.text()
    while True:
        async with session.get(f"{url}/user/{user}/api/status", headers={"Authorization": f"token {token}"},
                               allow_redirects=False) as r:  # fmt: skip
            if r.status == 200:
                break
        await asyncio.sleep(0.02)
    total = time.perf_counter() - start
    async with session.get(f"{url}/hub/api/users/progress/events/{user}", headers=headers) as r:
        events = (await r.json())["events"]
    remote = next(float(m.group(1)) for e in events if (m := re.search(r"listening after ([\d.]+) s", e.get("message", ""))))
    async with session.delete(f"{url}/hub/api/users/{user}/server", headers=headers) as r:
        assert r.status in (202, 204)
    while True:
        async with session.get(f"{url}/hub/api/users/{user}", headers=headers) as r:
            if not (await r.json())["servers"]:
                break
        await asyncio.sleep(0.05)
    return total, remote


async def main(args):
    proc, url, _ = await start_demo()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            xsrf = await login(session, url, "bench")
            async with session.post(f"{url}/hub/api/users/bench/tokens", headers={"X-XSRFToken": xsrf}, json={}) as r:
                token = (await r.json())["token"]
            totals, remotes = [], []
            for _ in range(args.spawns):
                total, remote = await one_spawn(session, url, "bench", xsrf, token)
                totals.append(total)
                remotes.append(remote)
    finally:
        await stop_demo(proc)
    others = [t - r for t, r in zip(totals, remotes, strict=True)]
    print(json.dumps({
        "benchmark": "demo_spawn",
        "spawns": args.spawns,
        "total_s_median": round(statistics.median(totals), 2),
        "remote_server_start_s_median": round(statistics.median(remotes), 2),
        "hub_library_and_ssh_s_median": round(statistics.median(others), 2),
        "share_outside_the_remote_server_start": round(statistics.median(o / t for o, t in zip(others, totals, strict=True)), 2),
        "totals_s": [round(t, 2) for t in totals],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
