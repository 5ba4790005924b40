"""SSHNodeRestarted API: a jump node came back; rebuild every forward through it now."""

import asyncio

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..addresses import InvalidAddress, validate_host
from ..ssh.registry import tunnel_managers
from .auth import authorize_scope


def tunnel_hosts_for(users, node):
    """The jump hosts of running tunnelled servers that ``node`` names: by their persisted tunnel
    node, or (for callers of the original package) by ``user_options["system"]``."""
    hosts = set()
    for user in users.values():
        for spawner in user.spawners.values():
            if not getattr(spawner, "has_tunnel", False) or not spawner.active:
                continue
            if spawner.tunnel_node == node or (spawner.user_options or {}).get("system") == node:
                hosts.add(spawner.tunnel_node or node)
    return hosts


class SSHNodeRestartedAPIHandler(APIHandler):
    """``POST /hub/api/recreateforward/{node}`` (GET kept for old callers, with a token only).

    Scope ``custom:sshnode:restart`` or an admin. Answers 202 at once; the rebuild runs on, at most
    one per node at a time, leaves healthy masters alone, and logs its outcome.
    """

    required_scopes = ["custom:sshnode:restart"]
    _background = set()

    async def get(self, node):
        # JupyterHub checks no XSRF token on a GET: with a browser's cookie, a link or an <img> in
        # a page an admin opens could trigger it. Old callers are scripts with a token.
        if not self.get_auth_token():
            raise web.HTTPError(403, "GET needs a token (Authorization: token ...); browsers use POST")
        await self.post(node)

    async def post(self, node):
        authorize_scope(self, *self.required_scopes)
        try:
            node = validate_host(node)
        except InvalidAddress as e:
            raise web.HTTPError(400, f"Invalid node: {e}") from None
        hosts = tunnel_hosts_for(self.users, node)
        managers = tunnel_managers()
        hosts |= {m.endpoint.host for manager in managers for m in manager.masters.values() if m.endpoint.host == node}
        for host in hosts:
            for manager in managers:
                task = asyncio.ensure_future(self._rebuild(manager, host))
                self._background.add(task)  # keep a reference until it is done
                task.add_done_callback(self._background.discard)
        self.set_status(202)
        self.finish({"node": node, "jump_hosts": sorted(hosts)})

    async def _rebuild(self, manager, host):
        try:
            restored, failed, healthy = await manager.rebuild_node(host)
        except Exception:
            self.log.exception("Rebuilding the tunnels through %s failed", host)
            return
        log = self.log.warning if failed else self.log.info
        log("Rebuilt tunnels through %s: %d restored, %d failed, %d healthy masters left alone", host, restored, failed, healthy)
