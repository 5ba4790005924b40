"""SetupTunnel API: the remote side reports where its server listens; the Hub opens the forward."""

import asyncio
import weakref

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..addresses import parse_server_address
from ..hooks import resolve
from ..policy import api_ssh_options_allowed, key_allowed, log_safe, service_allowed, setting
from ..ssh.openssh import TunnelError
from ..ssh.spec import InvalidSpec, TunnelRequestRefused, validate_tunnel_request
from .auth import require_server_writer
from .common import end_spawn, read_json_body, require_starting_or_running

MAX_BODY_BYTES = 16 * 1024

#: what callers are told when the forward fails; ssh's own words (user@host, paths, errors of the
#: node) go to the Hub's log only
TUNNEL_FAILED = "The tunnel to the server could not be set up; an administrator finds the reason in the Hub's log."

_LOCKS = weakref.WeakKeyDictionary()  # spawner -> asyncio.Lock: one SetupTunnel at a time per server
_CHANGES = weakref.WeakKeyDictionary()  # spawner -> (start id, forward changes in that start)


def tunnel_lock(spawner):
    """The lock that serialises SetupTunnel calls of one server (``port_forward_info`` is shared)."""
    lock = _LOCKS.get(spawner)
    if lock is None:
        lock = _LOCKS[spawner] = asyncio.Lock()
    return lock


async def wait_for_start_call(spawner):
    """Wait until the subclass's ``_start()`` has returned; 409 if the start ended without a URL.

    A remote side may call SetupTunnel before ``_start()`` returned (the start script is faster
    than the ssh session that launched it). The forward is made only after: ``start()`` then knows
    whether it makes the tunnel itself (``ssh_during_startup``) and has handed out the URL, so the
    port never moves under the forward.
    """
    outcome = await spawner.start_call_outcome(timeout=max(float(getattr(spawner, "start_timeout", 60) or 60), 1))
    if outcome == "running":
        raise web.HTTPError(409, f"Server {spawner._log_name} is still being started; call again later.")
    if outcome == "failed":
        raise web.HTTPError(409, f"Server {spawner._log_name} failed to start.")
    if outcome == "cancelled":
        raise web.HTTPError(409, f"The start of {spawner._log_name} was cancelled.")


class SetupTunnelAPIHandler(APIHandler):
    """``POST /hub/api/users/setuptunnel/{user}[/{server}]`` with ``{"service": "host:port", ...}``.

    The server's own token or ``admin:servers``. 204 when the tunnel is up. A tunnel that cannot
    be made also ends the spawn, with a failed event saying so. Calls for one server run one at a
    time; a call while ``_start()`` still runs waits for it. See docs/source/security.md.
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
        await self._check_policy(spawner, request)
        require_starting_or_running(spawner)
        async with tunnel_lock(spawner):
            await wait_for_start_call(spawner)
            require_starting_or_running(spawner)  # it may have stopped while we waited
            await self._setup(spawner, server_name, request)

    async def _check_policy(self, spawner, request):
        """The operator's limits on targets, keys and ssh options (403 when refused)."""
        _, host, port = parse_server_address(request["service"])
        if not service_allowed(host, port, setting(spawner, "setuptunnel_allowed_services")):
            self.log.warning("SetupTunnel for %s refused: target %s is not allowed", spawner._log_name, log_safe(request["service"]))
            raise web.HTTPError(403, f"Refused: the target {request['service']} is not one this Hub forwards to.")
        check = setting(spawner, "setuptunnel_service_check")
        if check is not None:
            try:
                verdict = await resolve(check, spawner, host, port)
            except Exception:
                self.log.exception("setuptunnel_service_check failed for %s", spawner._log_name)
                verdict = False
            if verdict is not True and (verdict is False or isinstance(verdict, str) or not verdict):
                self.log.warning("SetupTunnel for %s refused by setuptunnel_service_check: %s", spawner._log_name,
                                 log_safe(verdict if isinstance(verdict, str) else request["service"]))  # fmt: skip
                raise web.HTTPError(403, f"Refused: the target {request['service']} is not one this Hub forwards to.")
        if "ssh_key" in request and not key_allowed(request["ssh_key"], setting(spawner, "setuptunnel_allowed_ssh_keys")):
            raise web.HTTPError(
                403, "Refused: 'ssh_key' is not one of the key files an operator allows "
                     "(c.ForwardBaseSpawner.setuptunnel_allowed_ssh_keys)",
            )  # fmt: skip
        if "ssh_forward_options" in request:
            reason = api_ssh_options_allowed(request["ssh_forward_options"])
            if reason:
                raise web.HTTPError(403, f"Refused: {reason}")

    def _count_change(self, spawner):
        start_id = getattr(spawner, "start_id", "")
        seen_start, count = _CHANGES.get(spawner, (start_id, 0))
        if seen_start != start_id:
            count = 0
        if count >= setting(spawner, "setuptunnel_max_changes"):
            raise web.HTTPError(429, f"Server {spawner._log_name} has changed its tunnel too often in this start.")
        _CHANGES[spawner] = (start_id, count + 1)

    async def _setup(self, spawner, server_name, request):
        previous = dict(spawner.port_forward_info)
        moved = any(previous.get(k) != v for k, v in request.items())
        if not moved and await spawner.tunnel_is_up():
            # the same call again (a retrying start script, a job restarted by its scheduler)
            self.set_status(204)
            self.finish()
            return
        self._count_change(spawner)
        if previous.get("service") and moved:
            await spawner.run_ssh_forward_remove(delete_svc=False)  # the target moved
        spawner.port_forward_info.update(request)
        try:
            await spawner.run_ssh_forward(create_svc=False)
        except Exception as e:
            if isinstance(e, (TunnelError, InvalidSpec)):
                self.log.error("SetupTunnel for %s failed: %s", spawner._log_name, log_safe(e, 2000))
            else:  # a bug or a hook's error: the traceback goes to the log, not to the caller
                self.log.exception("SetupTunnel for %s failed", spawner._log_name)
            event = {"progress": 100, "failed": True, "message": TUNNEL_FAILED}
            spawner.events.append(event)
            await end_spawn(self, spawner, server_name, spawner.events[-1])
            raise web.HTTPError(422, TUNNEL_FAILED) from None
        spawner.save_state()  # run_ssh_forward() recorded the open tunnel
        self.log.info("SetupTunnel for %s: forward to %s is up", spawner._log_name, request["service"])
        self.set_status(204)
        self.finish()
