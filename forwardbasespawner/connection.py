"""One server's connection: what the Hub set up to reach it, and what of it is open now.

A :class:`Connection` is a plain record; the spawner owns one per server and is the only writer.
The parts that act (the ssh forward, the Kubernetes Service) read their settings from it and
report back what they opened; ``to_state()`` / ``from_state()`` are the only way it reaches the
Hub database, in the keys the original package and earlier releases wrote, so that rows of
either load unchanged.

``info`` is the original package's ``port_forward_info`` dict itself (``spawner.port_forward_info``
is a view of it): subclasses and SetupTunnel callers write the target and the jump node's settings
there, and stored rows keep it as it was.
"""

import dataclasses

from .addresses import parse_server_address


@dataclasses.dataclass(eq=False)
class Connection:
    """How the Hub reaches one server, and what of it is open."""

    #: ``port_forward_info``: ``service`` ("host:port" the forward leads to), the jump node's
    #: settings a subclass or SetupTunnel caller gave (``ssh_node``, ``ssh_port``, ...), and
    #: ``remote`` (the server → hub tunnel's own, ``remote["port"]`` the port the node allocated)
    info: dict = dataclasses.field(default_factory=dict)
    #: the Hub-side port of the forward (JupyterHub's ``spawner.port``, kept equal by the spawner)
    port: int = 0
    #: the jump node the forward goes through, as the Hub connects to it (SSHNodeRestarted matches it)
    node: str = ""
    #: the Kubernetes Service's name and the address the proxy uses for it
    svc_name: str = ""
    dns_name: str = ""
    #: what is open: stop() removes exactly these; a restored Hub restores them
    tunnel_open: bool = False
    remote_forward_open: bool = False
    svc_open: bool = False
    #: after a Hub restart: the tunnels are to be restored at the next poll (until one restore worked)
    restore_pending: bool = False
    #: the Service's restore failed (e.g. the API server was down): try again at the next poll
    svc_restore_pending: bool = False
    #: the row was written by the original package (no flags of ours in it)
    legacy_state: bool = False

    # ------------------------------------------------------------ the target
    @property
    def target(self):
        """``(host, port)`` of the server as the jump node reaches it, or None before it is known."""
        service = self.info.get("service")
        if not service:
            return None
        _, host, port = parse_server_address(service)
        return host, port

    @property
    def forwarding(self):
        """Whether a hub → server forward is open (or being made) on a known port to a known target."""
        return bool(self.tunnel_open and self.port and self.info.get("service"))

    @property
    def remote_info(self):
        """``port_forward_info["remote"]``: the server → hub tunnel's settings and allocated port."""
        remote = self.info.get("remote")
        if not isinstance(remote, dict):
            remote = self.info["remote"] = {}
        return remote

    def close_all(self):
        """Forget what was open (after stop removed it, or a state clear)."""
        self.tunnel_open = self.remote_forward_open = self.svc_open = False
        self.restore_pending = self.svc_restore_pending = False

    # ------------------------------------------------------------ the Hub database
    def to_state(self):
        """The keys of the spawner's state that describe this connection (none when empty)."""
        state = {}
        if self.info:
            state["port_forward_info"] = dict(self.info)
        if self.port:
            state["custom_port"] = self.port
        if self.tunnel_open:
            state["tunnel_open"] = True
        if self.remote_forward_open:
            state["remote_forward_open"] = True
        if self.svc_open:
            state["svc_open"] = True
            state["svc_name"] = self.svc_name
        if self.node:
            state["tunnel_node"] = self.node
        return state

    @classmethod
    def from_state(cls, state):
        """The connection a stored state describes; rows of the original package included (they
        hold the port as a string sometimes, and no flags: a recorded forward means an open one)."""
        info = state.get("port_forward_info")
        info = dict(info) if isinstance(info, dict) else {}
        port = state.get("custom_port")
        if isinstance(port, str) and port.isascii() and port.isdigit():
            port = int(port)
        if not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
            port = 0
        tunnel_open = bool(state.get("tunnel_open", bool(info.get("service"))))
        remote_forward_open = bool(state.get("remote_forward_open"))
        return cls(
            info=info,
            port=port,
            node=str(state.get("tunnel_node") or info.get("ssh_node") or ""),
            svc_name=str(state.get("svc_name") or ""),
            tunnel_open=tunnel_open,
            remote_forward_open=remote_forward_open,
            svc_open=bool(state.get("svc_open")),
            restore_pending=tunnel_open or remote_forward_open,
            legacy_state="tunnel_open" not in state and bool(info.get("service")),
        )


class ConnectionField:
    """A spawner attribute that is a text field of its :class:`Connection`: the original package's
    names (``tunnel_node``, ``svc_name``, ``dns_name``) read and write the record."""

    def __init__(self, field, doc):
        self.field = field
        self.__doc__ = doc

    def __get__(self, spawner, owner=None):
        if spawner is None:
            return self
        return getattr(spawner.connection, self.field)

    def __set__(self, spawner, value):
        setattr(spawner.connection, self.field, value or "")


__all__ = ["Connection", "ConnectionField"]
