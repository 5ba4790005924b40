"""ListServers API: which servers run, for remote systems that clean up what the Hub forgot."""

import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..hubdb import server_rows
from .auth import check_custom_scopes

MAX_LIMIT = 10000


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
        if not value.isdigit():
            raise web.HTTPError(400, f"'{name}' must be a non-negative integer")
        return int(value)

    async def get(self):
        check_custom_scopes(self)
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
        if form == "strings":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps([server_id(uid, name or "", (state or {}).get("start_id", "")) for uid, _, name, state in rows]))
            return
        pending = self._pending()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps([
            {
                "user": user, "user_id": uid, "server": name or "",
                "start_id": (state or {}).get("start_id", ""),
                "state": "pending" if (user, name or "") in pending else "running",
            }
            for uid, user, name, state in rows
        ]))  # fmt: skip

    def _pending(self):
        """Servers of users loaded in this Hub whose start (or stop) is still under way."""
        found = set()
        for user in list(self.users.values()):
            for name, spawner in list(user.spawners.items()):
                if spawner.pending:
                    found.add((user.name, name))
        return found
