"""What a tunnel is, as data: the SSH endpoint (a jump node) and the forwards through it.

Every value is validated here, before anything reaches a command line.
"""

import hashlib
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ..addresses import InvalidAddress, parse_server_address, validate_host, validate_port
from ..errors import InvalidSpec, TunnelRequestRefused

# always used with fullmatch: `$` would accept a trailing newline ("Ciphers=aes128-ctr\n")
_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_OPTION_VALUE = re.compile(r"[A-Za-z0-9@._,:+=/-]{1,256}")

#: ssh_config options a configuration may set, and only these. Everything that runs a command
#: (ProxyCommand, LocalCommand, KnownHostsCommand, ...) or reads other files (Include) is absent.
ALLOWED_SSH_OPTIONS = frozenset(
    {
        "AddressFamily", "Ciphers", "Compression", "ConnectTimeout", "ConnectionAttempts",
        "HostKeyAlgorithms", "IPQoS", "KexAlgorithms", "MACs", "PubkeyAcceptedAlgorithms",
        "RekeyLimit", "ServerAliveCountMax", "ServerAliveInterval", "TCPKeepAlive",
    }
)  # fmt: skip


#: ssh options that configurations of the original package set, and the one config line that
#: does the same here (the error an old configuration meets names it)
LEGACY_OPTION_LINES = {
    "StrictHostKeyChecking": 'c.ForwardBaseSpawner.ssh_strict_host_key_checking = "accept-new"  (or "yes"; never "no")',
    "UserKnownHostsFile": 'c.ForwardBaseSpawner.ssh_known_hosts = "/path/to/known_hosts"',
    "IdentityFile": 'c.ForwardBaseSpawner.ssh_key = "/path/to/key"',
    "Port": "c.ForwardBaseSpawner.ssh_port = 22",
    "User": 'c.ForwardBaseSpawner.ssh_username = "tunnel"',
    "ControlPath": 'c.ForwardBaseSpawner.ssh_control_dir = "/run/jupyterhub/ssh"  (masters are managed here)',
    "ControlMaster": "nothing: this library runs and supervises the masters itself; remove the option",
    "ControlPersist": "nothing: this library runs and supervises the masters itself; remove the option",
}


def validate_username(name):
    if not isinstance(name, str) or not _USERNAME.fullmatch(name):
        raise InvalidSpec(f"not a valid user name: {str(name)[:64]!r}")
    return name


def validate_options(options):
    """Return ``options`` as a sorted tuple of (name, value) if every name is allowed and every
    value is plain (no spaces, quotes or shell characters)."""
    if not isinstance(options, dict):
        raise InvalidSpec("ssh options must be a mapping of option names to values")
    checked = []
    for name, value in options.items():
        if name not in ALLOWED_SSH_OPTIONS:
            instead = LEGACY_OPTION_LINES.get(name)
            if instead:
                raise InvalidSpec(f"ssh option {name!r} is not taken from ssh options here; use {instead}")
            raise InvalidSpec(f"ssh option {str(name)[:64]!r} is not allowed; allowed are {', '.join(sorted(ALLOWED_SSH_OPTIONS))}")
        value = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
        if value is None or not _OPTION_VALUE.fullmatch(value):
            raise InvalidSpec(f"ssh option {name} has an invalid value")
        checked.append((name, value))
    return tuple(sorted(checked))


def split_original_options(options):
    """ssh options from an *operator's* configuration written for the original package, split
    into endpoint settings and the ssh options proper.

    The original passed every option to ssh, so configurations set the identity, the known_hosts
    file and host-key checking that way. Those map onto this library's settings for that endpoint
    (``key``, ``port``, ``user``, ``known_hosts``, ``strict_host_key_checking``); the options of
    the original's own ControlMaster handling are dropped (masters are run here). Host-key
    checking is never switched off. Never used for values from API callers.

    Returns ``(endpoint settings, remaining options, dropped option names)``.
    """
    settings, rest, dropped = {}, {}, []
    renamed = {"IdentityFile": "key", "Port": "port", "User": "user", "UserKnownHostsFile": "known_hosts"}
    for name, value in (options or {}).items():
        if name in ("ControlPath", "ControlMaster", "ControlPersist"):
            dropped.append(name)
        elif name in renamed:
            settings[renamed[name]] = value
        elif name == "StrictHostKeyChecking":
            if value not in ("yes", "accept-new"):
                raise InvalidSpec(
                    f"StrictHostKeyChecking={str(value)[:20]} is not possible: host keys are always checked; "
                    f"use {LEGACY_OPTION_LINES[name]}"
                )
            settings["strict_host_key_checking"] = value
        else:
            rest[name] = value
    return settings, rest, dropped


@dataclass(frozen=True)
class Endpoint:
    """One SSH identity on one jump node: what a ControlMaster connects to.

    ``known_hosts`` and ``strict_host_key_checking`` are empty for the Hub-wide settings, or this
    endpoint's own (from a configuration written for the original package).
    """

    host: str
    port: int = 22
    user: str = ""
    key: str = ""
    options: tuple = field(default_factory=tuple)
    known_hosts: str = ""
    strict_host_key_checking: str = ""

    def __post_init__(self):
        try:
            object.__setattr__(self, "host", validate_host(self.host))
            object.__setattr__(self, "port", validate_port(self.port))
        except InvalidAddress as e:
            raise InvalidSpec(str(e)) from None
        if self.user:
            validate_username(self.user)
        if self.key and (not isinstance(self.key, str) or not self.key.startswith("/") or "\0" in self.key):
            raise InvalidSpec("the ssh key must be an absolute path")
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", validate_options(self.options))
        if self.known_hosts and (
            not isinstance(self.known_hosts, str) or not self.known_hosts.startswith("/") or "\0" in self.known_hosts
            or os.path.realpath(self.known_hosts) == "/dev/null"
        ):  # fmt: skip
            raise InvalidSpec("the known_hosts file must be an absolute path of a real file")
        if self.strict_host_key_checking not in ("", "yes", "accept-new"):
            raise InvalidSpec('StrictHostKeyChecking is "yes" or "accept-new"')

    @property
    def id(self):
        """A short stable name for this endpoint (ControlPath names have a length limit)."""
        text = "\0".join([self.host, str(self.port), self.user, self.key, repr(self.options),
                           self.known_hosts, self.strict_host_key_checking])  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self):
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class Forward:
    """A local (-L: listen on the hub, connect from the node) or remote (-R) forward."""

    kind: str  # "L" or "R"
    listen_host: str
    listen_port: int  # 0 for a remote forward: the node picks one
    target_host: str
    target_port: int

    def __post_init__(self):
        if self.kind not in ("L", "R"):
            raise InvalidSpec("a forward is local (L) or remote (R)")
        try:
            object.__setattr__(self, "listen_host", validate_host(self.listen_host))
            object.__setattr__(self, "target_host", validate_host(self.target_host))
            object.__setattr__(self, "target_port", validate_port(self.target_port))
            if not (self.kind == "R" and self.listen_port == 0):
                object.__setattr__(self, "listen_port", validate_port(self.listen_port))
        except InvalidAddress as e:
            raise InvalidSpec(str(e)) from None

    def argument(self):
        """The ``-L``/``-R`` argument: ``listen_host:listen_port:target_host:target_port``."""
        return ":".join([_bracket(self.listen_host), str(self.listen_port), _bracket(self.target_host), str(self.target_port)])


def _bracket(host):
    return f"[{host}]" if ":" in host else host


def _validate_key_path(path):
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 1024:
        raise InvalidSpec("'ssh_key' must be an absolute path")
    return path


#: port_forward_info keys an operator may open to SetupTunnel callers, with their validators
OPTIONAL_TUNNEL_KEYS = {
    "ssh_port": lambda v: validate_port(v) if not isinstance(v, bool) else validate_port("x"),
    "ssh_username": validate_username,
    "ssh_key": _validate_key_path,
    "ssh_forward_options": lambda v: dict(validate_options(v)),
}


@dataclass(frozen=True)
class TunnelRequest:
    """A SetupTunnel call, validated once: where the server listens (``host``, ``port``) and the
    ssh settings the caller may choose (None: not given; see ``setuptunnel_allowed_keys``)."""

    host: str
    port: int
    ssh_node: str | None = None
    ssh_port: int | None = None
    ssh_username: str | None = None
    ssh_key: str | None = None
    ssh_forward_options: dict | None = None

    @classmethod
    def parse(cls, body, *, allowed_nodes=(), allowed_keys=()):
        """The request in a SetupTunnel body (parsed JSON).

        ``service`` (``host:port`` of the server) is required. ``ssh_node`` is accepted only if it
        matches one of ``allowed_nodes`` (names or shell-style patterns); the keys of
        :data:`OPTIONAL_TUNNEL_KEYS` only if listed in ``allowed_keys``.
        Raises :class:`TunnelRequestRefused` for what is not allowed, :class:`InvalidSpec` for what is malformed.
        """
        if not isinstance(body, dict):
            raise InvalidSpec("the body must be a JSON object")
        unknown = sorted(set(body) - {"service", "ssh_node"} - set(OPTIONAL_TUNNEL_KEYS))
        if unknown:
            raise InvalidSpec(f"unknown field(s): {', '.join(str(k)[:40] for k in unknown)[:200]}")
        refused = sorted((set(body) & set(OPTIONAL_TUNNEL_KEYS)) - set(allowed_keys))
        if refused:
            raise TunnelRequestRefused(
                f"field(s) {', '.join(refused)} may not be set through this API; an operator allows them with "
                f"c.ForwardBaseSpawner.setuptunnel_allowed_keys = {refused!r}"
            )
        if "service" not in body:
            raise InvalidSpec("'service' (host:port of the server) is required")
        chosen = {}
        try:
            _, host, port = parse_server_address(body["service"])
            if "ssh_node" in body:
                node = chosen["ssh_node"] = validate_host(body["ssh_node"])
                if not any(fnmatchcase(node, pattern) for pattern in allowed_nodes):
                    raise TunnelRequestRefused(
                        f"ssh_node {node!r} is not one this Hub may use; an operator allows it with "
                        f"c.ForwardBaseSpawner.setuptunnel_allowed_nodes = [{node!r}]"
                    )
            chosen.update((key, validate(body[key])) for key, validate in OPTIONAL_TUNNEL_KEYS.items() if key in body)
        except InvalidAddress as e:
            raise InvalidSpec(str(e)) from None
        return cls(host, port, **chosen)

    @property
    def service(self):
        """``host:port`` (IPv6 in brackets), as ``port_forward_info["service"]`` holds it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def port_forward_info(self):
        """The ``port_forward_info`` keys this request sets: ``{"service": "host:port", ...}``."""
        info = {"service": self.service}
        for key in ("ssh_node", *OPTIONAL_TUNNEL_KEYS):
            value = getattr(self, key)
            if value is not None:
                info[key] = dict(value) if isinstance(value, dict) else value
        return info
