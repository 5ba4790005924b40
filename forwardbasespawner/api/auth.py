"""Who may call what: the rules shared by the API handlers."""

import hmac

from jupyterhub import orm
from tornado import web

from ..spawner import token_sha256


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


def require_server_writer(handler, user_name, server_name):
    """Return the spawner if the caller is that server itself or an admin of it; else raise.

    ``access:servers`` is not enough: JupyterHub grants it to every user on their own servers and
    to share recipients, and neither may write events or tunnels in the server's name.
    Callers who may not even read the server get 404, as JupyterHub answers for hidden resources.
    """
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    target = f"{user_name}/{server_name}"
    spawner = find_spawner(handler, user_name, server_name)
    if handler.has_scope(f"admin:servers!server={target}") or (
        spawner is not None and is_server_token(handler, spawner)
    ):
        if spawner is None:
            raise web.HTTPError(404, f"No server {target!r}.")
        return spawner
    if any(handler.has_scope(f"{scope}!server={target}") for scope in ("read:servers", "access:servers")):
        # they know the server exists (owner, share recipient): say what is missing
        raise web.HTTPError(403, "Only the server's own API token or an admin may do this.")
    raise web.HTTPError(404, "No access to resources or resources not found")


def check_custom_scopes(handler):
    """Pass if the caller's token holds one of ``handler.required_scopes`` or unfiltered
    ``admin:servers``, else 403 naming the scopes.

    Only the scopes of the credential decide, never ``current_user.admin``: an admin's token
    restricted to ``read:users:name`` (made for a script), or the OAuth token of a server an admin
    opens, carries the admin's name but not their rights. An admin's full token has
    ``admin:servers`` (JupyterHub's admin role) and passes.
    """
    required = list(getattr(handler, "required_scopes", []))
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    held = getattr(handler, "expanded_scopes", None) or set()
    if any(scope in held for scope in required) or "admin:servers" in held:
        return
    raise web.HTTPError(403, f"Requires one of the scopes: {', '.join(required)}, or admin:servers")
