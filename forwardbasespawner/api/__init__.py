"""The Hub API routes of forwardbasespawner and their registration."""

from .events import SpawnEventsAPIHandler
from .servers import ListServersAPIHandler
from .sshnode import SSHNodeRestartedAPIHandler
from .tunnel import SetupTunnelAPIHandler

#: (route under the Hub prefix, handler), in the form JupyterHub's own API handlers use
ROUTES = [
    (r"/api/users/progress/events/([^/]+)", SpawnEventsAPIHandler),
    (r"/api/users/progress/events/([^/]+)/([^/]*)", SpawnEventsAPIHandler),
    (r"/api/users/setuptunnel/([^/]+)", SetupTunnelAPIHandler),
    (r"/api/users/setuptunnel/([^/]+)/([^/]*)", SetupTunnelAPIHandler),
    (r"/api/recreateforward/([^/]+)", SSHNodeRestartedAPIHandler),
    (r"/api/servers", ListServersAPIHandler),
]


def register_api_handlers(routes=None):
    """Add ``routes`` (default: this package's) to JupyterHub's API handlers, once each.

    Importing ``forwardbasespawner`` calls this. Call it yourself in ``jupyterhub_config.py``
    to add your own routes the same way; it must run before the Hub builds its handlers, which
    is true for anything done while the config file is loaded.
    Returns the routes that were added now (not those already present).
    """
    from jupyterhub import apihandlers

    present = {pattern for pattern, *_ in apihandlers.default_handlers}
    added = [route for route in (routes or ROUTES) if route[0] not in present]
    apihandlers.default_handlers.extend(added)
    return added


__all__ = [
    "ListServersAPIHandler",
    "ROUTES",
    "SSHNodeRestartedAPIHandler",
    "SetupTunnelAPIHandler",
    "SpawnEventsAPIHandler",
    "register_api_handlers",
]
