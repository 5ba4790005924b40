"""What the API routes let a remote caller do: rate limits, caps and the SetupTunnel target policy.

:class:`APIPolicy` holds the operator's settings as traits. ForwardBaseSpawner mixes it in (so
``c.ForwardBaseSpawner.<trait>`` configures it); for a spawner class that does not, the handlers
use the defaults below (:func:`setting`). See docs/source/security.md for why each limit exists.
"""

import fnmatch
import ipaddress
import re

from traitlets import Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from .hooks import Hook

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: networks no SetupTunnel target may be in, whatever the allow-list says: link-local (the cloud
#: metadata services 169.254.169.254 and fd00:ec2::254), multicast, "this network"
ALWAYS_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "224.0.0.0/4", "ff00::/8", "0.0.0.0/8", "::/128",
              "240.0.0.0/4")
)  # fmt: skip

#: ssh options a SetupTunnel caller may set (when "ssh_forward_options" is allowed at all): keep-alives
#: and timeouts with small numeric or yes/no values. Algorithms ("+3des-cbc" re-enables a weak cipher)
#: stay the operator's.
API_SSH_OPTIONS = {
    "ServerAliveInterval": re.compile(r"[0-9]{1,4}"),
    "ServerAliveCountMax": re.compile(r"[0-9]{1,3}"),
    "ConnectTimeout": re.compile(r"[0-9]{1,3}"),
    "ConnectionAttempts": re.compile(r"[0-9]{1,2}"),
    "TCPKeepAlive": re.compile(r"yes|no"),
    "Compression": re.compile(r"yes|no"),
}


def log_safe(value, limit=200):
    """``value`` for a log line: control characters (newlines, tabs, ANSI escapes, U+2028) escaped,
    so a caller cannot forge log lines, and at most ``limit`` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class APIPolicy(LoggingConfigurable):
    """The operator's limits on what the remote side may do through the Hub API."""

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


def setting(spawner, name):
    """The spawner's value of :class:`APIPolicy` trait ``name``, or its default."""
    if isinstance(spawner, APIPolicy):
        return getattr(spawner, name)
    return APIPolicy.class_traits()[name].default()


def _port_range(text):
    if not text or text == "*":
        return range(1, 65536)
    low, _, high = text.partition("-")
    if not (low.isascii() and low.isdigit() and (not high or (high.isascii() and high.isdigit()))):
        raise ValueError(f"not a port or port range: {text!r}")
    return range(int(low), int(high or low) + 1)


def _split_entry(entry):
    """``NETWORK[:PORTS]`` / ``[IPV6NET]:PORTS`` / ``HOSTPATTERN[:PORTS]`` → (target, ports)."""
    if entry.startswith("["):
        target, _, rest = entry[1:].partition("]")
        return target, rest.lstrip(":")
    if entry.count(":") > 1:  # a bare IPv6 network, no ports
        return entry, ""
    target, _, ports = entry.partition(":")
    return target, ports


def service_allowed(host, port, allowed):
    """Whether ``host``:``port`` (validated) is allowed by the entries ``allowed`` ([] = any)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and any(address in net for net in ALWAYS_REFUSED_NETWORKS if net.version == address.version):
        return False
    if address is not None and address.version == 6 and address.ipv4_mapped is not None:
        return service_allowed(str(address.ipv4_mapped), port, allowed)
    if not allowed:
        return True
    for entry in allowed:
        target, ports = _split_entry(entry)
        if port not in _port_range(ports):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(target, strict=False):
                    return True
            except ValueError:
                pass  # a host pattern: it does not match an address
        elif fnmatch.fnmatchcase(host.lower().rstrip("."), target.lower()):
            return True
    return False


def key_allowed(path, allowed):
    """Whether a caller's ``ssh_key`` path is one of the operator's (``setuptunnel_allowed_ssh_keys``)."""
    import os

    if "/../" in path or path.endswith("/..") or "/./" in path or "//" in path:
        return False  # patterns match the path as written: no ways around them
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed) and os.path.normpath(path) == path


def api_ssh_options_allowed(options):
    """None if every ssh option a caller set is one of :data:`API_SSH_OPTIONS` with a plain value,
    else the reason."""
    for name, value in options.items():
        pattern = API_SSH_OPTIONS.get(name)
        if pattern is None:
            return f"ssh option {str(name)[:40]!r} may not be set through this API (allowed: {', '.join(API_SSH_OPTIONS)})"
        if not pattern.fullmatch(str(value)):
            return f"ssh option {name} has a value this API does not accept"
    return None
