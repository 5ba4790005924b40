"""Local ports for forwards: allocated by binding, so a port handed out was free a moment ago."""

import collections
import socket

# Ports handed out lately: the kernel may offer a port again as soon as our probe socket closes,
# before the forward that will use it is up; two starts must not get the same one.
_RECENT = collections.deque(maxlen=4096)


def allocate_port(host="127.0.0.1"):
    """A port that is free on ``host`` now and was not handed out lately (the caller binds it
    soon; EADDRINUSE is retried there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _RECENT:
            _RECENT.append(port)
            return port
    raise OSError("no free port that was not handed out lately")


def port_is_free(host, port):
    """Whether nothing listens on ``host:port`` (connections in TIME_WAIT do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
