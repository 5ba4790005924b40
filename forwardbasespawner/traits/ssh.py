"""Traits of the tunnel hub → server: the jump node, the identity, the ssh masters that carry forwards.

Declarations only (ForwardBaseSpawner mixes the class in; the behaviour is in
:mod:`forwardbasespawner.ssh`).
"""

import os

from traitlets import Bool, Dict, Enum, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..hooks import Hook, PortNumber, value_or_callable
from ..ssh.controldir import default_control_dir


class SSHTunnelTraits(LoggingConfigurable):
    """Settings of the tunnel hub → server and of the ssh masters."""

    ssh_node = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        The jump node the tunnel hub → server goes through.

        Default: "" (no tunnel possible). A ``port_forward_info["ssh_node"]`` set by the subclass,
        or by a SetupTunnel caller within ``setuptunnel_allowed_nodes``, takes precedence.
        Signature when callable: ``ssh_node(spawner, port_forward_info) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_node = "login1.cluster.example.org"
        """,
    )

    ssh_node_mapping = Hook(
        help="""
        Map the node name a remote system reports to the name the Hub connects to.

        Default: None (use the name as it is).
        Signature: ``ssh_node_mapping(spawner, node) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_node_mapping = lambda spawner, node: f"{node}.ssh.example.org"
        """,
    )

    ssh_port = value_or_callable(
        PortNumber(),
        default_value=22,
        help="""
        The SSH port of the jump node.

        Default: 22. Signature when callable: ``ssh_port(spawner, port_forward_info) -> int``.

        Example::

            c.ForwardBaseSpawner.ssh_port = 2222
        """,
    )

    ssh_username = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        The user the Hub logs in as on the jump node.

        Default: "" (ssh's default: the Hub's own user).
        Signature when callable: ``ssh_username(spawner, port_forward_info) -> str``.

        Example::

            c.ForwardBaseSpawner.ssh_username = "tunnel"
        """,
    )

    ssh_key = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        Absolute path of the private key for the jump node.

        Default: "" (ssh's default keys).
        Signature when callable: ``ssh_key(spawner, port_forward_info) -> str``.

        Example::

            c.ForwardBaseSpawner.ssh_key = "/srv/jupyterhub/ssh/tunnel_ed25519"
        """,
    )

    ssh_forward_options = value_or_callable(
        Dict(),
        help="""
        Extra ssh_config options for the connection to the jump node, from a fixed allow-list
        (ciphers, keep-alives, timeouts, algorithms); they take precedence over this library's own
        keep-alive (5 s x 3), ConnectTimeout (10 s) and ``ssh_ciphers``. Options that run commands
        or read files (ProxyCommand, LocalCommand, KnownHostsCommand, Include, ...) are refused.
        Configurations of the original package may also name the connection here (IdentityFile,
        Port, User, UserKnownHostsFile, StrictHostKeyChecking yes/accept-new): see the migration guide.

        Default: {}. Signature when callable: ``ssh_forward_options(spawner, port_forward_info) -> dict``.

        Example::

            c.ForwardBaseSpawner.ssh_forward_options = {"ServerAliveInterval": 15}
        """,
    )

    ssh_recreate_at_start = value_or_callable(
        Bool(),
        default_value=False,
        help="""
        Cancel this server's own forward on the ssh master before it is added again, e.g. when a
        stale listener of an earlier start holds the port. The master and other servers' forwards
        are not touched.

        Default: False. Signature when callable: ``ssh_recreate_at_start(spawner) -> bool``.

        Example::

            c.ForwardBaseSpawner.ssh_recreate_at_start = True
        """,
    )

    ssh_custom_forward = Hook(
        help="""
        Replace the built-in hub → server forward.

        Default: None (the OpenSSH ControlMaster forward).
        Signature: ``ssh_custom_forward(spawner, port_forward_info) -> None``, sync or async;
        it must make the server reachable at ``(ssh_forward_bind_host, spawner.port)``.

        Example::

            async def my_forward(spawner, port_forward_info):
                await my_tunnel_service.open(spawner.port, port_forward_info["service"])

            c.ForwardBaseSpawner.ssh_custom_forward = my_forward
        """,
    )

    ssh_custom_forward_remove = Hook(
        help="""
        Replace the removal of the built-in forward (pairs with ``ssh_custom_forward``).

        Default: None. Signature: ``ssh_custom_forward_remove(spawner, port_forward_info)``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_custom_forward_remove = lambda s, info: my_tunnel_service.close(s.port)
        """,
    )

    ssh_forward_bind_host = Unicode(
        "127.0.0.1",
        config=True,
        help="""
        The address the hub-side end of every forward listens on.

        Default: "127.0.0.1". Use "0.0.0.0" only when a Kubernetes Service must reach the Hub pod's
        forwards, together with a NetworkPolicy that admits only the proxy.

        Example::

            c.ForwardBaseSpawner.ssh_forward_bind_host = "0.0.0.0"
        """,
    )

    ssh_known_hosts = Unicode(
        config=True,
        help="""
        The known_hosts file for jump nodes. Host keys are checked against it; a changed key fails
        the tunnel loudly. Never /dev/null.

        Default: ``~/.ssh/known_hosts`` of the Hub's user.

        Example::

            c.ForwardBaseSpawner.ssh_known_hosts = "/srv/jupyterhub/ssh/known_hosts"
        """,
    )

    @default("ssh_known_hosts")
    def _default_known_hosts(self):
        return os.path.expanduser("~/.ssh/known_hosts")

    @validate("ssh_known_hosts")
    def _known_hosts_is_a_file(self, proposal):
        path = proposal["value"]
        if not path or os.path.realpath(path) == "/dev/null":
            raise TraitError("ssh_known_hosts must be a real file: host keys are checked, never ignored")
        return path

    @validate("ssh_strict_host_key_checking")
    def _strict_is_safe(self, proposal):
        if proposal["value"] not in ("yes", "accept-new"):
            raise TraitError('ssh_strict_host_key_checking is "yes" or "accept-new"')
        return proposal["value"]

    ssh_strict_host_key_checking = Unicode(
        "yes",
        config=True,
        help="""
        ssh's StrictHostKeyChecking for jump nodes: "yes" (the key must be in ``ssh_known_hosts``)
        or "accept-new" (learn the key of a new node once; a changed key still fails).

        Default: "yes".

        Example::

            c.ForwardBaseSpawner.ssh_strict_host_key_checking = "accept-new"
        """,
    )

    ssh_ciphers = Unicode(
        "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        config=True,
        help="""
        Cipher preference for tunnels (ssh -c). AES-GCM first: with AES-NI it moves about 1.4x the
        bytes per second of chacha20-poly1305 through one tunnel.

        Default: "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com".

        Example::

            c.ForwardBaseSpawner.ssh_ciphers = "chacha20-poly1305@openssh.com"
        """,
    )

    ssh_control_dir = Unicode(
        config=True,
        help="""
        Private directory (mode 0700) for the ControlMaster sockets, their logs and the lists of
        their forwards. It must survive a restart of the Hub process (the next Hub adopts the
        masters it finds there) and belong to the Hub's user alone.

        Default: ``<tmp>/fbs-ssh-<uid>``, or ``~/.cache/fbs-ssh`` when that path is taken by
        another user or is not a plain directory (another local user could create it first).
        Keep it short: socket paths are limited to about 100 bytes.

        Example::

            c.ForwardBaseSpawner.ssh_control_dir = "/run/jupyterhub/ssh"
        """,
    )

    @default("ssh_control_dir")
    def _default_control_dir(self):
        return default_control_dir(self.log)

    ssh_binary = Unicode("ssh", config=True, help='The OpenSSH client. Default: "ssh".')

    ssh_legacy_control_path = Unicode(
        "/tmp/control_{node}",
        config=True,
        help="""
        Where the original package (jupyterhub-forwardbasespawner 2.x) kept the control socket of
        its ssh master for a jump node; ``{node}`` is the node. After an upgrade in place, a
        running server's forward that such a master still serves is adopted: it keeps working
        without a gap, and it is cancelled there when the server stops. "" turns this off
        (forwards are then always restored on this library's own masters).

        Default: "/tmp/control_{node}" (the original's ControlPath).

        Example::

            c.ForwardBaseSpawner.ssh_legacy_control_path = "/var/run/jupyterhub/control_{node}"
        """,
    )

    ssh_backend = Enum(
        ["openssh", "asyncssh"],
        default_value="openssh",
        config=True,
        help="""
        How tunnels are run. "openssh": ssh ControlMaster processes; tunnel bytes never touch the
        Hub's event loop. "asyncssh": one in-process connection per jump node, for Hubs without an
        ssh client; tunnel bytes pass through the Hub's event loop (see the data-plane benchmark),
        and the tunnels end with the Hub process (OpenSSH's keep serving while the Hub restarts).
        ``ssh_strict_host_key_checking`` means the same with both.

        Default: "openssh".

        Example::

            c.ForwardBaseSpawner.ssh_backend = "asyncssh"
        """,
    )

    ssh_master_start_timeout = Float(
        10,
        config=True,
        help="""
        Seconds a new ssh master may take to connect and authenticate.

        Default: 10.

        Example::

            c.ForwardBaseSpawner.ssh_master_start_timeout = 20
        """,
    )

    ssh_check_interval = Float(
        10,
        config=True,
        help="""
        Seconds between health checks (``ssh -O check``) of every ssh master; a master that exits is
        noticed at once, one that hangs within this interval.

        Default: 10.

        Example::

            c.ForwardBaseSpawner.ssh_check_interval = 5
        """,
    )

    ssh_restore_attempts = Integer(
        5,
        config=True,
        help="""
        Failed restarts of an ssh master (with backoff up to 5 s) before its forwards count as
        failed; their servers' ``poll()`` then reports them stopped.

        Default: 5.

        Example::

            c.ForwardBaseSpawner.ssh_restore_attempts = 10
        """,
    )

    ssh_tunnel_grace = Float(
        300,
        config=True,
        help="""
        Seconds a server may be without its tunnel before it is given up. Meanwhile the tunnel is
        restored with backoff (a forward whose port another process took moves to a fresh port,
        and the server's route follows), and ``poll()`` reports the server running: a lost tunnel
        alone never ends a user's server at once. After a Hub restart the first poll of a server
        retries the restore for up to this long. When it runs out, the server ends with a failed
        event that says why, and its remote side is stopped too (the subclass's ``_stop()``, e.g. a
        batch job is cancelled): raise it where a jump node's maintenance may take longer.

        Default: 300.

        Example::

            c.ForwardBaseSpawner.ssh_tunnel_grace = 900
        """,
    )

    ssh_adopt_grace = Float(
        120,
        config=True,
        help="""
        Seconds after a Hub's start within which running servers claim the forwards that the ssh
        masters of the previous Hub process still carry (masters outlive the Hub: servers stay
        reachable while it restarts). Forwards nobody claimed by then are cancelled, and masters
        left with nothing exit.

        Default: 120.

        Example::

            c.ForwardBaseSpawner.ssh_adopt_grace = 300
        """,
    )

    ssh_forwards_per_master = Integer(
        500,
        config=True,
        help="""
        Forwards one ssh master carries before another master to the same node is started. Each
        forward holds a listening socket in the master's process: keep this well under its open-file limit.

        Default: 500.

        Example::

            c.ForwardBaseSpawner.ssh_forwards_per_master = 200
        """,
    )

    ssh_master_idle_timeout = Float(
        30,
        config=True,
        help="""
        Seconds an ssh master without forwards stays up before it exits.

        Default: 30.

        Example::

            c.ForwardBaseSpawner.ssh_master_idle_timeout = 300
        """,
    )
