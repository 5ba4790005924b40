"""What the API handlers share beyond authorization: reading bodies and answering a spawner's call."""

import json
from contextlib import asynccontextmanager

from tornado import web

from ..errors import (
    CallConflict,
    CallRejected,
    InvalidEvent,
    InvalidSpec,
    TooManyCalls,
    TunnelRequestRefused,
    TunnelSetupFailed,
)
from ..remote_calls import remote_calls

#: how the API answers each error of parsing a request or of the spawner's call: the status, and
#: the words put before the error's message; the first kind that matches counts
ANSWERS = (
    (TunnelRequestRefused, 403, "Refused: "),
    (InvalidSpec, 400, "Invalid tunnel request: "),
    (InvalidEvent, 400, "Invalid event: "),
    (CallRejected, 400, ""),
    (CallConflict, 409, ""),
    (TunnelSetupFailed, 422, ""),
    (TooManyCalls, 429, ""),
)
_ANSWERED = tuple(kind for kind, _, _ in ANSWERS)


def read_json_body(handler, max_bytes):
    """The request body as JSON; 413 over ``max_bytes``, 400 if it is not JSON."""
    if len(handler.request.body) > max_bytes:
        raise web.HTTPError(413, f"The body is larger than {max_bytes} bytes.")
    try:
        return json.loads(handler.request.body or b"null")
    except ValueError:
        raise web.HTTPError(400, "The body is not valid JSON.") from None


@asynccontextmanager
async def remote_call(handler, spawner):
    """Around parsing a request and making the spawner's call: gives the spawner's
    :class:`~forwardbasespawner.remote_calls.RemoteCalls` and answers their errors as
    :data:`ANSWERS` says (with ``Retry-After`` when the error has one). A failed call that ended
    the spawn and left the server to stop is stopped here first, with JupyterHub's handler.
    """
    try:
        yield remote_calls(spawner)
    except _ANSWERED as e:
        status, prefix = next((status, prefix) for kind, status, prefix in ANSWERS if isinstance(e, kind))
        if getattr(e, "stop_server", False):
            await handler.stop_single_user(spawner.user, spawner.name)
        if getattr(e, "retry_after", None):
            handler.set_header("Retry-After", str(e.retry_after))
        raise web.HTTPError(status, f"{prefix}{e}") from None
