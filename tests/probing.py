"""Probe servers through the proxy, again and again, while something happens to the Hub.

Each server is a simulated remote server (tests/remote_server.py) that answers every GET with
JSON naming its own marker; a probe counts only if the right server answered.
"""

import asyncio
import collections
import json
import time

import aiohttp


class Prober:
    """GETs every server through the proxy every ``interval`` seconds (all servers at once) and
    records what did not answer with that server's own marker, with the phase it happened in."""

    def __init__(self, hub, servers, interval=0.1):
        self.hub = hub
        self.servers = dict(servers)  # (user, server) -> marker prefix
        self.interval = interval
        self.ok = 0
        self.attempts = collections.Counter()  # phase -> probes made
        self.failures = []  # (seconds since start, phase, user, server, what)
        self.last_answer = {}  # (user, server) -> seconds since start of its last good answer
        self.phase = "before"
        self.started = time.monotonic()
        self._task = None

    def url(self, user, server):
        return f"{self.hub.url}/user/{user}/{server}/probe" if server else f"{self.hub.url}/user/{user}/probe"

    async def probe_once(self, session, user, server, prefix):
        """None if the server answered as itself, else what went wrong."""
        try:
            async with session.get(self.url(user, server), allow_redirects=False) as r:
                text = await r.text()
                if r.status == 200 and json.loads(text).get("marker", "").startswith(prefix):
                    return None
                return f"{r.status} {text[:80]!r}"
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    async def _probe(self, session, key, prefix):
        phase = self.phase
        problem = await self.probe_once(session, *key, prefix)
        self.attempts[phase] += 1
        now = round(time.monotonic() - self.started, 2)
        if problem:
            self.failures.append((now, phase, *key, problem))
        else:
            self.ok += 1
            self.last_answer[key] = now

    async def _run(self):
        # a slow answer on a loaded machine is no outage; a refused connection or a 503 fails at once
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            while True:
                round_start = time.monotonic()
                await asyncio.gather(*(self._probe(session, key, p) for key, p in list(self.servers.items())))
                await asyncio.sleep(max(0, self.interval - (time.monotonic() - round_start)))

    def start(self):
        self._task = asyncio.ensure_future(self._run())

    async def stop(self):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def failed_in(self, phase):
        return [f for f in self.failures if f[1] == phase]

    def summary(self):
        return f"{self.ok} probes answered, {len(self.failures)} failed; first failures: {self.failures[:8]}"
