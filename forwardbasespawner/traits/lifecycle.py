"""Traits of a server's life cycle: the hooks around start, poll and stop, the port, the API URL.

Declarations only (ForwardBaseSpawner mixes the class in; ``c.ForwardBaseSpawner.<name>`` sets them).
"""

from traitlets import Bool, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from ..hooks import Hook, PortNumber, value_or_callable


class LifecycleTraits(LoggingConfigurable):
    """Settings of start(), poll() and stop() around the subclass's ``_start``, ``_poll`` and ``_stop``."""

    pre_poll_hook = Hook(
        help="""
        Decide, before each poll, whether to ask the remote system at all.

        Default: None (always call ``_poll()``).
        Signature: ``pre_poll_hook(spawner) -> bool | int | None``, sync or async.
        Return True to call ``_poll()``; False to report the server as running without asking;
        an int or None to report that status directly (None: running, int: stopped).

        Example::

            def pre_poll_hook(spawner):
                # the remote system is in maintenance: don't stop servers because it is silent
                return False if maintenance_mode() else True

            c.ForwardBaseSpawner.pre_poll_hook = pre_poll_hook
        """,
    )

    pre_stop_hook = Hook(
        help="""
        Called before the remote server is stopped; errors are logged and the stop goes on.

        Default: None.
        Signature: ``pre_stop_hook(spawner)``, sync or async.

        Example::

            async def pre_stop_hook(spawner):
                spawner.log.info("stopping %s on %s", spawner._log_name, spawner.port_forward_info)

            c.ForwardBaseSpawner.pre_stop_hook = pre_stop_hook
        """,
    )

    update_start_response = Hook(
        help="""
        Rewrite what ``_start()`` returned before the base uses it.

        Default: None (use it as it is).
        Signature: ``update_start_response(spawner, response) -> str | None``, sync or async.

        Example::

            def update_start_response(spawner, response):
                # the remote system answers with its internal name; the hub knows it by another
                return response.replace("node7.internal", "node7.example.org") if response else response

            c.ForwardBaseSpawner.update_start_response = update_start_response
        """,
    )

    update_expected_path = Hook(
        help="""
        Rewrite the URL returned to JupyterHub, e.g. to add a path prefix the remote server serves under.

        Default: None (the URL as the base built it).
        Signature: ``update_expected_path(spawner, url) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.update_expected_path = lambda spawner, url: url + "/base/"
        """,
    )

    public_api_url = value_or_callable(
        Unicode(),
        default_value="",
        help="""
        The Hub API URL the remote server uses (``JUPYTERHUB_API_URL``), when it cannot use the
        Hub's own connect URL, e.g. because it reaches the Hub through an ingress or a tunnel.

        Default: "" (JupyterHub's ``hub_connect_url`` + API path).
        Signature when callable: ``public_api_url(spawner, port_forward_info) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.public_api_url = "https://jupyter.example.org/hub/api"
        """,
    )

    ssh_during_startup = value_or_callable(
        Bool(),
        default_value=False,
        help="""
        Open the tunnel hub → server while ``start()`` runs, to the address ``_start()`` returned.

        Default: False. With False, an address from ``_start()`` is used as it is (no tunnel), and
        a falsy result from ``_start()`` means the remote side reports the address later.
        Signature when callable: ``ssh_during_startup(spawner) -> bool``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_during_startup = True
        """,
    )

    remote_stop_timeout = Float(
        30,
        config=True,
        help="""
        Seconds ``stop()`` waits for the subclass's ``_stop()``; then it logs and cleans up anyway.

        Default: 30.

        Example::

            c.ForwardBaseSpawner.remote_stop_timeout = 60
        """,
    )

    @default("ip")
    def _default_ip(self):
        # the remote server must be reachable from the jump node, not only on its own loopback;
        # JupyterHub puts this into JUPYTERHUB_SERVICE_URL, which jupyterhub-singleuser binds to
        return "0.0.0.0"

    custom_port = value_or_callable(
        PortNumber(),
        default_value=0,
        help="""
        The hub-side port of this server's forward.

        Default: 0 (a fresh free port for every start; ``c.Spawner.port`` pins one when set).
        Signature when callable: ``custom_port(spawner, user_options) -> int``, sync or async.

        Example::

            c.ForwardBaseSpawner.custom_port = lambda spawner, user_options: 40000 + spawner.user.id
        """,
    )
