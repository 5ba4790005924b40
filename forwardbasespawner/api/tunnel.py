"""SetupTunnel API: the remote side reports where its server listens; the Hub opens the forward."""

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..ssh.openssh import TunnelError
from ..ssh.spec import InvalidSpec, TunnelRequestRefused, validate_tunnel_request
from .auth import require_server_writer
from .common import end_spawn, read_json_body, require_starting_or_running

MAX_BODY_BYTES = 16 * 1024


class SetupTunnelAPIHandler(APIHandler):
    """``POST /hub/api/users/setuptunnel/{user}[/{server}]`` with ``{"service": "host:port", ...}``.

    The server's own token or ``admin:servers``. 204 when the tunnel is up. A tunnel that cannot
    be made also ends the spawn, with a failed event saying why.
    """

    async def post(self, user_name, server_name=""):
        server_name = server_name or ""
        spawner = require_server_writer(self, user_name, server_name)
        if not hasattr(spawner, "run_ssh_forward"):
            raise web.HTTPError(400, f"Server {spawner._log_name} does not use tunnels.")
        body = read_json_body(self, MAX_BODY_BYTES)
        try:
            request = validate_tunnel_request(
                body, allowed_nodes=spawner.setuptunnel_allowed_nodes, allowed_keys=spawner.setuptunnel_allowed_keys
            )
        except TunnelRequestRefused as e:
            raise web.HTTPError(403, f"Refused: {e}") from None
        except InvalidSpec as e:
            raise web.HTTPError(400, f"Invalid tunnel request: {e}") from None
        require_starting_or_running(spawner)

        previous = dict(spawner.port_forward_info)
        moved = any(previous.get(k) != v for k, v in request.items())
        if not moved and await spawner.tunnel_is_up():
            # the same call again (a retrying start script, a job restarted by its scheduler)
            self.set_status(204)
            self.finish()
            return
        if previous.get("service") and moved:
            await spawner.run_ssh_forward_remove(delete_svc=False)  # the target moved
        spawner.port_forward_info.update(request)
        try:
            await spawner.run_ssh_forward(create_svc=False)
        except Exception as e:
            if isinstance(e, (TunnelError, InvalidSpec)):
                self.log.error("SetupTunnel for %s failed: %s", spawner._log_name, e)
            else:  # a bug or a hook's error: the traceback goes to the log, not to the caller
                self.log.exception("SetupTunnel for %s failed", spawner._log_name)
                e = "an error in the Hub (see its log)"
            event = {"progress": 100, "failed": True, "message": f"The tunnel to the server could not be set up: {e}"}
            spawner.events.append(event)
            await end_spawn(self, spawner, server_name, spawner.events[-1])
            raise web.HTTPError(422, f"The tunnel could not be set up: {e}") from None
        spawner._tunnel_open = True
        spawner.save_state()
        self.log.info("SetupTunnel for %s: forward to %s is up", spawner._log_name, request["service"])
        self.set_status(204)
        self.finish()
