"""Data plane through one tunnel, as ratios to the same without a tunnel. Prints JSON.

A backend HTTP server runs in its own process; curl (another process) downloads 1 GiB from it, and a
small load generator (another process) sends many small requests. This process plays the Hub: it
holds the tunnel (OpenSSH ControlMaster or the in-process asyncssh connection) and measures its own
event-loop latency (how late a 5 ms timer fires) while the transfer runs.

    .venv/bin/python benchmarks/tunnel_data_plane.py [--runs 3] [--mib 1024]
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forwardbasespawner.ssh.asyncssh import AsyncsshMaster  # noqa: E402
from forwardbasespawner.ssh.openssh import ControlMaster  # noqa: E402
from forwardbasespawner.ssh.ports import allocate_port  # noqa: E402
from forwardbasespawner.ssh.spec import Endpoint, Forward  # noqa: E402
from forwardbasespawner.ssh.supervisor import TunnelManager  # noqa: E402
from tests.sshd import SSHServer  # noqa: E402

log = logging.getLogger("bench")

BACKEND = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    CHUNK = b"x" * (1 << 20)
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # headers and body leave in one write (no Nagle/delayed-ACK stalls)
        def do_GET(self):
            if self.path.startswith("/big/"):
                size = int(self.path.split("/")[2]) << 20
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for _ in range(size >> 20):
                    self.wfile.write(CHUNK)
            else:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")

LOAD = textwrap.dedent("""
    import asyncio, sys, time
    async def main(port, total, concurrency):
        done = 0
        async def worker():
            nonlocal done
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
            while done < total:
                done += 1
                writer.write(b"GET /small HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                await writer.drain()
                await reader.readuntil(b"\\r\\n\\r\\n")
                await reader.readexactly(2)
            writer.close()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(total / (time.perf_counter() - start))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
""")


async def loop_lag(stop, samples):
    """How late a 5 ms sleep wakes up, in ms, until ``stop`` is set."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append((time.perf_counter() - start - 0.005) * 1000)


async def run(*argv):
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().strip()


async def measure(port, mib, runs):
    """Median MB/s of a ``mib`` MiB download, small requests/s, and this loop's lag meanwhile."""
    speeds, rates, lag = [], [], []
    for _ in range(runs):
        stop = asyncio.Event()
        ticker = asyncio.ensure_future(loop_lag(stop, lag))
        out = await run("curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", f"http://127.0.0.1:{port}/big/{mib}")
        stop.set()
        await ticker
        speeds.append(float(out) / 1e6)
        rates.append(float(await run(sys.executable, "-c", LOAD, str(port), "20000", "16")))
    ordered = sorted(lag)
    return {
        "download_MB_s": round(statistics.median(speeds), 1),
        "small_requests_per_s": round(statistics.median(rates)),
        "loop_lag_ms_p50": round(statistics.median(ordered), 3),
        "loop_lag_ms_p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "loop_lag_ms_max": round(ordered[-1], 3),
    }


async def main(args):
    with tempfile.TemporaryDirectory(prefix="fbs-bench-dp-") as directory:
        sshd = SSHServer(os.path.join(directory, "sshd"))
        await sshd.start()
        backend_port = allocate_port()
        backend = await asyncio.create_subprocess_exec(sys.executable, "-c", BACKEND, str(backend_port))
        await asyncio.sleep(0.5)
        results = {"benchmark": "tunnel_data_plane", "mib": args.mib, "runs": args.runs}
        try:
            results["direct"] = await measure(backend_port, args.mib, args.runs)
            cases = [
                ("openssh_aes128-gcm", ControlMaster, "aes128-gcm@openssh.com"),
                ("openssh_chacha20-poly1305", ControlMaster, "chacha20-poly1305@openssh.com"),
                ("asyncssh_aes128-gcm", AsyncsshMaster, "aes128-gcm@openssh.com"),
            ]
            for name, master_class, cipher in cases:
                manager = TunnelManager(
                    log, directory=os.path.join(directory, name), idle_timeout=0, master_class=master_class,
                    master_args={"known_hosts": sshd.known_hosts, "ciphers": cipher},
                )  # fmt: skip
                port = allocate_port()
                endpoint = Endpoint("127.0.0.1", sshd.port, sshd.user, sshd.client_key)
                await manager.add(endpoint, Forward("L", "127.0.0.1", port, "127.0.0.1", backend_port))
                try:
                    figures = await measure(port, args.mib, args.runs)
                finally:
                    await manager.close()
                figures["download_ratio_to_direct"] = round(figures["download_MB_s"] / results["direct"]["download_MB_s"], 2)
                figures["requests_ratio_to_direct"] = round(figures["small_requests_per_s"] / results["direct"]["small_requests_per_s"], 2)
                results[name] = figures
            print(json.dumps(results, indent=2))
        finally:
            backend.kill()
            await backend.wait()
            await sshd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=1024)
    asyncio.run(main(parser.parse_args()))
