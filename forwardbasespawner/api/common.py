"""What the API handlers share beyond authorization: reading bodies and ending a spawn."""

import asyncio
import json

from tornado import web


def read_json_body(handler, max_bytes):
    """The request body as JSON; 413 over ``max_bytes``, 400 if it is not JSON."""
    if len(handler.request.body) > max_bytes:
        raise web.HTTPError(413, f"The body is larger than {max_bytes} bytes.")
    try:
        return json.loads(handler.request.body or b"null")
    except ValueError:
        raise web.HTTPError(400, "The body is not valid JSON.") from None


def require_starting_or_running(spawner):
    """409 unless the server is starting or running (writes to a stopped server would be lost).

    A server that JupyterHub checks at its start-up (``pending == "check"``) counts as running: a
    start that was waiting for SetupTunnel when the Hub restarted is completed by exactly that call.
    """
    if not (spawner.pending in ("spawn", "check") or (spawner.ready and not spawner.pending)):
        raise web.HTTPError(409, f"Server {spawner._log_name} is not starting or running.")


async def end_spawn(handler, spawner, server_name, event):
    """The remote side gave up (``event`` says why): end the spawn as JupyterHub's cancel does."""
    if spawner.pending == "spawn":
        if spawner.abort_start(event):
            return  # start() raises with the reason; JupyterHub stops and cleans up
        # start() has returned and JupyterHub is waiting for the server to answer
        spawner.mark_start_cancelled()
        future = spawner._spawn_future
        if future is not None and not future.done():
            future.cancel()
            await asyncio.wait([future], timeout=5)
        await handler.stop_single_user(spawner.user, server_name)
    elif spawner.ready:
        await handler.stop_single_user(spawner.user, server_name)
