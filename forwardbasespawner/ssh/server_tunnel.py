"""One server's tunnels as objects: the forward hub → server, and the way back server → hub.

Each takes resolved settings (the shared :class:`~forwardbasespawner.ssh.supervisor.TunnelManager`,
an :class:`~forwardbasespawner.ssh.spec.Endpoint`, addresses, ports) and never reads a spawner: the
spawner resolves its traits and hooks, decides the order (tunnel before Service, restore before the
poll answers) and records the outcome in its :class:`~forwardbasespawner.connection.Connection`.
"""

import asyncio

from ..errors import ForwardError, TunnelError
from . import legacy
from .metrics import TUNNEL_EVENTS
from .openssh import remote_command_argv, run_argv
from .ports import allocate_port, port_is_free
from .spec import Forward


class ServerTunnel:
    """The forward ``bind_host:port`` (on the Hub) → jump node ``endpoint`` → ``target`` (host, port)."""

    def __init__(self, manager, endpoint, *, bind_host, target, name, log, ssh="ssh"):
        self.manager = manager
        self.endpoint = endpoint
        self.bind_host = bind_host
        self.target = target
        self.name = name  # user:server, for log lines
        self.log = log
        self.ssh = ssh

    def forward(self, port):
        """The ``-L`` forward on ``port``."""
        return Forward("L", self.bind_host, port, *self.target)

    async def open(self, port, *, recreate=False, fresh_ports=0):
        """Make the forward on ``port``; return the port it listens on. With ``fresh_ports``, a
        port that turns out taken is replaced by a fresh one up to that many times (only while
        nobody was told the port yet). ``recreate`` cancels a forward of the same spec first."""
        for attempt in range(fresh_ports + 1):
            forward = self.forward(port)
            if recreate:
                await self.manager.remove(self.endpoint, forward)
            try:
                await self.manager.add(self.endpoint, forward)
                break
            except ForwardError as e:
                if attempt == fresh_ports:
                    raise
                self.log.warning("Port %s for %s was taken (%s); trying another", port, self.name, e)
                port = allocate_port(self.bind_host)
        self.log.info("Tunnel for %s: %s via %s", self.name, forward.argument(), self.endpoint.describe())
        return port

    async def close(self, port):
        """Remove the forward on ``port``; harmless when it is gone."""
        await self.manager.remove(self.endpoint, self.forward(port))

    def wanted(self, port):
        """Whether the Hub keeps the forward on ``port`` up (a master of ours carries or restores it)."""
        return self.manager.wants(self.endpoint, self.forward(port))

    def failure(self, port):
        """Why the forward on ``port`` could not be restored by its master, or None."""
        return self.manager.is_failed(self.forward(port))

    def is_up(self, port):
        return self.wanted(port) and not self.failure(port)

    async def port_taken_by_another(self, port):
        """Whether a process that is not one of the Hub's masters listens on ``port``. The
        listeners' owners are read from /proc in a thread, off the Hub's event loop."""
        if port_is_free(self.bind_host, port):
            return False
        return not await asyncio.to_thread(self.manager.holds_port, port)

    async def move(self, port, still_wanted):
        """Move the forward from ``port`` (taken by another process) to a fresh port; return the
        new port, or None when ``still_wanted()`` says the server stopped meanwhile (nothing is
        left behind then)."""
        await self.close(port)
        new_port = allocate_port(self.bind_host)
        await self.manager.add(self.endpoint, self.forward(new_port))
        if not still_wanted():
            await self.close(new_port)
            return None
        TUNNEL_EVENTS.labels(node=self.endpoint.host, event="moved").inc()
        self.log.warning("Port %s of %s is taken by another process: its tunnel moved to port %s", port, self.name, new_port)
        return new_port


class LegacyForward:
    """A server's forward that the original package's ssh master (``/tmp/control_<node>``) still
    serves after an upgrade in place: adopted, so the server sees no gap (see :mod:`.legacy`)."""

    def __init__(self, path, node, port, target, *, ssh="ssh"):
        self.path = path
        self.node = node
        self.port = port
        self.spec = legacy.legacy_forward_spec(port, *target)
        self.ssh = ssh

    @classmethod
    async def adopt(cls, template, node, port, target, *, ssh="ssh"):
        """The adopted forward if the original's master for ``node`` serves ``port``, else None."""
        if not template:
            return None
        path = legacy.legacy_control_path(template, node)
        if not await legacy.legacy_master_serving(path, node, port, ssh=ssh):
            return None
        legacy.adopt(path, port)
        return cls(path, node, port, target, ssh=ssh)

    async def serving(self):
        """Whether the original's master still listens on the port."""
        return await legacy.legacy_master_serving(self.path, self.node, self.port, ssh=self.ssh)

    def forget(self):
        """It stopped serving by itself."""
        legacy.forget(self.path, self.port)

    async def release(self, log):
        """Cancel it on the original's master (which exits when none is left)."""
        await legacy.release(self.path, self.node, self.spec, self.port, ssh=self.ssh, log=log)


class HubTunnel:
    """The way back server → hub through ``endpoint``: a remote forward (``mode == "reverse"``,
    ``127.0.0.1:<port>`` on the node → ``hub_target``), or the original package's forced commands
    ``ssh <node> start|status|stop`` (``mode == "command"``), which make their own tunnel."""

    def __init__(self, manager, endpoint, *, mode, hub_target, name, log, ssh="ssh", known_hosts="",
                 strict_host_key_checking="yes", command_timeout=30, success_code=217):  # fmt: skip
        self.manager = manager
        self.endpoint = endpoint
        self.mode = mode
        self.hub_target = hub_target
        self.name = name
        self.log = log
        self.ssh = ssh
        self.known_hosts = known_hosts
        self.strict_host_key_checking = strict_host_key_checking
        self.command_timeout = command_timeout
        self.success_code = success_code

    def forward(self, port):
        return Forward("R", "127.0.0.1", port, *self.hub_target)

    async def open(self, port=0):
        """Open it; return the node's port (the one asked for, or the one the node allocated for 0)."""
        if self.mode == "command":
            await self._command("start")
            return port
        allocated = await self.manager.add(self.endpoint, self.forward(int(port or 0)))
        port = allocated or int(port or 0)
        self.log.info("Tunnel to the Hub for %s: port %s on %s", self.name, port, self.endpoint.describe())
        return port

    async def close(self, port=0):
        """Close it; harmless when it is gone."""
        if self.mode == "command":
            try:
                await self._command("stop")
            except TunnelError as e:
                self.log.warning("Stopping the tunnel to the Hub of %s: %s", self.name, e)
        elif port:
            await self.manager.remove(self.endpoint, self.forward(int(port)))

    async def _command(self, action):
        """Run ``ssh <node> <action>`` as the original package did (forced-command scripts on jump
        nodes match these words literally); a ``start`` that does not answer in time is followed
        by ``status``."""
        try:
            rc, err = await self._run(action)
        except asyncio.TimeoutError:
            if action != "start":
                raise TunnelError(f"'{action}' on {self.endpoint.describe()} did not answer in time") from None
            self.log.info("'start' on %s for %s did not answer in time; asking 'status'", self.endpoint.describe(), self.name)
            try:
                rc, err = await self._run("status")
            except asyncio.TimeoutError:
                raise TunnelError(f"neither 'start' nor 'status' on {self.endpoint.describe()} answered in time") from None
        if action == "start" and rc != self.success_code:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {rc}"]
            raise TunnelError(f"the tunnel to the Hub on {self.endpoint.describe()} failed: {reason[0]}")

    async def _run(self, action):
        argv = remote_command_argv(
            self.endpoint, action, ssh=self.ssh, known_hosts=self.known_hosts,
            strict_host_key_checking=self.strict_host_key_checking,
        )  # fmt: skip
        rc, _, err = await run_argv(argv, timeout=self.command_timeout)
        return rc, err


__all__ = ["HubTunnel", "LegacyForward", "ServerTunnel"]
