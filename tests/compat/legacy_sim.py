"""A ForwardBaseSpawner subclass written in the ORIGINAL package's conventions (jupyterhub-
forwardbasespawner 2.1.2), which must work unchanged on the original and on ours (tests/compat).

Its "remote system" is a local process running tests/remote_server.py (FBS_SIM_* environment, as
tests/remotesim.py drives it), in a session of its own so that it outlives the Hub. ``user_options``:

- ``later``: ``_start()`` returns "" (the original's "case 3": the address is not known yet); the
  process calls SetupTunnel with ``{"service": "127.0.0.1:<port>"}`` once it listens. Otherwise
  ``_start()`` returns "127.0.0.1:<port>" and the base opens the tunnel at once
  (configure ``ssh_during_startup`` accordingly, see tests/compat/test_upgrade.py).
- ``wait_file``: the process starts to listen (and calls SetupTunnel) only once this file exists.
- ``events``: progress events it posts before it listens.

This module imports nothing of this repository: the original Hub loads it from a directory that
holds only this file.
"""

import asyncio
import os
import sys
import uuid

from jupyterhub.utils import random_port
from processes import process_alive, stop_process_group  # copied beside this module by the test
from traitlets import Unicode

from forwardbasespawner import ForwardBaseSpawner


class LegacySimSpawner(ForwardBaseSpawner):
    remote_server = Unicode(config=True, help="Path of tests/remote_server.py")
    remote_wrapper = Unicode(config=True, help="Path of tests/compat/legacy_remote.py (waits for a file)")

    pid = 0
    marker = ""

    async def _start(self):
        options = self.user_options or {}
        later = bool(options.get("later"))
        port = random_port()
        self.marker = f"fbs-legacy-{self.user.name}-{self.name or 'default'}-{uuid.uuid4().hex}"
        env = dict(os.environ)
        env.update(self.get_env())
        env.update(
            FBS_SIM_MARKER=self.marker,
            FBS_SIM_PORT=str(port),
            FBS_SIM_EVENTS=str(options.get("events", 0)),
            FBS_SIM_EVENT_DELAY="0",
            FBS_SIM_FAIL="",
            FBS_SIM_SETUPTUNNEL="1" if later else "",
        )
        argv = [sys.executable, self.remote_server, self.marker]
        if options.get("wait_file"):
            argv = [sys.executable, self.remote_wrapper, options["wait_file"], self.remote_server, self.marker]
        proc = await asyncio.create_subprocess_exec(*argv, env=env, start_new_session=True)
        self.pid = proc.pid
        self.log.info(f"{self._log_name} - started remote process {self.pid} ({self.marker}) on port {port}")
        if later:
            return ""
        return f"127.0.0.1:{port}"

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
        self.marker = ""
