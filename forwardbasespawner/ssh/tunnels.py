"""The SSH side of ForwardBaseSpawner: its settings resolved into endpoints and tunnel objects.

:class:`SSHTunnels` turns the spawner's traits and hooks (and ``port_forward_info``) into an
:class:`~forwardbasespawner.ssh.spec.Endpoint` and the tunnel objects of
:mod:`forwardbasespawner.ssh.server_tunnel`, and keeps the original package's method names
(``ssh_default_forward()``, ``run_ssh_forward_remote()``, ...) as the entry points subclasses
override. It knows nothing of Kubernetes: the order of tunnel, Service and route is the spawner's
(:mod:`forwardbasespawner.connecting`).
"""

import dataclasses
from urllib.parse import urlsplit

from traitlets.config import LoggingConfigurable

from ..errors import InvalidSpec, TunnelError  # noqa: F401 (TunnelError: its old import place)
from ..hooks import resolve
from .asyncssh import AsyncsshMaster
from .controldir import default_control_dir  # noqa: F401 (its old import place)
from .openssh import ControlMaster
from .ports import allocate_port
from .registry import shared_manager
from .server_tunnel import HubTunnel, LegacyForward, ServerTunnel
from .spec import Endpoint, split_original_options
from .supervisor import TunnelManager

#: ``port_forward_info`` keys that name the jump node's settings, hub → server and server → hub
FORWARD_KEYS = dict(node="ssh_node", port="ssh_port", user="ssh_username", key="ssh_key", options="ssh_forward_options")
REMOTE_KEYS = dict(
    node="ssh_remote_node", port="ssh_remote_port", user="ssh_remote_username", key="ssh_remote_key",
    options="ssh_forward_remote_options",
)  # fmt: skip


def ssh_port_number(port):
    """The original package's forms of a port: an int, a string of digits, or None ("22")."""
    if isinstance(port, str) and port.strip().isascii() and port.strip().isdigit():
        return int(port)
    return port or 22


class SSHTunnels(LoggingConfigurable):
    """Methods of the hub → server and server → hub tunnels (mixed into ForwardBaseSpawner; the
    traits are :class:`~forwardbasespawner.traits.ssh.SSHTunnelTraits` and
    :class:`~forwardbasespawner.traits.server_to_hub.RemoteForwardTraits`)."""

    # ------------------------------------------------------------ the manager and the endpoints
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

    async def _info_or_trait(self, info, key, trait_value):
        """``info[key]`` when a subclass or SetupTunnel caller set it, else the trait's value
        (a callable one is called with ``(spawner, info)``)."""
        if key in info:
            return info[key]
        return await resolve(trait_value, self, info)

    async def _endpoint(self, info, keys, *, node, port, user, key, options):
        """An :class:`Endpoint` from ``info`` (whose ``keys`` override) and the trait values given;
        validated (raises InvalidSpec)."""
        host = await self._info_or_trait(info, keys["node"], node)
        if not host:
            raise InvalidSpec(f"no {keys['node']} is configured for the tunnel")
        settings = dict(
            port=await self._info_or_trait(info, keys["port"], port),
            user=await self._info_or_trait(info, keys["user"], user) or "",
            key=await self._info_or_trait(info, keys["key"], key) or "",
        )
        # the operator's options: the original package's vocabulary is understood; what names the
        # connection (IdentityFile, Port, User) gives way to the caller's own keys in ``info``
        original, ssh_options, dropped = split_original_options(dict(await resolve(options, self, info) or {}))
        settings.update({k: v for k, v in original.items() if keys.get(k) not in info})
        if dropped:
            self.log.debug("%s: ssh options %s are not needed here (masters are run by this library)", keys["options"], dropped)
        if info.get(keys["options"]):  # a caller's (or an old state row's): allow-listed options only, on top
            ssh_options.update(dict(info[keys["options"]]))
        settings["port"] = ssh_port_number(settings["port"])
        return Endpoint(host=host, options=ssh_options, **settings)

    async def map_ssh_node(self, node):
        """``ssh_node_mapping`` applied to ``node`` (the name the Hub connects to)."""
        if node and self.ssh_node_mapping is not None:
            return await resolve(self.ssh_node_mapping, self, node)
        return node

    async def get_ssh_endpoint(self):
        """The jump node and identity for this server's tunnel hub → server."""
        endpoint = await self._endpoint(
            self.port_forward_info, FORWARD_KEYS, node=self.ssh_node, port=self.ssh_port, user=self.ssh_username,
            key=self.ssh_key, options=self.ssh_forward_options,
        )  # fmt: skip
        return dataclasses.replace(endpoint, host=await self.map_ssh_node(endpoint.host))

    async def get_ssh_remote_endpoint(self):
        """The node and identity for the tunnel server → hub."""
        return await self._endpoint(
            self.connection.remote_info, REMOTE_KEYS, node=self.ssh_remote_node, port=self.ssh_remote_port,
            user=self.ssh_remote_username, key=self.ssh_remote_key, options=self.ssh_forward_remote_options,
        )  # fmt: skip

    async def server_tunnel(self, endpoint=None):
        """This server's hub → server forward, as an object (see :class:`ServerTunnel`); raises
        InvalidSpec while no ``service`` (where the server listens) is recorded."""
        if self.connection.target is None:
            raise InvalidSpec("no 'service' (host:port of the server) is recorded for the tunnel")
        return ServerTunnel(
            self.tunnel_manager(), endpoint or await self.get_ssh_endpoint(), bind_host=self.ssh_forward_bind_host,
            target=self.connection.target, name=self._log_name, log=self.log, ssh=self.ssh_binary,
        )  # fmt: skip

    async def hub_tunnel(self):
        """This server's server → hub tunnel, as an object (see :class:`HubTunnel`)."""
        parts = urlsplit(self.hub.api_url)
        return HubTunnel(
            self.tunnel_manager(), await self.get_ssh_remote_endpoint(), mode=self.ssh_remote_forward_mode,
            hub_target=(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
            name=self._log_name, log=self.log, ssh=self.ssh_binary, known_hosts=self.ssh_known_hosts,
            strict_host_key_checking=self.ssh_strict_host_key_checking,
            command_timeout=self.ssh_remote_command_timeout, success_code=self.ssh_remote_command_success_code,
        )  # fmt: skip

    # ------------------------------------------------------------ the port
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
    async def ssh_default_forward_remote(self):
        """Make the server → hub tunnel (see ``ssh_remote_forward_mode``)."""
        remote = self.connection.remote_info
        tunnel = await self.hub_tunnel()
        if tunnel.mode == "command":
            await tunnel.open()  # the node's forced command makes its own tunnel: no port here
        else:
            remote["port"] = await tunnel.open(int(remote.get("port") or 0))

    async def ssh_default_forward_remote_remove(self):
        try:
            tunnel = await self.hub_tunnel()
        except InvalidSpec:
            return
        await tunnel.close((self.port_forward_info.get("remote") or {}).get("port") or 0)

    async def run_ssh_forward_remote(self):
        if self.ssh_custom_forward_remote is not None:
            await resolve(self.ssh_custom_forward_remote, self, self.connection.remote_info)
        else:
            await self.ssh_default_forward_remote()

    async def run_ssh_forward_remote_remove(self):
        if self.ssh_custom_forward_remote_remove is not None:
            await resolve(self.ssh_custom_forward_remote_remove, self, self.connection.remote_info)
        elif self.ssh_custom_forward_remote is None:
            await self.ssh_default_forward_remote_remove()

    # ------------------------------------------------------------ hub → server
    async def ssh_default_forward(self):
        """Open the forward hub → ``port_forward_info["service"]`` through the jump node, on
        ``self.port`` (reserved by ``start()``, or restored from state).

        While ``start()`` runs and the port was picked freely (not ``custom_port`` or
        ``c.Spawner.port``), a port that turns out taken is replaced by a fresh one; once the
        server's URL is out (a delayed tunnel, a restore) the port stays. Subclasses of the
        original package override this method without arguments and call ``super()``.
        """
        tunnel = await self.server_tunnel()
        if not self.port:
            self.port = await self._reserve_port()
        movable = self._start_running() and not self._connected_url_out and not await self._pinned_port()
        recreate = bool(await resolve(self.ssh_recreate_at_start, self))
        self.port = await tunnel.open(self.port, recreate=recreate, fresh_ports=4 if movable else 0)
        self.tunnel_node = tunnel.endpoint.host

    def _start_running(self):
        task = getattr(self, "_start_task", None)
        return task is not None and not task.done()

    async def ssh_default_forward_remove(self):
        """Remove this server's forward; harmless when it is gone."""
        if not self.port or "service" not in self.port_forward_info:
            return
        if self._legacy_forward is not None:
            forward, self._legacy_forward = self._legacy_forward, None
            await forward.release(self.log)
            return
        try:
            tunnel = await self.server_tunnel()
        except InvalidSpec:
            return  # nothing valid was ever forwarded
        await tunnel.close(self.port)

    # ------------------------------------------------------------ after an upgrade from the original
    _legacy_forward = None  # a LegacyForward: this server's forward on the original package's master

    async def _adopt_legacy_forward(self, endpoint):
        """Adopt this server's forward if the original package's master still serves its port."""
        forward = await LegacyForward.adopt(
            self.ssh_legacy_control_path, endpoint.host, self.port, self.connection.target, ssh=self.ssh_binary
        )
        if forward is None:
            return False
        self._legacy_forward = forward
        self.tunnel_node = endpoint.host
        self.log.info(
            "Adopted the tunnel of %s (port %s) from the original package's ssh master %s", self._log_name, self.port, forward.path
        )
        return True


__all__ = ["SSHTunnels", "TunnelError"]
