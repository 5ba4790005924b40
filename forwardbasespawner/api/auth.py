"""Who may call what: one helper per kind of route, each called first in the handler.

- :func:`authorize_server_reader` — read a server (the SpawnEvents GET): ``read:servers`` on it;
- :func:`authorize_server_writer` — act in a server's name (SpawnEvents POST, SetupTunnel): the
  server's own API token or ``admin:servers`` on it;
- :func:`authorize_scope` — a Hub-wide route (ListServers, SSHNodeRestarted): one of its scopes,
  or unfiltered ``admin:servers``.

The two server helpers return the spawner. Callers who may not even read a server get 404, as
JupyterHub answers for hidden resources; a request without valid credentials gets 403.
"""

import hmac

from jupyterhub import orm
from tornado import web

from ..policy import log_safe
from ..spawner import token_sha256

#: JupyterHub's answer for a resource the caller may not see, or that does not exist
HIDDEN = "No access to resources or resources not found"


def _require_credentials(handler):
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")


def authorize_server_reader(handler, user_name, server_name):
    """Return the spawner if the caller holds ``read:servers`` on that server, else raise.

    As JupyterHub's ``@needs_scope("read:servers")``: 403 when the caller has no ``read:servers``
    at all, 404 when their (filtered) ``read:servers`` does not cover it; then 404 when there is
    no such server.
    """
    _require_credentials(handler)
    target = f"{user_name}/{server_name}"
    if not handler.has_scope(f"read:servers!server={target}"):
        handler.log.warning("Not authorizing access to %s. Requires read:servers on server=%s", handler.request.path, log_safe(target))
        if "read:servers" in handler.parsed_scopes:
            raise web.HTTPError(404, HIDDEN)
        raise web.HTTPError(403, "Action is not authorized with current scopes; requires any of [read:servers]")
    spawner = find_spawner(handler, user_name, server_name)
    if spawner is None:
        raise web.HTTPError(404, "No such server.")
    return spawner


def authorize_server_writer(handler, user_name, server_name):
    """Return the spawner if the caller is that server itself or an admin of it; else raise.

    ``access:servers`` is not enough: JupyterHub grants it to every user on their own servers and
    to share recipients, and neither may write events or tunnels in the server's name.
    Callers who may not even read the server get 404, as JupyterHub answers for hidden resources.
    """
    _require_credentials(handler)
    target = f"{user_name}/{server_name}"
    spawner = find_spawner(handler, user_name, server_name)
    if handler.has_scope(f"admin:servers!server={target}") or (spawner is not None and is_server_token(handler, spawner)):
        if spawner is None:
            raise web.HTTPError(404, f"No server {target!r}.")
        return spawner
    if any(handler.has_scope(f"{scope}!server={target}") for scope in ("read:servers", "access:servers")):
        # they know the server exists (owner, share recipient): say what is missing
        raise web.HTTPError(403, "Only the server's own API token or an admin may do this.")
    raise web.HTTPError(404, HIDDEN)


def authorize_scope(handler, *scopes):
    """Pass if the caller's token holds one of ``scopes`` or unfiltered ``admin:servers``, else
    403 naming the scopes.

    Only the scopes of the credential decide, never ``current_user.admin``: an admin's token
    restricted to ``read:users:name`` (made for a script), or the OAuth token of a server an admin
    opens, carries the admin's name but not their rights. An admin's full token has
    ``admin:servers`` (JupyterHub's admin role) and passes.
    """
    _require_credentials(handler)
    held = getattr(handler, "expanded_scopes", None) or set()
    if any(scope in held for scope in scopes) or "admin:servers" in held:
        return
    raise web.HTTPError(403, f"Requires one of the scopes: {', '.join(scopes)}, or admin:servers")


def check_custom_scopes(handler):
    """:func:`authorize_scope` with the handler's ``required_scopes`` (the original package's
    helper; subclasses import it from ``forwardbasespawner.utils``)."""
    authorize_scope(handler, *getattr(handler, "required_scopes", []))


def find_spawner(handler, user_name, server_name):
    """The spawner of ``user_name``'s server ``server_name``, or None if there is none."""
    current = handler.current_user
    if getattr(current, "name", None) == user_name and hasattr(current, "orm_spawners"):
        # the caller is that user (their server's token, mostly): JupyterHub has loaded them already,
        # while a lookup by name costs a database query that dominated every event POST
        user = current
    else:
        user = handler.find_user(user_name)
    if user is None or server_name not in user.orm_spawners:
        return None
    return user.spawners[server_name]


def is_server_token(handler, spawner):
    """Whether the request carries the API token JupyterHub issued to this server."""
    token = handler.get_auth_token()
    if not token:
        return False
    digest = getattr(spawner, "server_token_sha256", "")
    if digest:
        return hmac.compare_digest(token_sha256(token), digest)
    if spawner.api_token:  # started in this Hub process, before the digest was kept
        return hmac.compare_digest(token, spawner.api_token)
    # a server started by the original package, whose state row has no digest, and JupyterHub does
    # not keep api_token across restarts: ask JupyterHub's own token records, then remember it
    if is_issued_server_token(handler.db, spawner, token):
        spawner.server_token_sha256 = token_sha256(token)
        if hasattr(spawner, "save_state"):
            spawner.save_state()
        return True
    return False


def is_issued_server_token(db, spawner, token):
    """Whether ``token`` is the one JupyterHub issued when it started this server.

    JupyterHub creates that token at the start, owned by the user, with the note
    ``"Server at <the server's base URL>"``, just before it records the start time. A user can
    create a token with the same note, but not one that predates the start and is newer than
    the real one: the newest such token created up to the start time is the server's.
    """
    orm_spawner = getattr(spawner, "orm_spawner", None)
    server = getattr(orm_spawner, "server", None)
    if server is None or orm_spawner.started is None:
        return False
    found = orm.APIToken.find(db, token)
    note = f"Server at {server.base_url}"
    if found is None or found.user_id != spawner.user.id or found.note != note:
        return False
    issued = (
        db.query(orm.APIToken)
        .filter(orm.APIToken.user_id == spawner.user.id, orm.APIToken.note == note)
        .filter(orm.APIToken.created <= orm_spawner.started)
        .order_by(orm.APIToken.created.desc())
        .first()
    )
    return issued is not None and issued.id == found.id
