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


# ---------------------------------------------------------------- remote calls (forwardbasespawner.remote_calls)
# What a spawner answers when the remote side asks through the Hub API for something it does not do.
# The message is for the caller; the API handlers map each kind to an HTTP status (api/common.py).


class RemoteCallError(Exception):
    """A call of the remote side that the spawner did not carry out; the message says why."""


class CallRejected(RemoteCallError):
    """The spawner does not take this request (its event filter refused the event, it keeps no
    events, it uses no tunnels)."""


class CallConflict(RemoteCallError):
    """The server is not in a state for this call (stopped, still starting, already ended)."""


class TooManyCalls(RemoteCallError):
    """The caller exceeded a rate or a cap; ``retry_after`` is the seconds to wait, or None when
    waiting does not help (a cap for this start)."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class TunnelSetupFailed(RemoteCallError):
    """The forward asked for could not be made; the spawn was ended with a failed event.

    ``stop_server`` is True when JupyterHub must still stop the server (the API handler does that:
    it needs JupyterHub's handler).
    """

    def __init__(self, message, stop_server=False):
        super().__init__(message)
        self.stop_server = stop_server


__all__ += ["CallConflict", "CallRejected", "RemoteCallError", "TooManyCalls", "TunnelSetupFailed"]
