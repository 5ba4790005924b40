"""A real JupyterHub with a real configurable-http-proxy, as separate processes, for tests and benchmarks.

The proxy is started by us (as on Zero to JupyterHub), so the Hub can be restarted while the
proxy and the servers' routes stay. Every process is stopped by PID.
"""

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap

import aiohttp

from tests.processes import process_environ, processes_with, ssh_processes
from tests.sshd import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHP = os.path.join(REPO, "node_modules", ".bin", "configurable-http-proxy")

ADMIN_SCOPES = [
    "admin:users", "admin:servers", "admin:server_state", "tokens", "shares",
    "read:servers", "access:servers", "list:users", "read:users", "read:metrics",
]  # fmt: skip


def hub_config(hub, extra):
    return textwrap.dedent(
        f"""
        c = get_config()  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {hub.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {hub.hub_port}
        c.ConfigurableHTTPProxy.should_start = False
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{hub.proxy_api_port}"
        c.ConfigurableHTTPProxy.auth_token = {hub.proxy_token!r}
        c.JupyterHub.db_url = "sqlite:///{hub.dir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{hub.dir}/cookie_secret"
        c.JupyterHub.pid_file = "{hub.dir}/hub.pid"
        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"admin"}}
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.spawner_class = "tests.remotesim.SimulatedRemoteSpawner"
        # answer a spawn request at once (202), so tests watch the spawn while it is pending
        c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
        c.Spawner.http_timeout = 30
        c.Spawner.start_timeout = 60
        c.JupyterHub.services = [{{"name": "test-admin", "api_token": {hub.admin_token!r}}}]
        c.JupyterHub.load_roles = [
            {{"name": "test-admin", "scopes": {ADMIN_SCOPES!r}, "services": ["test-admin"]}},
            {{"name": "user", "scopes": ["self", "shares!user"]}},
        ]
        """
    ) + textwrap.dedent(extra)


class Hub:
    """One Hub + proxy in a temporary directory; ``url`` is the proxy's public URL."""

    def __init__(self, directory, extra_config="", debug=True, python=None, pythonpath=None):
        self.dir = str(directory)
        # the Hub's interpreter (another venv's, e.g. the original package's) and the PYTHONPATH it
        # gets (default: this repo first); both may be changed between stop_hub() and start_hub()
        self.python = python or sys.executable
        self.pythonpath = pythonpath
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.proxy_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.extra_config = extra_config
        self.debug = debug
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/hub/api"
        self.proxy = None
        self.hub = None
        self.session = None
        self.log_path = os.path.join(self.dir, "hub.log")

    async def start(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "jupyterhub_config.py"), "w") as f:
            f.write(hub_config(self, self.extra_config))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.proxy = subprocess.Popen(
            [CHP, "--ip", "127.0.0.1", "--port", str(self.port), "--api-ip", "127.0.0.1",
             "--api-port", str(self.proxy_api_port), "--error-target",
             f"http://127.0.0.1:{self.hub_port}/hub/error", "--log-level", "warn"],
            env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.proxy_token},
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "proxy.log"), "ab"),
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
        )  # fmt: skip
        await self.start_hub()

    async def start_hub(self):
        if self.pythonpath is None:
            pythonpath = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
        else:
            pythonpath = self.pythonpath
        env = {**os.environ, "PYTHONPATH": pythonpath}
        log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.hub = subprocess.Popen(
            [self.python, "-m", "jupyterhub", "-f", "jupyterhub_config.py"] + (["--debug"] if self.debug else []),
            cwd=self.dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),
            start_new_session=True,
        )
        for _ in range(300):
            if self.hub.poll() is not None:
                raise RuntimeError(f"the Hub exited with {self.hub.returncode}:\n{self.log_tail()}")
            try:
                async with self.session.get(f"{self.api}/", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    # JupyterHub answers before it has checked the proxy's routes and installed its
                    # SIGTERM handler; it says "now running" after both
                    if r.status == 200 and self._logged_since(log_start, "JupyterHub is now running"):
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the Hub did not come up:\n{self.log_tail()}")

    def _logged_since(self, offset, text):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return text.encode() in f.read()

    async def stop_hub(self):
        if self.hub and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            for _ in range(100):
                if self.hub.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.hub.kill()
                self.hub.wait()
        self.hub = None

    async def restart_hub(self):
        await self.stop_hub()
        await self.start_hub()

    def kill_hub(self):
        """SIGKILL the Hub (a crash, an OOM kill): no clean-up of its own runs."""
        if self.hub and self.hub.poll() is None:
            self.hub.kill()
            self.hub.wait()
        self.hub = None

    async def close(self):
        await self.stop_hub()
        if self.proxy and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        if self.session:
            await self.session.close()

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # --- REST helpers ---
    async def request(self, method, path, token=None, body=None, data=None, headers=None):
        """``(status, parsed JSON or text)`` of an API call; ``token`` defaults to the admin service."""
        all_headers = {"Authorization": f"token {token or self.admin_token}"}
        all_headers.update(headers or {})
        if body is not None:
            data = json.dumps(body)
        async with self.session.request(method, f"{self.api}{path}", data=data, headers=all_headers) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def spawn(self, user, server="", options=None):
        """Create ``user`` if needed and ask for their ``server`` with ``options``; the answer is
        201 or 202 (the start may still be pending)."""
        await self.request("POST", f"/users/{user}")
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        status, reply = await self.request("POST", path, body=options or {})
        assert status in (201, 202), (status, reply, self.log_tail(20))

    async def user_token(self, name, scopes=None):
        await self.request("POST", f"/users/{name}")
        body = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        status, reply = await self.request("POST", f"/users/{name}/tokens", body=body)
        assert status == 201, (status, reply)
        return reply["token"]

    async def server_model(self, name, server=""):
        status, reply = await self.request("GET", f"/users/{name}?include_stopped_servers=1")
        assert status == 200, reply
        return reply["servers"].get(server)

    async def wait_for(self, predicate, timeout=30, interval=0.1):
        for _ in range(int(timeout / interval)):
            result = await predicate()
            if result:
                return result
            await asyncio.sleep(interval)
        raise AssertionError(f"timed out waiting for {predicate.__name__}\n{self.log_tail()}")

    async def wait_ready(self, name, server=""):
        async def ready():
            model = await self.server_model(name, server)
            return model if model and model["ready"] and not model["pending"] else None

        return await self.wait_for(ready)

    async def wait_stopped(self, name, server=""):
        async def stopped():
            model = await self.server_model(name, server)
            return not model or not (model["ready"] or model["pending"]) and (model.get("stopped", True))

        return await self.wait_for(stopped)

    async def progress_events(self, name, server="", token=None, on_open=None):
        """Read the real progress EventStream of a server until it ends; return its events.

        JupyterHub answers 400 "is not starting" while it cleans up after a start that failed:
        ``User.stop()`` clears the pending flag before the spawn's outcome is set, for any spawner
        (a window of a few milliseconds, in JupyterHub 5.4 and 6.x alike). A browser that asks
        then sees the same; the stream is asked again until the Hub knows the outcome."""
        path = f"/users/{name}/servers/{server}/progress"
        headers = {"Authorization": f"token {token or self.admin_token}"}
        events = []
        for _ in range(100):
            r = await self.session.get(f"{self.api}{path}", headers=headers)
            if r.status != 400 or "is not starting" not in await r.text():
                break
            r.release()
            await asyncio.sleep(0.05)
        async with r:
            assert r.status == 200, await r.text()
            if on_open:
                await on_open()
            async for line in r.content:
                line = line.decode().strip()
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        return events


@contextlib.asynccontextmanager
async def running_hub(directory, config, **kwargs):
    """A Hub with tunnels for a test module; its ssh control directory is ``<directory>/ctl``
    (``hub.control_dir``), and no ssh process of it may outlive the Hub and its servers."""
    hub = Hub(directory, extra_config=config, **kwargs)
    hub.control_dir = f"{directory}/ctl"
    try:
        await hub.start()
        yield hub
    finally:
        await hub.close()
    assert ssh_processes(hub.control_dir) == [], "an ssh master outlived the Hub"


def server_token(marker_prefix):
    """The API token JupyterHub gave a server, read from its (one) process's environment."""
    (pid,) = processes_with(marker_prefix)
    return process_environ(pid)["JUPYTERHUB_API_TOKEN"]
