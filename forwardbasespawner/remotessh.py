"""RemoteSSHSpawner: single-user servers on a remote host, started, polled and stopped over SSH."""

import json
import shlex

import asyncssh
from traitlets import Bool, Float, Integer, List, Unicode, default

from .spawner import ForwardBaseSpawner
from .ssh.spec import Endpoint


class RemoteSSHSpawner(ForwardBaseSpawner):
    """Start each user's server on ``remote_host`` over SSH (asyncssh, host keys checked).

    The remote side runs ``remote_start_command start -- <server_command>`` with the server's
    environment on stdin; that start script reports progress, starts the server, and calls
    SetupTunnel when it listens; the Hub then reaches it through an SSH forward via the same host
    (``ssh_node`` defaults to ``remote_host``). Poll and stop run the same script with the PID it
    printed. Nothing the user sends ends up on the remote command line.
    """

    remote_host = Unicode(
        config=True,
        help="""
        The host the servers run on (also the tunnel's jump node unless ``ssh_node`` is set).

        Example::

            c.RemoteSSHSpawner.remote_host = "login1.cluster.example.org"
        """,
    )
    remote_port = Integer(22, config=True, help="SSH port of ``remote_host``. Default: 22.")
    remote_username = Unicode(
        "", config=True, help='User on ``remote_host``. Default: "" (the Hub\'s own user name).'
    )
    remote_key = Unicode(
        "", config=True, help='Absolute path of the private key for ``remote_host``. Default: "" (ssh agent / defaults).'
    )

    remote_start_command = List(
        Unicode(),
        ["python3", "-m", "forwardbasespawner.remote_start"],
        config=True,
        help="""
        The start script on the remote host, as an argv (quoted word by word for the remote shell).
        It is called as ``<this> start -- <server_command>``, ``<this> status PID`` and
        ``<this> stop PID``; ``forwardbasespawner.remote_start`` needs only Python 3.

        Default: ["python3", "-m", "forwardbasespawner.remote_start"].

        Example::

            c.RemoteSSHSpawner.remote_start_command = ["/opt/jupyter/bin/python", "-m", "forwardbasespawner.remote_start"]
        """,
    )

    server_command = List(
        Unicode(),
        ["jupyterhub-singleuser"],
        config=True,
        help="""
        The single-user server's argv on the remote host.

        Default: ["jupyterhub-singleuser"].

        Example::

            c.RemoteSSHSpawner.server_command = ["/opt/jupyter/bin/jupyterhub-singleuser"]
        """,
    )

    slow_start_seconds = Float(
        30,
        config=True,
        help="""
        How long a start waits when the user picks "slow start" (``user_options["slow"]``), to try
        cancel. The user chooses only yes or no, never the number.

        Default: 30.

        Example::

            c.RemoteSSHSpawner.slow_start_seconds = 10
        """,
    )

    offer_slow_start = Bool(
        False, config=True, help="Show a 'slow start' checkbox on the spawn form (for demos). Default: False."
    )

    remote_command_timeout = Float(60, config=True, help="Seconds one remote command may take. Default: 60.")

    remote_pid = 0

    @default("ssh_node")
    def _default_ssh_node(self):
        return self.remote_host

    @default("ssh_port")
    def _default_ssh_port(self):
        return self.remote_port

    @default("ssh_username")
    def _default_ssh_username(self):
        return self.remote_username

    @default("ssh_key")
    def _default_ssh_key(self):
        return self.remote_key

    @default("options_form")
    def _default_options_form(self):
        if not self.offer_slow_start:
            return ""
        return '<label><input type="checkbox" name="slow"> Slow start (to try cancel)</label>'

    def options_from_form(self, formdata):
        return {"slow": bool(formdata.get("slow"))}

    # ------------------------------------------------------------ remote commands
    def _remote_endpoint(self):
        return Endpoint(self.remote_host, self.remote_port, self.remote_username, self.remote_key)

    async def _remote(self, *words, stdin=None):
        """Run ``remote_start_command`` + ``words`` on the remote host; return (exit code, stdout, stderr)."""
        endpoint = self._remote_endpoint()
        command = " ".join(shlex.quote(w) for w in [*self.remote_start_command, *words])
        async with asyncssh.connect(
            endpoint.host, endpoint.port, username=endpoint.user or None,
            client_keys=[endpoint.key] if endpoint.key else None,
            known_hosts=self.ssh_known_hosts, config=(), connect_timeout=self.ssh_master_start_timeout,
        ) as connection:  # fmt: skip
            result = await connection.run(command, input=stdin, timeout=self.remote_command_timeout, check=False)
        return result.exit_status, result.stdout or "", result.stderr or ""

    # ------------------------------------------------------------ the subclass contract
    async def _start(self):
        env = self.get_env()
        if (self.user_options or {}).get("slow"):
            env["FBS_START_DELAY"] = str(self.slow_start_seconds)
        code, out, err = await self._remote("start", "--", *self.server_command, stdin=json.dumps(env))
        if code != 0 or not out.strip().isdigit():
            reason = (err.strip().splitlines() or [f"exit code {code}"])[-1]
            raise RuntimeError(f"starting on {self.remote_host} failed: {reason}")
        self.remote_pid = int(out.strip())
        self.log.info("Started %s on %s as process %s", self._log_name, self.remote_host, self.remote_pid)
        return None  # the start script calls SetupTunnel once the server listens

    async def _poll(self):
        if not self.remote_pid:
            return 0
        code, _, _ = await self._remote("status", str(self.remote_pid))
        return None if code == 0 else 1

    async def _stop(self, now=False, **kwargs):
        if not self.remote_pid:
            return
        code, _, err = await self._remote("stop", str(self.remote_pid))
        if code != 0:
            self.log.warning("Stopping %s on %s: %s", self._log_name, self.remote_host, err.strip()[-200:])
        self.remote_pid = 0

    def get_state(self):
        state = super().get_state()
        if self.remote_pid:
            state["remote_pid"] = self.remote_pid
        return state

    def load_state(self, state):
        super().load_state(state)
        pid = state.get("remote_pid")
        self.remote_pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else 0

    def clear_state(self):
        super().clear_state()
        self.remote_pid = 0
