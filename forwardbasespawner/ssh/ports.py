"""Local ports for forwards: allocated by binding, so a port handed out was free a moment ago."""

import socket


def allocate_port(host="127.0.0.1"):
    """A port that is free on ``host`` now (the caller binds it soon; EADDRINUSE is retried there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
