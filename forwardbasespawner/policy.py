"""What the API routes let a remote caller do: rate limits, caps and the SetupTunnel target policy.

:class:`~forwardbasespawner.traits.api.APIPolicy` holds the operator's settings as traits.
ForwardBaseSpawner mixes it in (so ``c.ForwardBaseSpawner.<trait>`` configures it); for a spawner
class that does not, the handlers use its defaults (:func:`setting`). See docs/source/security.md
for why each limit exists.
"""

import fnmatch
import ipaddress
import re

from .traits.api import APIPolicy

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
