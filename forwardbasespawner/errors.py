"""Every exception this library raises on purpose, in one place.

Each says what went wrong in words fit for its audience: ``InvalidAddress``, ``InvalidSpec``,
``InvalidEvent`` and ``TunnelRequestRefused`` for the caller of an API route (the handlers turn
them into 400 and 403); ``TunnelError`` and ``ForwardError`` carry ssh's own words, for the Hub's
log only; ``StartAborted`` carries the remote side's message for the user. The modules that used
to define them still export them under the same names.
"""


class InvalidAddress(ValueError):
    """An address that is not ``[http[s]://]host:port``; the message says why."""


class InvalidSpec(ValueError):
    """A tunnel setting that may not reach a command line; the message says which and why."""


class TunnelRequestRefused(InvalidSpec):
    """A SetupTunnel caller asked for something the operator did not allow."""


class InvalidEvent(ValueError):
    """An event that is not acceptable; the message says why, for the caller."""


class TunnelError(Exception):
    """A master or a forward could not be set up; the message is ssh's own reason."""


class ForwardError(TunnelError):
    """The master is up but refused one forward (e.g. its port is taken)."""


class ServiceConflict(Exception):
    """A Service with the wanted name exists and is not ours for this server; it is left alone."""


class StartAborted(Exception):
    """The remote side reported that the start failed; the message is for the user."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message


__all__ = [
    "ForwardError",
    "InvalidAddress",
    "InvalidEvent",
    "InvalidSpec",
    "ServiceConflict",
    "StartAborted",
    "TunnelError",
    "TunnelRequestRefused",
]
