"""Parse and validate the addresses a subclass or a remote system reports for a server."""

import ipaddress
import re
from urllib.parse import urlsplit

from .errors import InvalidAddress

# RFC 1123 host names: labels of ASCII letters, digits and inner hyphens, dot separated. Always
# used with fullmatch: a `$` would let a trailing newline through ("node1\n").
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_ASCII_DIGITS = re.compile(r"[0-9]{1,5}")


def validate_host(host):
    """Return ``host`` if it is a host name or an IP address (IPv6 without brackets), else raise.

    IPv6 zone ids (``fe80::1%eth0``) are refused: Python accepts almost anything after the ``%``
    (``fd00::1%x@127.0.0.2``), and ssh would read such a "host" as ``user@host``.
    """
    if not isinstance(host, str) or not host:
        raise InvalidAddress("the host is empty")
    if not host.isascii() or not host.isprintable():
        raise InvalidAddress(f"not a valid host name or IP address: {host[:100]!r}")
    if "%" in host:
        raise InvalidAddress(f"IPv6 zone ids are not accepted: {host[:100]!r}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise InvalidAddress(f"not a valid host name or IP address: {host[:100]!r}")
    return host


def validate_port(port):
    """Return ``port`` as an int if it is 1–65535, else raise."""
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise InvalidAddress("the port must be a number")
    # int() would take " 22\n", "２２" (full-width) and "٢٢" (Arabic-Indic): only ASCII digits are a port
    if isinstance(port, str) and not _ASCII_DIGITS.fullmatch(port):
        raise InvalidAddress(f"the port must be a number, not {port[:20]!r}")
    value = int(port)
    if not 1 <= value <= 65535:
        raise InvalidAddress(f"the port must be between 1 and 65535, not {value}")
    return value


def parse_server_address(address, default_scheme="http"):
    """Split ``"http[s]://host:port"`` or ``"host:port"`` into ``(scheme, host, port)``, validated.

    >>> parse_server_address("https://node7.cluster:8443")
    ('https', 'node7.cluster', 8443)
    >>> parse_server_address("[::1]:8888")
    ('http', '::1', 8888)
    """
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress("the address is empty")
    text = address.strip()
    if not text.isascii() or not text.isprintable():
        # urlsplit silently drops tabs and newlines inside ("127.0.0.1:8\n0" would be port 80)
        raise InvalidAddress(f"the address has control or non-ASCII characters: {address[:100]!r}")
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InvalidAddress(f"not host:port: {address[:100]!r} ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidAddress(f"the scheme must be http or https, not {parts.scheme[:20]!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidAddress(f"only [http[s]://]host:port is accepted, not {address[:100]!r}")
    if port is None:
        raise InvalidAddress(f"the port is missing in {address[:100]!r}")
    return parts.scheme, validate_host(parts.hostname), validate_port(port)


def format_url(scheme, host, port):
    """The URL for ``(scheme, host, port)``; IPv6 hosts get brackets."""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
