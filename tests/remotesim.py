"""A ForwardBaseSpawner subclass whose "remote system" is a local process (tests only).

Each server is a process running ``remote_server.py`` in its own session, started with the
environment the base builds (events URL, token). ``user_options`` steer the scenario:

- ``events`` / ``event_delay``: progress events the remote script posts before it listens
- ``start_delay``: seconds ``_start()`` waits after starting the process (a slow batch queue)
- ``fail``: the remote script posts a failed event with this message instead of listening
- ``raise``: ``_start()`` raises RuntimeError with this message; ``http_error``: a bare HTTPError
- ``later``: ``_start()`` returns no address; the remote script calls SetupTunnel once it listens
  (``quiet``: it does not, the test does)
"""

import asyncio
import os
import sys
import uuid

from tornado import web

from forwardbasespawner import ForwardBaseSpawner
from tests.processes import process_alive, stop_process_group
from tests.sshd import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


class SimulatedRemoteSpawner(ForwardBaseSpawner):
    pid = 0
    marker = ""

    async def _start(self):
        options = self.user_options or {}
        if options.get("raise"):
            raise RuntimeError(options["raise"])
        if options.get("http_error"):
            raise web.HTTPError(int(options["http_error"]))
        port = free_port()
        # user and server in the marker: tests find this server's processes even while pending
        self.marker = f"fbs-sim-{self.user.name}-{self.name or 'default'}-{uuid.uuid4().hex}"
        env = dict(os.environ)
        env.update(self.get_env())
        env.update(
            FBS_SIM_MARKER=self.marker,
            FBS_SIM_PORT=str(port),
            FBS_SIM_EVENTS=str(options.get("events", 0)),
            FBS_SIM_EVENT_DELAY=str(options.get("event_delay", 0)),
            FBS_SIM_FAIL=str(options.get("fail", "")),
            FBS_SIM_SETUPTUNNEL="1" if options.get("later") and not options.get("quiet") else "",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.join(HERE, "remote_server.py"),
            self.marker,
            env=env,
            start_new_session=True,  # survives a Hub restart, like a real remote job
        )
        self.pid = proc.pid
        if options.get("start_delay"):
            await asyncio.sleep(float(options["start_delay"]))
        return None if options.get("later") else f"http://127.0.0.1:{port}"

    async def _poll(self):
        if not self.pid:
            return 0
        return None if process_alive(self.pid) else 1

    async def _stop(self, now=False, **kwargs):
        if not self.pid:
            return
        await stop_process_group(self.pid)
        self.pid = 0

    def get_state(self):
        state = super().get_state()
        if self.pid:
            state["pid"] = self.pid
            state["marker"] = self.marker
        return state

    def load_state(self, state):
        super().load_state(state)
        self.pid = state.get("pid", 0)
        self.marker = state.get("marker", "")

    def clear_state(self):
        super().clear_state()
        self.pid = 0
