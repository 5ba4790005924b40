"""Traits of the tunnel server → hub, for remote servers without a route to the Hub API.

Declarations only (ForwardBaseSpawner mixes the class in).
"""

from traitlets import Bool, Dict, Enum, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from ..hooks import Hook, PortNumber, value_or_callable


class RemoteForwardTraits(LoggingConfigurable):
    """Settings of the tunnel server → hub (``ssh_create_remote_forward``)."""

    ssh_create_remote_forward = value_or_callable(
        Bool(),
        default_value=False,
        help="""
        Give the remote server a way back to the Hub API through ssh, opened before ``_start()``.

        Default: False. Signature when callable:
        ``ssh_create_remote_forward(spawner, remote_info) -> bool`` where ``remote_info`` is
        ``port_forward_info["remote"]``.

        Example::

            c.ForwardBaseSpawner.ssh_create_remote_forward = True
        """,
    )

    ssh_remote_forward_mode = Enum(
        ["reverse", "command"],
        default_value="reverse",
        config=True,
        help="""
        How the server → hub tunnel is made. "reverse": a remote forward (``ssh -R``) on
        ``ssh_remote_node`` to the Hub API; the port the node allocated is given to the server as
        ``JUPYTERHUB_HUB_TUNNEL_PORT`` and kept in ``port_forward_info["remote"]["port"]``.
        "command": the original package's convention, exactly: ``ssh <node> start`` (and
        ``status`` when ``start`` does not answer in time, ``stop`` at the end) runs a forced
        command on the node that makes its own tunnel; exit code ``ssh_remote_command_success_code``
        means success.

        Default: "reverse".

        Example::

            c.ForwardBaseSpawner.ssh_remote_forward_mode = "command"
        """,
    )

    ssh_remote_command_success_code = Integer(
        217,
        config=True,
        help="""
        The exit code of the node's forced command that means the server → hub tunnel is up
        ("command" mode).

        Default: 217.

        Example::

            c.ForwardBaseSpawner.ssh_remote_command_success_code = 0
        """,
    )

    ssh_remote_command_timeout = Float(
        30,
        config=True,
        help="""
        Seconds ``ssh <node> start`` may take ("command" mode); then ``ssh <node> status`` decides.

        Default: 30.

        Example::

            c.ForwardBaseSpawner.ssh_remote_command_timeout = 10
        """,
    )

    ssh_remote_node = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        The node the server → hub tunnel is made on.

        Default: "". Signature when callable: ``ssh_remote_node(spawner, remote_info) -> str``.

        Example::

            c.ForwardBaseSpawner.ssh_remote_node = "login1.cluster.example.org"
        """,
    )

    ssh_remote_port = value_or_callable(
        PortNumber(), default_value=22,
        help="SSH port of ``ssh_remote_node``. Default: 22. Callable: ``(spawner, remote_info) -> int``.",
    )  # fmt: skip

    ssh_remote_username = value_or_callable(
        Unicode(), default_value="",
        help="User on ``ssh_remote_node``. Default: \"\". Callable: ``(spawner, remote_info) -> str``.",
    )  # fmt: skip

    ssh_remote_key = value_or_callable(
        Unicode(), default_value="",
        help="Absolute path of the key for ``ssh_remote_node``. Default: \"\". Callable: ``(spawner, remote_info) -> str``.",
    )  # fmt: skip

    ssh_forward_remote_options = value_or_callable(
        Dict(),
        help="Allowed ssh options for ``ssh_remote_node`` (see ``ssh_forward_options``). Default: {}. Callable: ``(spawner, remote_info) -> dict``.",
    )  # fmt: skip

    ssh_custom_forward_remote = Hook(
        help="""
        Replace the built-in server → hub tunnel.

        Default: None. Signature: ``ssh_custom_forward_remote(spawner, remote_info)``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_custom_forward_remote = my_remote_tunnel
        """,
    )

    ssh_custom_forward_remote_remove = Hook(
        help="""
        Replace the removal of the server → hub tunnel (pairs with ``ssh_custom_forward_remote``).

        Default: None. Signature: ``ssh_custom_forward_remote_remove(spawner, remote_info)``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_custom_forward_remote_remove = my_remote_tunnel_remove
        """,
    )
