"""Who may call what: the rules shared by the API handlers."""

import hmac

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
    # a server started before this library remembered the digest
    return bool(spawner.api_token) and hmac.compare_digest(token, spawner.api_token)


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
    """Pass if the caller holds any of ``handler.required_scopes`` or is an admin (an admin user, or
    unfiltered ``admin:servers``), else 403 naming the scopes."""
    required = list(getattr(handler, "required_scopes", []))
    if handler.current_user is None:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    held = getattr(handler, "expanded_scopes", set())
    if any(scope in held for scope in required) or getattr(handler.current_user, "admin", False) or "admin:servers" in held:
        return
    raise web.HTTPError(403, f"Requires one of the scopes: {', '.join(required)}")
