"""The order of a server's connection: tunnel, Service and route made, checked, restored, removed.

:class:`ConnectionSteps` is mixed into ForwardBaseSpawner. It is the one place that decides in
which order the parts act (the forward before the Service that points at its port; a moved port
before the route that follows it; after a Hub restart the forward, then the Service, before
JupyterHub checks the server) and records each outcome in the spawner's
:class:`~forwardbasespawner.connection.Connection`. The parts themselves are
:mod:`forwardbasespawner.ssh` (reached through the methods of
:class:`~forwardbasespawner.ssh.tunnels.SSHTunnels`) and :mod:`forwardbasespawner.k8s`.
"""

import asyncio
import time
from urllib.parse import urlsplit

from traitlets.config import LoggingConfigurable

from .errors import ForwardError, InvalidSpec, TunnelError
from .hooks import resolve
from .ssh.metrics import TUNNEL_EVENTS


class ConnectionSteps(LoggingConfigurable):
    """Methods that put a server's tunnel, Service and route together and take them apart."""

    # ------------------------------------------------------------ make and remove
    async def run_ssh_forward(self, create_svc=True):
        """Open the tunnel hub → server; return ``(host, port)`` where the Hub reaches it."""
        self.connection.tunnel_open = True  # before the call: stop() must clean up a half-made tunnel
        if not self.port:
            self.port = await self._reserve_port()
        if self.ssh_custom_forward is not None:
            await resolve(self.ssh_custom_forward, self, self.port_forward_info)
        else:
            await self.ssh_default_forward()  # the original's signature: subclasses override it
        if create_svc and await self.svc_enabled():
            return await self.run_svc_create()
        return self._hub_side_host(), self.port

    async def run_ssh_forward_remove(self, delete_svc=True):
        """Remove what :meth:`run_ssh_forward` created; harmless when nothing is there."""
        try:
            if self.ssh_custom_forward_remove is not None:
                await resolve(self.ssh_custom_forward_remove, self, self.port_forward_info)
            elif self.ssh_custom_forward is None:
                await self.ssh_default_forward_remove()
        finally:
            if delete_svc and self.connection.svc_open:
                await self.run_svc_remove()

    async def _delayed_tunnel_address(self):
        """The port was reserved by ``start()``; make the Service now. The forward follows when
        the remote side calls SetupTunnel, on the same port."""
        self._connected_url_out = True
        if await self.svc_enabled():
            return await self.run_svc_create()
        return self._hub_side_host(), self.port

    async def remove_connections(self):
        """Remove the tunnels and the Service this server has; harmless when they are gone.
        Errors are logged: a stop always goes on."""
        connection = self.connection
        if connection.tunnel_open:
            try:
                await self.run_ssh_forward_remove(delete_svc=True)
            except Exception:
                self.log.exception("Removing the tunnel of %s failed", self._log_id)
            connection.tunnel_open = False
        elif connection.svc_open:
            try:
                await self.run_svc_remove()
            except Exception:
                self.log.exception("Removing the Service of %s failed", self._log_id)
        if connection.remote_forward_open:
            try:
                await self.run_ssh_forward_remote_remove()
            except Exception:
                self.log.exception("Removing the tunnel to the Hub of %s failed", self._log_id)
            connection.remote_forward_open = False

    # ------------------------------------------------------------ check and restore
    @property
    def _built_in_forward(self):
        """Whether this server has a forward of this library's own (not ``ssh_custom_forward``)."""
        return self.connection.forwarding and self.ssh_custom_forward is None

    async def check_tunnel(self):
        """None if this server's tunnels are fine, else the reason they are not.

        After a Hub restart (state loaded with open tunnels) the first call restores them, before
        JupyterHub checks that the server answers; until a restore has worked, every later call
        tries again. A forward that the original package's master still serves is adopted rather
        than replaced (see :mod:`forwardbasespawner.ssh.legacy`). A forward that this Hub should
        keep but does not (a failed restore, a failed move) counts as needing a restore too.
        """
        connection = self.connection
        restore = connection.restore_pending
        try:
            if restore and connection.remote_forward_open and self.ssh_remote_forward_mode == "reverse":
                await self.run_ssh_forward_remote()  # asks for the same port again: the server knows it
            if not self._built_in_forward:
                connection.restore_pending = False
                return None
            tunnel = await self.server_tunnel()
            changed = await self._check_forward(tunnel, restore)
            if restore and connection.legacy_state and not connection.svc_open and self.ssh_custom_svc is None:
                if await self.svc_enabled():
                    # the original made a Service for every forward and kept no record of it
                    self._adopt_legacy_service_name()
                    connection.svc_open = changed = True
            connection.restore_pending = False
            if (restore or connection.svc_restore_pending) and connection.svc_open and self.ssh_custom_svc is None:
                await self._restore_service()
            failed = None if self._legacy_forward is not None else tunnel.failure(self.port)
            if failed and await self._move_if_port_taken(tunnel):
                failed, changed = None, True
            if changed:
                self.save_state()  # the port, the Service: the next Hub process must know them
            return failed
        except (TunnelError, InvalidSpec) as e:
            return str(e)

    async def _check_forward(self, tunnel, restore):
        """Bring back a forward this Hub should keep and does not; move one off the original
        package's master that stopped serving it. Returns whether the forward changed."""
        legacy = self._legacy_forward
        if legacy is None and not tunnel.wanted(self.port):
            if restore and await self._adopt_legacy_forward(tunnel.endpoint):
                return True
            # after a Hub restart JupyterHub waits for this poll: keep trying then; later, once
            await self._restore_forward(tunnel, retry=restore)
            return True
        if legacy is not None and not await legacy.serving():
            self.log.info("The original package's master stopped serving %s; moving its forward to ours", self._log_name)
            legacy.forget()
            self._legacy_forward = None
            await self.ssh_default_forward()
            return True
        return bool(restore and legacy is not None)

    async def _restore_service(self):
        try:
            await self.ssh_default_svc()  # recreated if it went missing; ours is kept
            self.connection.svc_restore_pending = False
        except Exception as e:  # the API server may be down: retry at the next poll
            self.log.error("Restoring the Service of %s failed: %s", self._log_name, e)
            self.connection.svc_restore_pending = True

    def _stopped_meanwhile(self):
        """The server was stopped while a restore or a move waited (stop() removed what it knew)."""
        return self.already_stopped or not self.connection.tunnel_open or "service" not in self.port_forward_info

    async def _restore_forward(self, tunnel, retry=True):
        """Bring this server's forward back on its port; with ``retry`` (after a Hub restart, when
        JupyterHub waits for this poll before it checks the server) with backoff until
        ``ssh_tunnel_grace`` after it was first found missing, else once. A port another process
        took meanwhile makes the forward move. A stop meanwhile ends the retries and leaves nothing
        behind."""
        if self._tunnel_broken_since is None:
            self._tunnel_broken_since = time.monotonic()
        deadline = self._tunnel_broken_since + self.ssh_tunnel_grace
        delay = 0.5
        while True:
            try:
                await self.ssh_default_forward()
                if self._stopped_meanwhile():
                    await tunnel.close(self.port)
                    raise TunnelError("the server was stopped while its tunnel was being restored")
                TUNNEL_EVENTS.labels(node=tunnel.endpoint.host, event="restored").inc()
                self.log.info("Tunnel of %s restored (port %s)", self._log_name, self.port)
                return
            except ForwardError as e:
                if await self._move_if_port_taken(tunnel):
                    return
                error = e
            except TunnelError as e:
                error = e
            if not retry or self._stopped_meanwhile() or time.monotonic() + delay > deadline:
                raise error
            self.log.warning("Restoring the tunnel of %s failed (%s); trying again in %.1fs", self._log_name, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _move_if_port_taken(self, tunnel):
        """If another process listens on this server's forward port, move the forward to a fresh
        port and point the route (Service, proxy) there: the user's URL keeps working. Returns
        whether it moved."""
        if not await tunnel.port_taken_by_another(self.port):
            return False
        port = await tunnel.move(self.port, lambda: not self._stopped_meanwhile())
        if port is None:
            return False
        self.port = port
        if self.connection.svc_open and self.ssh_custom_svc is None:
            await self.ssh_default_svc()  # the same Service, now to the new port
        await self._update_route()
        return True

    async def _update_route(self):
        """Point the server's record and the proxy's route at ``self.port``. During JupyterHub's
        start-up check it does this itself from :meth:`get_url`."""
        server = getattr(self, "server", None)
        if server is None or server.port == self.port:
            return
        server.port = self.port
        self.db.commit()
        proxy = (getattr(self.user, "settings", None) or {}).get("proxy")
        if proxy is not None and not self.pending:
            await proxy.add_user(self.user, self.name)

    async def get_url(self):
        """The server's URL; its port follows a forward that had to move."""
        url = await super().get_url()
        if self.connection.tunnel_open and self.port and url:
            parts = urlsplit(url)
            if parts.port and parts.port != self.port:
                url = parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{self.port}").geturl()
        return url

    async def tunnel_is_up(self):
        """Whether this server's forward to ``port_forward_info["service"]`` is wanted and working
        (on a master of ours, or adopted from the original package's)."""
        if not self._built_in_forward:
            return False
        if self._legacy_forward is not None:
            return True
        try:
            tunnel = await self.server_tunnel()
        except InvalidSpec:
            return False
        return tunnel.is_up(self.port)

    def _adopt_legacy_service_name(self):
        """The original returned ``http://<svc_name>.<namespace>.svc:<port>`` and named the Service
        its own way: take the name from the server's recorded URL."""
        host = urlsplit(self.server.url).hostname if getattr(self, "server", None) else None
        suffix = f".{self.namespace}.svc"
        if host and host.endswith(suffix) and "." not in host[: -len(suffix)]:
            self.svc_name = host[: -len(suffix)]


__all__ = ["ConnectionSteps"]
