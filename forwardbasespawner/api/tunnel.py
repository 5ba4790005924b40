"""SetupTunnel API: the remote side reports where its server listens; the Hub opens the forward."""

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..remote_calls import TunnelRequest
from .auth import authorize_server_writer
from .common import read_json_body, remote_call

MAX_BODY_BYTES = 16 * 1024


class SetupTunnelAPIHandler(APIHandler):
    """``POST /hub/api/users/setuptunnel/{user}[/{server}]`` with ``{"service": "host:port", ...}``.

    The server's own token or ``admin:servers``. 204 when the tunnel is up. A tunnel that cannot
    be made also ends the spawn, with a failed event saying so. Calls for one server run one at a
    time; a call while ``_start()`` still runs waits for it. See docs/source/security.md.
    """

    async def post(self, user_name, server_name=""):
        spawner = authorize_server_writer(self, user_name, server_name or "")
        if not hasattr(spawner, "run_ssh_forward"):
            raise web.HTTPError(400, f"Server {spawner._log_name} does not use tunnels.")
        async with remote_call(self, spawner) as calls:
            request = TunnelRequest.parse(
                read_json_body(self, MAX_BODY_BYTES),
                allowed_nodes=calls.setuptunnel_allowed_nodes,
                allowed_keys=calls.setuptunnel_allowed_keys,
            )
            await calls.setup_tunnel(request)
        self.set_status(204)
        self.finish()
