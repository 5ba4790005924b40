"""The SSH side of ForwardBaseSpawner: its traits and the hub → server forward."""

import asyncio
import dataclasses
import time
from urllib.parse import urlsplit

from traitlets.config import LoggingConfigurable

from ..addresses import parse_server_address
from ..hooks import resolve
from . import legacy
from .asyncssh import AsyncsshMaster
from .controldir import default_control_dir  # noqa: F401 (its old place)
from .openssh import ControlMaster, ForwardError, TunnelError, remote_command_argv, run_argv
from .metrics import TUNNEL_EVENTS
from .ports import allocate_port, port_is_free
from .spec import Endpoint, Forward, InvalidSpec, split_original_options
from .registry import shared_manager, tunnel_managers
from .supervisor import TunnelManager




def set_by_caller(info, setting):
    """Whether ``port_forward_info`` (a SetupTunnel caller's fragment, or an old state row) sets
    the endpoint ``setting`` itself; it then wins over the operator's ssh options."""
    key = {"port": "ssh_port", "user": "ssh_username", "key": "ssh_key"}.get(setting)
    return key is not None and key in info


class SSHTunnels(LoggingConfigurable):
    """Methods of the hub → server tunnel (mixed into ForwardBaseSpawner; its traits are
    :class:`~forwardbasespawner.traits.ssh.SSHTunnelTraits`)."""

    # ------------------------------------------------------------ the manager and the endpoint
    @staticmethod
    def tunnel_managers():
        """Every TunnelManager of the running event loop."""
        return tunnel_managers()

    def tunnel_manager(self):
        """The Hub's shared :class:`TunnelManager` (one per event loop, control directory and backend)."""
        return shared_manager(
            (self.ssh_control_dir, self.ssh_backend),
            lambda: TunnelManager(
                self.log,
                directory=self.ssh_control_dir,
                ssh=self.ssh_binary,
                master_args=dict(
                    known_hosts=self.ssh_known_hosts,
                    strict_host_key_checking=self.ssh_strict_host_key_checking,
                    ciphers=self.ssh_ciphers,
                ),
                start_timeout=self.ssh_master_start_timeout,
                check_interval=self.ssh_check_interval,
                restore_attempts=self.ssh_restore_attempts,
                idle_timeout=self.ssh_master_idle_timeout,
                master_class=AsyncsshMaster if self.ssh_backend == "asyncssh" else ControlMaster,
                forwards_per_master=self.ssh_forwards_per_master,
                adopt_grace=self.ssh_adopt_grace,
            ),
        )

    async def _setting(self, name, info):
        """A key of ``info`` (part of ``port_forward_info``) overrides the trait of the same name."""
        if name in info:
            return info[name]
        return await resolve(getattr(self, name), self, info)

    async def _build_ssh_endpoint(self, info, node, port, username, key, options):
        """An :class:`Endpoint` from the settings with these names, validated (raises InvalidSpec)."""
        host = await self._setting(node, info)
        if not host:
            raise InvalidSpec(f"no {node} is configured for the tunnel")
        settings = dict(
            port=await self._setting(port, info),
            user=await self._setting(username, info) or "",
            key=await self._setting(key, info) or "",
        )
        # the operator's options: the original package's vocabulary is understood
        original, ssh_options, dropped = split_original_options(dict(await resolve(getattr(self, options), self, info) or {}))
        settings.update({k: v for k, v in original.items() if not set_by_caller(info, k)})
        if dropped:
            self.log.debug("%s: ssh options %s are not needed here (masters are run by this library)", options, dropped)
        if info.get(options):  # a caller's (or an old state row's): allow-listed options only, on top
            ssh_options.update(dict(info[options]))
        port = settings["port"]
        # the original package's forms: a port as a string, None for "not set"
        digits = isinstance(port, str) and port.strip().isascii() and port.strip().isdigit()
        settings["port"] = int(port) if digits else (port or 22)
        return Endpoint(host=host, options=ssh_options, **settings)

    async def get_ssh_endpoint(self):
        """The jump node and identity for this server's tunnel hub → server."""
        endpoint = await self._build_ssh_endpoint(
            self.port_forward_info, "ssh_node", "ssh_port", "ssh_username", "ssh_key", "ssh_forward_options"
        )
        if self.ssh_node_mapping is not None:
            mapped = await resolve(self.ssh_node_mapping, self, endpoint.host)
            endpoint = dataclasses.replace(endpoint, host=mapped)
        return endpoint

    def _local_forward(self, port):
        host, target_port = parse_server_address(self.port_forward_info["service"])[1:]
        return Forward("L", self.ssh_forward_bind_host, port, host, target_port)

    async def _pinned_port(self):
        """The port set by ``custom_port`` or ``c.Spawner.port``, or 0 for a fresh one."""
        port = await resolve(self.custom_port, self, self.user_options or {})
        return int(port or self._configured_port or 0)


    def _hub_side_host(self):
        """Where the Hub itself connects to a forward's listening end."""
        host = self.ssh_forward_bind_host
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    async def _reserve_port(self):
        """The port for this start's forward: pinned, or a fresh free one."""
        self._connected_url_out = False
        return await self._pinned_port() or allocate_port(self.ssh_forward_bind_host)

    _connected_url_out = True  # the server's URL (with self.port) has been handed out: keep the port

    # ------------------------------------------------------------ server → hub
    async def get_ssh_remote_endpoint(self):
        """The node and identity for the tunnel server → hub."""
        info = self.port_forward_info.setdefault("remote", {})
        return await self._build_ssh_endpoint(
            info, "ssh_remote_node", "ssh_remote_port", "ssh_remote_username", "ssh_remote_key", "ssh_forward_remote_options"
        )

    def _hub_api_target(self):
        """host and port of the Hub API as this Hub process reaches it (the remote forward's target)."""
        parts = urlsplit(self.hub.api_url)
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)

    def _remote_forward(self, port):
        host, hub_port = self._hub_api_target()
        return Forward("R", "127.0.0.1", port, host, hub_port)

    async def ssh_default_forward_remote(self):
        """Make the server → hub tunnel (see ``ssh_remote_forward_mode``)."""
        info = self.port_forward_info.setdefault("remote", {})
        endpoint = await self.get_ssh_remote_endpoint()
        if self.ssh_remote_forward_mode == "command":
            await self._remote_command(endpoint, "start")
            return
        allocated = await self.tunnel_manager().add(endpoint, self._remote_forward(int(info.get("port") or 0)))
        info["port"] = allocated or int(info.get("port") or 0)
        self.log.info("Tunnel to the Hub for %s: port %s on %s", self._log_name, info["port"], endpoint.describe())

    async def ssh_default_forward_remote_remove(self):
        info = self.port_forward_info.get("remote") or {}
        try:
            endpoint = await self.get_ssh_remote_endpoint()
        except InvalidSpec:
            return
        if self.ssh_remote_forward_mode == "command":
            try:
                await self._remote_command(endpoint, "stop")
            except TunnelError as e:
                self.log.warning("Stopping the tunnel to the Hub of %s: %s", self._log_name, e)
        elif info.get("port"):
            await self.tunnel_manager().remove(endpoint, self._remote_forward(int(info["port"])))

    async def _remote_command(self, endpoint, action):
        """Run ``ssh <node> <action>`` as the original package did (forced-command scripts on jump
        nodes match these words literally); a ``start`` that does not answer in time is followed
        by ``status``."""
        try:
            rc, err = await self._run_remote_command(endpoint, action)
        except asyncio.TimeoutError:
            if action != "start":
                raise TunnelError(f"'{action}' on {endpoint.describe()} did not answer in time") from None
            self.log.info("'start' on %s for %s did not answer in time; asking 'status'", endpoint.describe(), self._log_name)
            rc, err = await self._run_remote_command(endpoint, "status")
        if action == "start" and rc != self.ssh_remote_command_success_code:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {rc}"]
            raise TunnelError(f"the tunnel to the Hub on {endpoint.describe()} failed: {reason[0]}")

    async def _run_remote_command(self, endpoint, action):
        argv = remote_command_argv(
            endpoint, action, ssh=self.ssh_binary, known_hosts=self.ssh_known_hosts,
            strict_host_key_checking=self.ssh_strict_host_key_checking,
        )  # fmt: skip
        rc, _, err = await run_argv(argv, timeout=self.ssh_remote_command_timeout)
        return rc, err

    async def run_ssh_forward_remote(self):
        info = self.port_forward_info.setdefault("remote", {})
        if self.ssh_custom_forward_remote is not None:
            await resolve(self.ssh_custom_forward_remote, self, info)
        else:
            await self.ssh_default_forward_remote()

    async def run_ssh_forward_remote_remove(self):
        info = self.port_forward_info.setdefault("remote", {})
        if self.ssh_custom_forward_remote_remove is not None:
            await resolve(self.ssh_custom_forward_remote_remove, self, info)
        elif self.ssh_custom_forward_remote is None:
            await self.ssh_default_forward_remote_remove()

    # ------------------------------------------------------------ the forward itself
    async def ssh_default_forward(self):
        """Open the forward hub → ``port_forward_info["service"]`` through the jump node, on
        ``self.port`` (reserved by ``start()``, or restored from state).

        While ``start()`` runs and the port was picked freely (not ``custom_port`` or
        ``c.Spawner.port``), a port that turns out taken is replaced by a fresh one; once the
        server's URL is out (a delayed tunnel, a restore) the port stays. Subclasses of the
        original package override this method without arguments and call ``super()``.
        """
        manager = self.tunnel_manager()
        endpoint = await self.get_ssh_endpoint()
        if not self.port:
            self.port = await self._reserve_port()
        movable = self._start_running() and not self._connected_url_out and not await self._pinned_port()
        attempts = 5 if movable else 1
        for attempt in range(1, attempts + 1):
            forward = self._local_forward(self.port)
            if await resolve(self.ssh_recreate_at_start, self):
                await manager.remove(endpoint, forward)
            try:
                await manager.add(endpoint, forward)
                break
            except ForwardError as e:
                if attempt == attempts:
                    raise
                self.log.warning("Port %s for %s was taken (%s); trying another", self.port, self._log_name, e)
                self.port = allocate_port(self.ssh_forward_bind_host)
        self.tunnel_node = endpoint.host
        self.log.info("Tunnel for %s: %s via %s", self._log_name, forward.argument(), endpoint.describe())

    def _start_running(self):
        task = getattr(self, "_start_task", None)
        return task is not None and not task.done()

    async def ssh_default_forward_remove(self):
        """Remove this server's forward; harmless when it is gone."""
        if not self.port or "service" not in self.port_forward_info:
            return
        if self._legacy_forward:
            await self._release_legacy_forward()
            return
        try:
            endpoint = await self.get_ssh_endpoint()
        except InvalidSpec:
            return  # nothing valid was ever forwarded
        await self.tunnel_manager().remove(endpoint, self._local_forward(self.port))

    async def run_ssh_forward(self, create_svc=True):
        """Open the tunnel hub → server; return ``(host, port)`` where the Hub reaches it."""
        self._tunnel_open = True  # before the call: stop() must clean up a half-made tunnel
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
            if delete_svc and self._svc_open:
                await self.run_svc_remove()

    async def _delayed_tunnel_address(self):
        """The port was reserved by ``start()``; make the Service now. The forward follows when
        the remote side calls SetupTunnel, on the same port."""
        self._connected_url_out = True
        if await self.svc_enabled():
            return await self.run_svc_create()
        return self._hub_side_host(), self.port

    async def check_tunnel(self):
        """None if this server's tunnels are fine, else the reason they are not.

        After a Hub restart (state loaded with open tunnels) the first call restores them, before
        JupyterHub checks that the server answers; until a restore has worked, every later call
        tries again. A forward that the original package's master still serves is adopted rather
        than replaced (see :mod:`forwardbasespawner.ssh.legacy`). A forward that this Hub should
        keep but does not (a failed restore, a failed move) counts as needing a restore too.
        """
        restore = self._tunnel_needs_restore
        try:
            if restore and self._remote_forward_open and self.ssh_remote_forward_mode == "reverse":
                await self.run_ssh_forward_remote()  # asks for the same port again: the server knows it
            if not (self._tunnel_open and self.port and "service" in self.port_forward_info) or self.ssh_custom_forward:
                self._tunnel_needs_restore = False
                return None
            endpoint = await self.get_ssh_endpoint()
            manager = self.tunnel_manager()
            missing = not manager.wants(endpoint, self._local_forward(self.port)) and not self._legacy_forward
            changed = False
            if missing and not (restore and await self._adopt_legacy_forward(endpoint)):
                # after a Hub restart JupyterHub waits for this poll: keep trying then; later, once
                await self._restore_forward(endpoint, retry=restore)
                changed = True
            elif self._legacy_forward and not await legacy.legacy_master_serving(
                self._legacy_forward[0], endpoint.host, self.port, ssh=self.ssh_binary
            ):
                self.log.info("The original package's master stopped serving %s; moving its forward to ours", self._log_name)
                legacy.forget(self._legacy_forward[0], self.port)
                self._legacy_forward = None
                await self.ssh_default_forward()
                changed = True
            changed = changed or bool(restore and self._legacy_forward)
            if restore and self._legacy_state and not self._svc_open and self.ssh_custom_svc is None and await self.svc_enabled():
                # the original made a Service for every forward and kept no record of it
                self._adopt_legacy_service_name()
                self._svc_open = True
                changed = True
            self._tunnel_needs_restore = False
            if (restore or self._svc_restore_pending) and self._svc_open and self.ssh_custom_svc is None:
                try:
                    await self.ssh_default_svc()  # recreated if it went missing; ours is kept
                    self._svc_restore_pending = False
                except Exception as e:  # the API server may be down: retry at the next poll
                    self.log.error("Restoring the Service of %s failed: %s", self._log_name, e)
                    self._svc_restore_pending = True
            if self._legacy_forward:
                failed = None
            else:
                failed = manager.is_failed(self._local_forward(self.port))
                if failed and await self._move_if_port_taken(endpoint):
                    failed, changed = None, True
            if changed:
                self.save_state()  # the port, the Service: the next Hub process must know them
            return failed
        except (TunnelError, InvalidSpec) as e:
            return str(e)

    def _stopped_meanwhile(self):
        """The server was stopped while a restore or a move waited (stop() removed what it knew)."""
        return self.already_stopped or not self._tunnel_open or "service" not in self.port_forward_info

    async def _restore_forward(self, endpoint, retry=True):
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
                    await self.tunnel_manager().remove(endpoint, self._local_forward(self.port))
                    raise TunnelError("the server was stopped while its tunnel was being restored")
                TUNNEL_EVENTS.labels(node=endpoint.host, event="restored").inc()
                self.log.info("Tunnel of %s restored (port %s)", self._log_name, self.port)
                return
            except ForwardError as e:
                if await self._move_if_port_taken(endpoint):
                    return
                error = e
            except TunnelError as e:
                error = e
            if not retry or self._stopped_meanwhile() or time.monotonic() + delay > deadline:
                raise error
            self.log.warning("Restoring the tunnel of %s failed (%s); trying again in %.1fs", self._log_name, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _move_if_port_taken(self, endpoint):
        """If another process listens on this server's forward port, move the forward to a fresh
        port and point the route (Service, proxy) there: the user's URL keeps working. Returns
        whether it moved."""
        host = self.ssh_forward_bind_host
        if port_is_free(host, self.port) or self.tunnel_manager().holds_port(self.port):
            return False
        manager = self.tunnel_manager()
        old = self.port
        await manager.remove(endpoint, self._local_forward(old))
        self.port = allocate_port(host)
        await manager.add(endpoint, self._local_forward(self.port))
        if self._stopped_meanwhile():
            await manager.remove(endpoint, self._local_forward(self.port))
            return False
        TUNNEL_EVENTS.labels(node=endpoint.host, event="moved").inc()
        self.log.warning("Port %s of %s is taken by another process: its tunnel moved to port %s", old, self._log_name, self.port)
        if self._svc_open and self.ssh_custom_svc is None:
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
        if self._tunnel_open and self.port and url:
            parts = urlsplit(url)
            if parts.port and parts.port != self.port:
                url = parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{self.port}").geturl()
        return url

    async def tunnel_is_up(self):
        """Whether this server's forward to ``port_forward_info["service"]`` is wanted and working
        (on a master of ours, or adopted from the original package's)."""
        if not (self._tunnel_open and self.port and "service" in self.port_forward_info) or self.ssh_custom_forward:
            return False
        if self._legacy_forward:
            return True
        try:
            endpoint = await self.get_ssh_endpoint()
        except InvalidSpec:
            return False
        forward = self._local_forward(self.port)
        manager = self.tunnel_manager()
        return manager.wants(endpoint, forward) and not manager.is_failed(forward)

    # ------------------------------------------------------------ after an upgrade from the original
    _legacy_forward = None  # (control socket, spec) of a forward the original's master still serves
    _legacy_state = False  # the state row was written by the original package

    async def _adopt_legacy_forward(self, endpoint):
        """Adopt this server's forward if the original package's master still serves its port."""
        if not self.ssh_legacy_control_path:
            return False
        path = legacy.legacy_control_path(self.ssh_legacy_control_path, endpoint.host)
        if not await legacy.legacy_master_serving(path, endpoint.host, self.port, ssh=self.ssh_binary):
            return False
        _, host, port = parse_server_address(self.port_forward_info["service"])
        self._legacy_forward = (path, legacy.legacy_forward_spec(self.port, host, port))
        legacy.adopt(path, self.port)
        self.tunnel_node = endpoint.host
        self.log.info(
            "Adopted the tunnel of %s (port %s) from the original package's ssh master %s", self._log_name, self.port, path
        )
        return True

    async def _release_legacy_forward(self):
        path, spec = self._legacy_forward
        self._legacy_forward = None
        node = self.tunnel_node or (await self.get_ssh_endpoint()).host
        await legacy.release(path, node, spec, self.port, ssh=self.ssh_binary, log=self.log)

    def _adopt_legacy_service_name(self):
        """The original returned ``http://<svc_name>.<namespace>.svc:<port>`` and named the Service
        its own way: take the name from the server's recorded URL."""
        host = urlsplit(self.server.url).hostname if getattr(self, "server", None) else None
        suffix = f".{self.namespace}.svc"
        if host and host.endswith(suffix) and "." not in host[: -len(suffix)]:
            self.svc_name = host[: -len(suffix)]


__all__ = ["SSHTunnels", "TunnelError"]
