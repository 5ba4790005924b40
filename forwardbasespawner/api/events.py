"""SpawnEvents API: read a spawn's progress events; the remote start script posts new ones."""

import asyncio
import math
import time
import weakref

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..events import EventLog, InvalidEvent, is_terminal, parse_event, unknown_fields
from ..hooks import settle
from ..policy import log_safe, setting
from .auth import find_spawner, require_server_writer
from .common import end_spawn, read_json_body, require_starting_or_running

# for spawners that are not ForwardBaseSpawners (mixed deployments)
_DEFAULT_MAX_BODY = 64 * 1024
_DEFAULT_MAX_CHARS = 4096


class _Poster:
    """Per server and start: the token bucket of event POSTs and the deferred state write."""

    def __init__(self, start_id, burst):
        self.start_id = start_id
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.saved = 0.0
        self.pending_save = None

    def take(self, rate, burst):
        """Take one token; return 0 if there was one, else the seconds until there is."""
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return (1 - self.tokens) / rate if rate > 0 else 3600


_POSTERS = weakref.WeakKeyDictionary()  # spawner -> _Poster (of its current start)


def _poster(spawner):
    start_id = getattr(spawner, "start_id", "")
    poster = _POSTERS.get(spawner)
    if poster is None or poster.start_id != start_id:
        if poster is not None and poster.pending_save is not None:
            poster.pending_save.cancel()
        poster = _POSTERS[spawner] = _Poster(start_id, setting(spawner, "events_post_burst"))
    return poster


def save_state_soon(spawner, now=False):
    """Write the spawner's state, at most once per ``events_state_write_interval`` (a flood of
    events would otherwise rewrite the whole state row for each one); ``now`` writes at once."""
    poster = _poster(spawner)
    interval = setting(spawner, "events_state_write_interval")
    elapsed = time.monotonic() - poster.saved
    if now or elapsed >= interval:
        if poster.pending_save is not None:
            poster.pending_save.cancel()
            poster.pending_save = None
        poster.saved = time.monotonic()
        spawner.save_state()
        return
    if poster.pending_save is None:
        ref = weakref.ref(spawner)

        def flush():
            poster.pending_save = None
            target = ref()
            # a server that stopped meanwhile had its state written by JupyterHub's stop
            if target is not None and (target.pending or target.ready) and poster.start_id == target.start_id:
                poster.saved = time.monotonic()
                target.save_state()

        poster.pending_save = asyncio.get_running_loop().call_later(interval - elapsed, flush)


class SpawnEventsAPIHandler(APIHandler):
    """``/hub/api/users/progress/events/{user}[/{server}]``

    GET (``read:servers``): ``{"events": [...], "active": bool, "ready": bool}``.
    POST (the server's own token, or ``admin:servers``): one event; 204 when stored.
    A ``failed`` event ends the spawn: a pending start is cancelled, a running server stopped.
    A spawn takes one ``ready`` and one ``failed`` event from the API (409 after that), and at most
    ``events_post_rate`` events per second (429 with Retry-After beyond).
    """

    @needs_scope("read:servers")
    async def get(self, user_name, server_name=""):
        spawner = find_spawner(self, user_name, server_name or "")
        if spawner is None:
            raise web.HTTPError(404, "No such server.")
        events = getattr(spawner, "events", [])
        self.finish({"events": list(events), "active": spawner.active, "ready": spawner.ready})

    async def post(self, user_name, server_name=""):
        server_name = server_name or ""
        spawner = require_server_writer(self, user_name, server_name)
        raw = read_json_body(self, getattr(spawner, "event_max_body_bytes", _DEFAULT_MAX_BODY))
        if not isinstance(raw, dict) or not raw:
            raise web.HTTPError(400, "Invalid event: the event must be a non-empty JSON object")
        require_starting_or_running(spawner)
        poster = _poster(spawner)
        wait = poster.take(setting(spawner, "events_post_rate"), setting(spawner, "events_post_burst"))
        if wait:
            self.set_header("Retry-After", str(max(1, math.ceil(wait))))
            raise web.HTTPError(429, "Too many events; retry later.")
        # filter_events sees the event as it was posted, fields this library drops included
        raw = await self._filter(spawner, raw)
        try:
            event = parse_event(raw, max_chars=getattr(spawner, "event_max_chars", _DEFAULT_MAX_CHARS))
        except InvalidEvent as e:
            raise web.HTTPError(400, f"Invalid event: {e}") from None
        dropped = unknown_fields(raw)
        if dropped:
            self.log.debug("Event for %s: dropped field(s) %s", spawner._log_name, log_safe(", ".join(map(str, dropped))))
        events = getattr(spawner, "events", None)
        if not isinstance(events, EventLog):
            raise web.HTTPError(400, f"Server {spawner._log_name} does not keep progress events.")
        terminal = events.terminal_events() if not events.closed else []
        if any(e.get("failed") for e in terminal):
            raise web.HTTPError(409, f"Server {spawner._log_name} has reported a failure; its spawn is ending.")
        if event.get("ready") and any(e.get("ready") for e in terminal):
            raise web.HTTPError(409, f"Server {spawner._log_name} has reported ready already.")
        events.append(event)
        save_state_soon(spawner, now=is_terminal(event))
        self.log.debug("Event for %s: %s", spawner._log_name, log_safe(events[-1].get("message", "")))
        if event.get("failed"):
            self.log.info("Server %s reported a failure: %s", spawner._log_name, log_safe(events[-1].get("message", "")))
            await end_spawn(self, spawner, server_name, events[-1])
        self.set_status(204)
        self.finish()

    async def _filter(self, spawner, event):
        try:
            filtered = await settle(spawner.run_filter_events(event))
        except Exception:
            self.log.exception("filter_events failed for %s", spawner._log_name)
            raise web.HTTPError(400, "The event was rejected by the server's event filter.") from None
        if not filtered:
            raise web.HTTPError(400, "The event was rejected by the server's event filter.")
        if not isinstance(filtered, dict):
            self.log.error("filter_events for %s returned %r, not a dict", spawner._log_name, type(filtered))
            raise web.HTTPError(400, "The event was rejected by the server's event filter.")
        return filtered
