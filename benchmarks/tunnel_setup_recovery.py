"""Forward set-up and recovery of the OpenSSH backend against a real sshd on loopback. Prints JSON.

- setup: N forwards requested concurrently through one node (one ControlMaster); per-forward time
  from request to usable (a TCP connection through it is answered), median and p95.
- recovery: M forwards through one node, the master is killed with SIGKILL; time until every one of
  them carries traffic again, with no API call (the supervisor does it).

    .venv/bin/python benchmarks/tunnel_setup_recovery.py [--setup 200] [--recovery 500] [--runs 3]
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forwardbasespawner.ssh.ports import allocate_port  # noqa: E402
from forwardbasespawner.ssh.spec import Endpoint, Forward  # noqa: E402
from forwardbasespawner.ssh.supervisor import TunnelManager  # noqa: E402
from tests.sshd import SSHServer  # noqa: E402

log = logging.getLogger("bench")


async def start_backend():
    async def answer(reader, writer):
        await reader.read(10)
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    return server, server.sockets[0].getsockname()[1]


async def carries(port, timeout=10, interval=0.01):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(10), 2)
            writer.close()
            if data == b"ok":
                return time.perf_counter()
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(interval)
    raise TimeoutError(f"port {port} carries nothing")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


async def setup_run(sshd, backend, directory, count):
    manager = TunnelManager(log, directory=directory, master_args={"known_hosts": sshd.known_hosts}, idle_timeout=0)
    endpoint = Endpoint("127.0.0.1", sshd.port, sshd.user, sshd.client_key)
    gate = asyncio.Semaphore(200)  # connections at once, so the client side does not run out of sockets

    async def one():
        start = time.perf_counter()
        port = allocate_port()
        await manager.add(endpoint, Forward("L", "127.0.0.1", port, "127.0.0.1", backend))
        async with gate:
            return (await carries(port)) - start

    try:
        times = await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await manager.close()
    return [t * 1000 for t in times]


async def recovery_run(sshd, backend, directory, count):
    manager = TunnelManager(log, directory=directory, master_args={"known_hosts": sshd.known_hosts}, idle_timeout=0, check_interval=5)
    endpoint = Endpoint("127.0.0.1", sshd.port, sshd.user, sshd.client_key)
    ports = [allocate_port() for _ in range(count)]
    try:
        await asyncio.gather(*(manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in ports))
        (master,) = manager.masters.values()  # 500 forwards: one master (500 each)
        killed = time.perf_counter()
        os.kill(master.process.pid, signal.SIGKILL)
        gate = asyncio.Semaphore(200)

        async def back(port):
            async with gate:
                return await carries(port, timeout=60, interval=0.05)

        done = await asyncio.gather(*(back(p) for p in ports))
        return (max(done) - killed) * 1000
    finally:
        await manager.close()


async def main(args):
    with tempfile.TemporaryDirectory(prefix="fbs-bench-ssh-") as directory:
        sshd = SSHServer(os.path.join(directory, "sshd"))
        await sshd.start()
        server, backend = await start_backend()
        try:
            setup = []
            setup_medians = []
            for i in range(args.runs):
                times = await setup_run(sshd, backend, os.path.join(directory, f"s{i}"), args.setup)
                setup += times
                setup_medians.append(round(statistics.median(times), 1))
            recovery = [await recovery_run(sshd, backend, os.path.join(directory, f"r{i}"), args.recovery) for i in range(args.runs)]
            print(json.dumps({
                "benchmark": "tunnel_setup_recovery",
                "backend": "openssh",
                "setup": {
                    "concurrent_forwards": args.setup,
                    "median_ms": round(statistics.median(setup), 1),
                    "p95_ms": round(percentile(setup, 0.95), 1),
                    "run_medians_ms": setup_medians,
                },
                "recovery": {
                    "forwards": args.recovery,
                    "median_ms_until_all_carry_traffic": round(statistics.median(recovery), 1),
                    "runs_ms": [round(r, 1) for r in recovery],
                    "target_ms": 3000,
                },
                "runs": args.runs,
            }, indent=2))  # fmt: skip
        finally:
            server.close()
            await sshd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", type=int, default=200)
    parser.add_argument("--recovery", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
