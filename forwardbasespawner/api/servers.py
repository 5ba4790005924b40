"""ListServers API: which servers run, for remote systems that clean up what the Hub forgot."""

import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..hubdb import server_rows
from .auth import authorize_scope

MAX_LIMIT = 10000
MAX_OFFSET = 2**31 - 1  # what every database takes as an OFFSET (SQLite's is 64-bit, others' are not)


def server_id(user_id, server_name, start_id):
    """The compatible form: ``{user_id}_{servername}_{start_id}``."""
    return f"{user_id}_{server_name}_{start_id}"


class ListServersAPIHandler(APIHandler):
    """``GET /hub/api/servers`` — scope ``custom:servers:list`` or an admin.

    Default answer: a JSON list of ``"{user_id}_{servername}_{start_id}"`` for every server with a
    server record (running or starting). ``?format=objects``: a list of
    ``{"user", "user_id", "server", "start_id", "state"}`` (state: "running" or "pending").
    ``?offset=N&limit=M`` pages through either, in a stable order.
    """

    required_scopes = ["custom:servers:list"]

    def _int_argument(self, name, default):
        value = self.get_argument(name, None)
        if value is None:
            return default
        # str.isdigit() is true for "²" and "٣", which int() refuses or reads: ASCII digits only
        if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_OFFSET:
            raise web.HTTPError(400, f"'{name}' must be an integer between 0 and {MAX_OFFSET}")
        return int(value)

    async def get(self):
        authorize_scope(self, *self.required_scopes)
        form = self.get_argument("format", "strings")
        if form not in ("strings", "objects"):
            raise web.HTTPError(400, "'format' is 'strings' or 'objects'")
        offset = self._int_argument("offset", 0)
        limit = self._int_argument("limit", None)
        if limit is not None and not 0 < limit <= MAX_LIMIT:
            raise web.HTTPError(400, f"'limit' must be between 1 and {MAX_LIMIT}")
        query = server_rows(self.db).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        rows = query.all()
        live = self._live_spawners()

        def start_id(user, name, state):
            # a start still under way has not saved its state yet: its spawner knows the start id
            spawner = live.get((user, name or ""))
            return getattr(spawner, "start_id", "") or (state or {}).get("start_id", "")

        self.set_header("Content-Type", "application/json")
        if form == "strings":
            self.finish(json.dumps([server_id(uid, name or "", start_id(user, name, state)) for uid, user, name, state in rows]))
            return
        self.finish(json.dumps([
            {
                "user": user, "user_id": uid, "server": name or "",
                "start_id": start_id(user, name, state),
                "state": "pending" if getattr(live.get((user, name or "")), "pending", None) else "running",
            }
            for uid, user, name, state in rows
        ]))  # fmt: skip

    def _live_spawners(self):
        """``(user name, server name) -> spawner`` of the users this Hub has loaded (no queries)."""
        return {(user.name, name): spawner for user in list(self.users.values()) for name, spawner in list(user.spawners.items())}
