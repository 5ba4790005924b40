"""Many simulated remote servers in one process, for benchmarks with hundreds of servers.

Run as a process (``python multiport.py <control port>``): ``POST /open?marker=M`` on the control
port opens a new listening port whose every GET answers ``{"marker": M}``, and returns the port.
:class:`MultiPortSpawner` is a ForwardBaseSpawner whose "remote start" is that call: no process
per server, so 500 servers cost one process.
"""

import asyncio
import os
import sys

from aiohttp import ClientSession, web

from forwardbasespawner import ForwardBaseSpawner


class MultiPortSpawner(ForwardBaseSpawner):
    """Asks the multiport process (its control URL in ``FBS_MULTIPORT_URL``) for a server."""

    remote_port = 0

    async def _start(self):
        marker = f"fbs-multi-{self.user.name}-{self.name or 'default'}-"
        async with ClientSession() as session:
            async with session.post(f"{os.environ['FBS_MULTIPORT_URL']}/open", params={"marker": marker}) as r:
                self.remote_port = int(await r.text())
        return f"127.0.0.1:{self.remote_port}"

    async def _poll(self):
        return None if self.remote_port else 0

    async def _stop(self, now=False, **kwargs):
        self.remote_port = 0

    def get_state(self):
        return {**super().get_state(), "remote_port": self.remote_port}

    def load_state(self, state):
        super().load_state(state)
        self.remote_port = state.get("remote_port", 0)


async def _serve(control_port):
    runners = []

    def answer(marker):
        async def handler(request):
            return web.json_response({"marker": marker, "path": request.path})

        return handler

    async def open_port(request):
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer(request.query["marker"]))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        runners.append(runner)
        return web.Response(text=str(site._server.sockets[0].getsockname()[1]))

    control = web.Application()
    control.router.add_post("/open", open_port)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
