"""SpawnEvents API: read a spawn's progress events; the remote start script posts new ones."""

from jupyterhub.apihandlers.base import APIHandler

from ..remote_calls import PostedEvent
from .auth import authorize_server_reader, authorize_server_writer
from .common import read_json_body, remote_call


class SpawnEventsAPIHandler(APIHandler):
    """``/hub/api/users/progress/events/{user}[/{server}]``

    GET (``read:servers``): ``{"events": [...], "active": bool, "ready": bool}``.
    POST (the server's own token, or ``admin:servers``): one event; 204 when stored.
    A ``failed`` event ends the spawn: a pending start is cancelled, a running server stopped.
    A spawn takes one ``ready`` and one ``failed`` event from the API (409 after that), and at most
    ``events_post_rate`` events per second (429 with Retry-After beyond).
    """

    async def get(self, user_name, server_name=""):
        spawner = authorize_server_reader(self, user_name, server_name or "")
        events = getattr(spawner, "events", [])
        self.finish({"events": list(events), "active": spawner.active, "ready": spawner.ready})

    async def post(self, user_name, server_name=""):
        spawner = authorize_server_writer(self, user_name, server_name or "")
        async with remote_call(self, spawner) as calls:
            event = PostedEvent.parse(read_json_body(self, calls.event_max_body_bytes))
            ended = await calls.report_event(event)
        if ended:
            await self.stop_single_user(spawner.user, spawner.name)
        self.set_status(204)
        self.finish()
