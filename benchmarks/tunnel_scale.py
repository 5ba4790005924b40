"""Many forwards through one node: each carries traffic, and what it costs in memory. Prints JSON.

Forwards are added in steps (1, 100, 1000, 2000 by default) through one jump node (a real sshd on
loopback); at each step every forward carries one request, and the resident memory of this process
(the Hub's part: the tunnel manager) plus all its ssh processes is summed.

    .venv/bin/python benchmarks/tunnel_scale.py [--steps 1 100 1000 2000] [--backend openssh]
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.tunnel_setup_recovery import carries, start_backend  # noqa: E402
from forwardbasespawner.ssh.asyncssh import AsyncsshMaster  # noqa: E402
from forwardbasespawner.ssh.openssh import ControlMaster  # noqa: E402
from forwardbasespawner.ssh.ports import allocate_port  # noqa: E402
from forwardbasespawner.ssh.spec import Endpoint, Forward  # noqa: E402
from forwardbasespawner.ssh.supervisor import TunnelManager  # noqa: E402
from tests.processes import processes  # noqa: E402
from tests.sshd import SSHServer  # noqa: E402

log = logging.getLogger("bench")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(args):
    with tempfile.TemporaryDirectory(prefix="fbs-bench-scale-") as directory:
        sshd = SSHServer(os.path.join(directory, "sshd"))
        await sshd.start()
        server, backend = await start_backend()
        master_class = AsyncsshMaster if args.backend == "asyncssh" else ControlMaster
        manager = TunnelManager(
            log, directory=os.path.join(directory, "ctl"), idle_timeout=0, master_class=master_class,
            master_args={"known_hosts": sshd.known_hosts}, forwards_per_master=args.per_master,
        )  # fmt: skip
        endpoint = Endpoint("127.0.0.1", sshd.port, sshd.user, sshd.client_key)
        ports = []
        steps = []
        gate = asyncio.Semaphore(100)

        async def check(port):
            async with gate:
                await carries(port, timeout=60, interval=0.05)

        try:
            for target in args.steps:
                new = [allocate_port() for _ in range(target - len(ports))]
                started = time.perf_counter()
                await asyncio.gather(*(manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in new))
                added = time.perf_counter() - started
                ports += new
                await asyncio.gather(*(check(p) for p in ports))
                ssh_pids = [p.pid for p in processes(lambda p: p.ppid == os.getpid() and p.name == "ssh")]
                steps.append({
                    "forwards": len(ports),
                    "all_carry_traffic": True,
                    "masters": len(manager.masters),
                    "seconds_to_add_step": round(added, 2),
                    "rss_hub_mib": round(rss_kib(os.getpid()) / 1024, 1),
                    "rss_ssh_mib": round(sum(rss_kib(p) for p in ssh_pids) / 1024, 1),
                    "rss_total_mib": round((rss_kib(os.getpid()) + sum(rss_kib(p) for p in ssh_pids)) / 1024, 1),
                })  # fmt: skip
            print(json.dumps({"benchmark": "tunnel_scale", "backend": args.backend,
                              "forwards_per_master": args.per_master, "steps": steps}, indent=2))  # fmt: skip
        finally:
            await manager.close()
            server.close()
            await sshd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 100, 1000, 2000])
    parser.add_argument("--backend", choices=["openssh", "asyncssh"], default="openssh")
    parser.add_argument("--per-master", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
