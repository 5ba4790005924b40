"""Event latency and POST throughput of the SpawnEvents API on a real Hub + proxy. Prints JSON.

Latency: a pending spawn has N progress streams open (JupyterHub's real EventStream, through the
proxy); the remote side POSTs an event with the server's own token; for each stream we take the time
from the POST's answer to the event's arrival (negative: it arrived before the answer did).
Throughput: P concurrent posters send events as fast as the Hub takes them.

    .venv/bin/python benchmarks/event_latency.py [--streams 1 100 500] [--events 20] [--runs 3]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.hubharness import Hub, server_token  # noqa: E402
from tests.processes import processes_with  # noqa: E402


async def open_stream(session, hub, arrivals, opened, open_key):
    url = f"{hub.api}/users/bench/servers/s/progress"
    async with session.get(url, headers={"Authorization": f"token {hub.admin_token}"}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.startswith(b"data:"):
                continue
            now = time.perf_counter()
            message = json.loads(line[5:]).get("message", "")
            if open_key in message:
                opened.release()
            elif "bench-open" in message:
                continue  # an earlier run's marker, replayed to this new stream
            elif "bench-" in message:
                arrivals.setdefault(message.rsplit("bench-", 1)[1], []).append(now)


async def latency_run(hub, session, token, streams, events):
    arrivals = {}
    opened = asyncio.Semaphore(0)
    open_key = f"bench-open-{time.monotonic_ns()}"
    readers = [asyncio.ensure_future(open_stream(session, hub, arrivals, opened, open_key)) for _ in range(streams)]
    await hub.request("POST", "/users/progress/events/bench/s", token=token, body={"message": open_key})
    for _ in range(streams):  # every stream replays the log, so each sees this run's marker once
        await asyncio.wait_for(opened.acquire(), 60)
    samples_after_answer, samples_after_send = [], []
    for i in range(events):
        key = f"{streams}-{i}-{time.monotonic_ns()}"
        sent = time.perf_counter()
        status, _ = await hub.request("POST", "/users/progress/events/bench/s", token=token,
                                      body={"progress": 50, "message": f"bench-{key}"})  # fmt: skip
        answered = time.perf_counter()
        assert status == 204, status
        for _ in range(500):
            if len(arrivals.get(key, [])) == streams:
                break
            await asyncio.sleep(0.01)
        got = arrivals.get(key, [])
        samples_after_answer += [(t - answered) * 1000 for t in got]
        samples_after_send += [(t - sent) * 1000 for t in got]
        await asyncio.sleep(0.05)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return samples_after_answer, samples_after_send


async def throughput_run(hub, token, posters, total):
    remaining = [total]

    async def poster():
        while remaining[0] > 0:
            remaining[0] -= 1
            status, _ = await hub.request("POST", "/users/progress/events/bench/s", token=token,
                                          body={"progress": 10, "message": "throughput"})  # fmt: skip
            assert status == 204, status

    start = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(posters)))
    return total / (time.perf_counter() - start)


def summary(samples):
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "samples": len(ordered),
    }


async def main(args):
    with tempfile.TemporaryDirectory(prefix="fbs-bench-") as directory:
        hub = Hub(
            directory,
            extra_config=(
                "c.Spawner.start_timeout = 3600\n"
                # the API path's cost is measured here, not the per-server rate limit (tested elsewhere)
                "c.ForwardBaseSpawner.events_post_rate = 1e9\nc.ForwardBaseSpawner.events_post_burst = 10**9\n"
            ),
            debug=False,
        )
        await hub.start()
        try:
            await hub.request("POST", "/users/bench")
            # a start that stays pending: streams are open only while a spawn is pending
            await hub.request("POST", "/users/bench/servers/s", body={"start_delay": 3600})
            await hub.wait_for(lambda: asyncio.sleep(0, processes_with("fbs-sim-bench-s-")))
            token = server_token("fbs-sim-bench-s-")
            result = {"benchmark": "event_latency", "runs": args.runs, "events_per_run": args.events}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                for streams in args.streams:
                    answer, send = [], []
                    run_medians = []
                    for _ in range(args.runs):
                        a, s = await latency_run(hub, session, token, streams, args.events)
                        answer += a
                        send += s
                        run_medians.append(round(statistics.median(a), 2))
                    result[f"streams_{streams}"] = {
                        "after_post_answer": summary(answer),
                        "after_post_sent": summary(send),
                        "run_medians_ms": run_medians,
                    }
            rates = [await throughput_run(hub, token, args.posters, args.total) for _ in range(args.runs)]
            result["post_throughput"] = {
                "posters": args.posters,
                "events_per_run": args.total,
                "median_events_per_s": round(statistics.median(rates), 1),
                "runs_events_per_s": [round(r, 1) for r in rates],
            }
            # the same Hub answering a trivial authenticated API call, for a ratio
            remaining = [args.total]

            async def baseline():
                while remaining[0] > 0:
                    remaining[0] -= 1
                    await hub.request("GET", "/user", token=token)

            start = time.perf_counter()
            await asyncio.gather(*(baseline() for _ in range(args.posters)))
            base = args.total / (time.perf_counter() - start)
            result["post_throughput"]["ratio_to_get_user"] = round(statistics.median(rates) / base, 2)
            print(json.dumps(result, indent=2))
        finally:
            await hub.request("DELETE", "/users/bench/servers/s")
            await hub.wait_stopped("bench", "s")
            await hub.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--posters", type=int, default=50)
    parser.add_argument("--total", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
