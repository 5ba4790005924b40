"""RemoteSSHSpawner: single-user servers on a remote host, started, polled and stopped over SSH."""

import base64
import json
import os
import shlex

import asyncssh
from traitlets import Bool, Float, Integer, List, Unicode, default

from . import remote_start
from .hooks import resolve, value_or_callable
from .policy import APIPolicy, log_safe
from .spawner import ForwardBaseSpawner
from .ssh.spec import Endpoint, InvalidSpec

#: the keys ``remote_username`` and ``remote_key`` templates may use
_TEMPLATE_KEYS = ("username", "userid", "servername")


def remote_start_source():
    """The start script's source, as RemoteSSHSpawner sends it (the file need not be on the host)."""
    with open(remote_start.__file__, encoding="utf-8") as f:
        return f.read()


def inline_python_argv(python, source):
    """``python -I -c <code>`` that runs ``source`` as ``__main__``: isolated (no cwd, no user
    site-packages, no PYTHON* variables on ``sys.path``), and one line of base64 (no newline or
    quote reaches the remote shell, whatever shell the account has)."""
    encoded = base64.b64encode(source.encode("utf-8")).decode("ascii")
    code = f"import base64;exec(compile(base64.b64decode('{encoded}'),'remote_start.py','exec'))"
    return [python, "-I", "-c", code]


# APIPolicy's traits (rate limits, SetupTunnel target policy): ForwardBaseSpawner may carry them itself
_BASES = (ForwardBaseSpawner,) if issubclass(ForwardBaseSpawner, APIPolicy) else (APIPolicy, ForwardBaseSpawner)


class RemoteSSHSpawner(*_BASES):
    """Start each user's server on ``remote_host`` over SSH (asyncssh, host keys checked).

    Each user's server runs under that user's own account on the remote host
    (``remote_username``, default ``"{username}"``): servers of different users must not share an
    account, or each could read the others' API tokens (``/proc/*/environ``), stop their servers,
    or plant code that runs in their next start. A shared account is refused unless
    ``remote_shared_account = True`` (single-user set-ups, demos).

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
    remote_username = value_or_callable(
        Unicode(),
        default_value="{username}",
        help="""
        The account on ``remote_host`` that runs this user's server: a template with
        ``{username}``, ``{userid}``, ``{servername}``, or a callable ``(spawner) -> str``, sync or async.
        A template without ``{username}`` or ``{userid}`` names one account for every user and
        is refused unless ``remote_shared_account`` is True.

        Default: "{username}" (the JupyterHub user name).

        Example::

            c.RemoteSSHSpawner.remote_username = "jh-{username}"
        """,
    )
    remote_key = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        Absolute path of the private key for this user's account on ``remote_host``: a template
        with the keys of ``remote_username``, or a callable ``(spawner) -> str``.

        Default: "" (ssh agent / asyncssh's defaults).

        Example::

            c.RemoteSSHSpawner.remote_key = "/srv/jupyterhub/keys/{username}_ed25519"
        """,
    )
    remote_shared_account = Bool(
        False,
        config=True,
        help="""
        Allow one remote account for all users (a ``remote_username`` without ``{username}``).
        Every user's server can then read every other server's API token and files: only for
        a Hub with a single user, or a demo.

        Default: False.

        Example::

            c.RemoteSSHSpawner.remote_shared_account = True
        """,
    )
    remote_python = Unicode(
        "python3",
        config=True,
        help="""
        The Python 3 interpreter on ``remote_host`` that runs the start script (sent over the ssh
        session, see ``remote_start_command``); nothing needs to be installed for it.

        Default: "python3".

        Example::

            c.RemoteSSHSpawner.remote_python = "/usr/bin/python3.11"
        """,
    )

    remote_start_command = List(
        Unicode(),
        [],
        config=True,
        help="""
        The start script on the remote host, as an argv (quoted word by word for the remote shell).
        It is called as ``<this> start -- <server_command>``, ``<this> status PID`` and
        ``<this> stop PID``.

        Default: [] (send :mod:`forwardbasespawner.remote_start`'s source over the ssh session and
        run it with ``remote_python -I -c``: it needs nothing on the remote host but Python 3).

        Example::

            c.RemoteSSHSpawner.remote_start_command = ["/usr/bin/python3", "-I", "/opt/jupyter/remote_start.py"]
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

    offer_slow_start = Bool(False, config=True, help="Show a 'slow start' checkbox on the spawn form (for demos). Default: False.")

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
        # the tunnel logs in as the same account: a callable resolves it for this server
        return lambda spawner, info: spawner._remote_account()[0]

    @default("ssh_key")
    def _default_ssh_key(self):
        return lambda spawner, info: spawner._remote_account()[1]

    @default("options_form")
    def _default_options_form(self):
        if not self.offer_slow_start:
            return ""
        return '<label><input type="checkbox" name="slow"> Slow start (to try cancel)</label>'

    def options_from_form(self, formdata):
        return {"slow": bool(formdata.get("slow"))}

    # ------------------------------------------------------------ remote commands
    def _template_keys(self):
        return {"username": self.user.name, "userid": str(self.user.id), "servername": self.name or ""}

    def _expand(self, value, what):
        if not isinstance(value, str):
            raise InvalidSpec(f"{what} must be a string")
        try:
            return value.format(**self._template_keys())
        except (KeyError, IndexError, ValueError) as e:
            raise InvalidSpec(f"{what} {value[:60]!r} is not a valid template (keys: {', '.join(_TEMPLATE_KEYS)}): {e}") from None

    def _remote_account(self):
        """(account, key) on the remote host for this server; raises InvalidSpec if not allowed.

        Resolved at each start (``_resolved_account``); a sync callable is called here when no
        start has resolved it yet (poll and stop after a Hub restart).
        """
        if self._resolved_account is not None:
            return self._resolved_account
        user, key = self.remote_username, self.remote_key
        if callable(user):
            user = user(self)
        if callable(key):
            key = key(self)
        return self._check_account(user, key)

    _resolved_account = None

    def _check_account(self, user, key, expand=True):
        if not expand:  # an account recorded at the start (state): validated, taken as it is
            Endpoint(self.remote_host, self.remote_port, user, key)
            return user, key
        template = self.remote_username
        if isinstance(template, str) and not callable(template) and not self.remote_shared_account:
            if not any("{" + k + "}" in template for k in ("username", "userid")):
                raise InvalidSpec(
                    f"remote_username {template!r} is one account for every user: each user's server could read "
                    "the others' API tokens and files. Use a template with {username}, or set "
                    "c.RemoteSSHSpawner.remote_shared_account = True for a single-user Hub or a demo"
                )
        user = self._expand(user if user is not None else "{username}", "remote_username")
        key = self._expand(key or "", "remote_key")
        if key and not os.path.isabs(key):
            raise InvalidSpec("remote_key must be an absolute path")
        Endpoint(self.remote_host, self.remote_port, user, key)  # validates both
        return user, key

    async def _resolve_account(self):
        user = await resolve(self.remote_username, self)
        key = await resolve(self.remote_key, self)
        self._resolved_account = self._check_account(user, key)
        return self._resolved_account

    def _remote_endpoint(self):
        user, key = self._remote_account()
        return Endpoint(self.remote_host, self.remote_port, user, key)

    def _start_argv(self):
        if self.remote_start_command:
            return list(self.remote_start_command)
        return inline_python_argv(self.remote_python, remote_start_source())

    async def _remote(self, *words, stdin=None):
        """Run the start script + ``words`` on the remote host; return (exit code, stdout, stderr).

        ssh's own failures are logged in full and raised with a message that names no account,
        path or host detail (it reaches the user's spawn page).
        """
        endpoint = self._remote_endpoint()
        command = " ".join(shlex.quote(w) for w in [*self._start_argv(), *words])
        try:
            async with asyncssh.connect(
                endpoint.host, endpoint.port, username=endpoint.user or None,
                client_keys=[endpoint.key] if endpoint.key else None,
                known_hosts=self.ssh_known_hosts, config=(), connect_timeout=self.ssh_master_start_timeout,
            ) as connection:  # fmt: skip
                result = await connection.run(command, input=stdin, timeout=self.remote_command_timeout, check=False)
        except (OSError, asyncssh.Error, asyncssh.TimeoutError) as e:
            self.log.error("ssh to %s for %s failed: %s", endpoint.describe(), self._log_name, log_safe(e, 1000))
            raise RuntimeError("the remote host could not be reached over ssh (the Hub's log has the reason)") from None
        return result.exit_status, result.stdout or "", result.stderr or ""

    # ------------------------------------------------------------ the subclass contract
    async def _start(self):
        self._resolved_account = None
        await self._resolve_account()
        env = self.get_env()
        if (self.user_options or {}).get("slow"):
            env["FBS_START_DELAY"] = str(self.slow_start_seconds)
        code, out, err = await self._remote("start", "--", *self.server_command, stdin=json.dumps(env))
        if code != 0 or not (out.strip().isascii() and out.strip().isdigit()):
            self.log.error("Start of %s on %s failed (exit code %s): %s", self._log_name, self.remote_host, code,
                           log_safe(err.strip()[-2000:], 2000))  # fmt: skip
            raise RuntimeError(f"the start script on the remote host failed (exit code {code}; the Hub's log has its output)")
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
            self.log.warning("Stopping %s on %s: %s", self._log_name, self.remote_host, log_safe(err.strip()[-200:]))
        self.remote_pid = 0

    def get_state(self):
        state = super().get_state()
        if self.remote_pid:
            state["remote_pid"] = self.remote_pid
            if self._resolved_account is not None:
                state["remote_account"] = list(self._resolved_account)
        return state

    def load_state(self, state):
        super().load_state(state)
        pid = state.get("remote_pid")
        self.remote_pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else 0
        account = state.get("remote_account")
        if isinstance(account, list) and len(account) == 2 and all(isinstance(v, str) for v in account):
            try:  # the account this server was started under (a callable may not be sync)
                self._resolved_account = self._check_account(*account, expand=False)
            except InvalidSpec:
                self._resolved_account = None

    def clear_state(self):
        super().clear_state()
        self.remote_pid = 0
        self._resolved_account = None
