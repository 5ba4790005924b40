"""A small real scenario until the full demo arrives: JupyterHub + configurable-http-proxy, with
"remote" servers that are local processes posting progress events through the SpawnEvents API.

Run with ``make demo``; stop with Ctrl-C (everything it started is stopped).
"""

import asyncio
import signal
import tempfile

from tests.hubharness import Hub

DEMO_CONFIG = """
def demo_options(spawner):
    # every start posts four progress events, one a second, before the server listens
    spawner.user_options = spawner.user_options or {"events": 4, "event_delay": 1.0}

c.Spawner.pre_spawn_hook = demo_options
"""


async def main():
    with tempfile.TemporaryDirectory(prefix="fbs-demo-") as directory:
        hub = Hub(directory, extra_config=DEMO_CONFIG)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await hub.start()
            print(f"\nJupyterHub is at {hub.url}/hub/login - log in as any name, any password.")
            print("Press Ctrl-C to stop.\n", flush=True)
            await stop.wait()
        finally:
            print("Stopping servers, Hub and proxy ...", flush=True)
            if hub.hub is not None:
                status, users = await hub.request("GET", "/users")
                for user in users if status == 200 else []:
                    for server in user.get("servers", {}):
                        await hub.request("DELETE", f"/users/{user['name']}/servers/{server}")
                        await hub.wait_stopped(user["name"], server)
            await hub.close()


if __name__ == "__main__":
    asyncio.run(main())
