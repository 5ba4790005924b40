"""Traits of what remote callers may do through the Hub API: rate limits, caps, the SetupTunnel policy.

Declarations only (ForwardBaseSpawner mixes the class in; for spawner classes that do not, the
handlers use these defaults, see :func:`forwardbasespawner.policy.setting`). The checks are in
:mod:`forwardbasespawner.policy`; docs/source/security.md says why each limit exists.
"""

from traitlets import Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from ..hooks import Hook


class APIPolicy(LoggingConfigurable):
    """The operator's limits on what the remote side may do through the Hub API."""

    setuptunnel_allowed_nodes = List(
        Unicode(),
        config=True,
        help="""
        Jump nodes a SetupTunnel caller may name in ``ssh_node``: names or shell-style patterns.

        Default: [] (callers may not choose a node; the configured ``ssh_node`` is used).

        Example::

            c.ForwardBaseSpawner.setuptunnel_allowed_nodes = ["login*.cluster.example.org"]
        """,
    )

    setuptunnel_allowed_keys = List(
        Unicode(),
        config=True,
        help="""
        Further ``port_forward_info`` keys a SetupTunnel caller may set, from
        "ssh_port", "ssh_username", "ssh_key" and "ssh_forward_options". Values are validated;
        dangerous ssh options are refused whatever this says.

        Default: [] (only "service", and "ssh_node" within ``setuptunnel_allowed_nodes``).

        Example::

            c.ForwardBaseSpawner.setuptunnel_allowed_keys = ["ssh_username"]
        """,
    )

    events_post_rate = Float(
        20,
        config=True,
        help="""
        Progress events per second one server may POST, on average (a token bucket of
        ``events_post_burst``); beyond that the API answers 429 with Retry-After and stores nothing.

        Default: 20.

        Example::

            c.ForwardBaseSpawner.events_post_rate = 50
        """,
    )

    events_post_burst = Integer(
        200,
        config=True,
        help="""
        Progress events one server may POST at once before ``events_post_rate`` applies.

        Default: 200.

        Example::

            c.ForwardBaseSpawner.events_post_burst = 500
        """,
    )

    events_state_write_interval = Float(
        1.0,
        config=True,
        help="""
        Seconds between two writes of a server's state (with its events) to the Hub database caused
        by posted events; events in between are written together. A terminal event (``ready`` or
        ``failed``) is written at once.

        Default: 1.0.

        Example::

            c.ForwardBaseSpawner.events_state_write_interval = 5
        """,
    )

    setuptunnel_allowed_services = List(
        Unicode(),
        config=True,
        help="""
        Targets a SetupTunnel caller may name in ``service``, as ``NETWORK[:PORTS]`` or
        ``HOSTPATTERN[:PORTS]``: an IP network (``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``), or a
        shell-style host name pattern (``*.cluster.example.org``), and optionally a port or range
        (``8000-8999``). Link-local and multicast targets (cloud metadata services) are refused
        whatever this says.

        Default: [] (any target except those).

        Example::

            c.ForwardBaseSpawner.setuptunnel_allowed_services = ["127.0.0.1:1024-65535", "10.1.0.0/16:8888"]
        """,
    )

    setuptunnel_service_check = Hook(
        help="""
        Decide whether a SetupTunnel target is allowed, after ``setuptunnel_allowed_services``.

        Default: None. Signature: ``setuptunnel_service_check(spawner, host, port) -> bool | str``,
        sync or async. False or a string refuses the call with 403 (the string is logged, not shown).

        Example::

            def only_the_batch_nodes(spawner, host, port):
                return host.startswith("node") and port >= 1024

            c.ForwardBaseSpawner.setuptunnel_service_check = only_the_batch_nodes
        """,
    )

    setuptunnel_allowed_ssh_keys = List(
        Unicode(),
        config=True,
        help="""
        Private key files a SetupTunnel caller may name in ``ssh_key`` (when ``"ssh_key"`` is in
        ``setuptunnel_allowed_keys``): absolute paths or shell-style patterns. Any other path is
        refused, so a caller cannot use other keys the Hub can read.

        Default: [] (none: ``ssh_key`` is always refused).

        Example::

            c.ForwardBaseSpawner.setuptunnel_allowed_ssh_keys = ["/srv/jupyterhub/ssh/cluster-*_ed25519"]
        """,
    )

    setuptunnel_max_changes = Integer(
        10,
        config=True,
        help="""
        SetupTunnel calls that change a server's forward (new target, node or ssh settings; each
        may start a new ssh master) within one start; more get 429.

        Default: 10.

        Example::

            c.ForwardBaseSpawner.setuptunnel_max_changes = 3
        """,
    )
