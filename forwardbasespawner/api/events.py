"""SpawnEvents API: read a spawn's progress events; the remote start script posts new ones."""

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..events import EventLog, InvalidEvent, parse_event, unknown_fields
from ..hooks import settle
from .auth import find_spawner, require_server_writer
from .common import end_spawn, read_json_body, require_starting_or_running

# for spawners that are not ForwardBaseSpawners (mixed deployments)
_DEFAULT_MAX_BODY = 64 * 1024
_DEFAULT_MAX_CHARS = 4096


class SpawnEventsAPIHandler(APIHandler):
    """``/hub/api/users/progress/events/{user}[/{server}]``

    GET (``read:servers``): ``{"events": [...], "active": bool, "ready": bool}``.
    POST (the server's own token, or ``admin:servers``): one event; 204 when stored.
    A ``failed`` event ends the spawn: a pending start is cancelled, a running server stopped.
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
        # filter_events sees the event as it was posted, fields this library drops included
        raw = await self._filter(spawner, raw)
        try:
            event = parse_event(raw, max_chars=getattr(spawner, "event_max_chars", _DEFAULT_MAX_CHARS))
        except InvalidEvent as e:
            raise web.HTTPError(400, f"Invalid event: {e}") from None
        dropped = unknown_fields(raw)
        if dropped:
            self.log.debug("Event for %s: dropped field(s) %s", spawner._log_name, ", ".join(dropped)[:200])
        events = getattr(spawner, "events", None)
        if not isinstance(events, EventLog):
            raise web.HTTPError(400, f"Server {spawner._log_name} does not keep progress events.")
        events.append(event)
        spawner.save_state()
        self.log.debug("Event for %s: %s", spawner._log_name, events[-1].get("message", ""))
        if event.get("failed"):
            self.log.info("Server %s reported a failure: %s", spawner._log_name, events[-1].get("message", ""))
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
