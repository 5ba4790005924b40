"""forwardbasespawner: a JupyterHub Spawner base for single-user servers on remote systems."""

from .api import (
    ROUTES,
    ListServersAPIHandler,
    SetupTunnelAPIHandler,
    SpawnEventsAPIHandler,
    SSHNodeRestartedAPIHandler,
    register_api_handlers,
)
from .spawner import ForwardBaseSpawner, StartAborted

__version__ = "0.1.0.dev0"

# Subclass packages of the original rely on routes appearing on import (CONTRACT.md).
register_api_handlers()

__all__ = [
    "ListServersAPIHandler",
    "ROUTES",
    "ForwardBaseSpawner",
    "SSHNodeRestartedAPIHandler",
    "SetupTunnelAPIHandler",
    "SpawnEventsAPIHandler",
    "StartAborted",
    "__version__",
    "register_api_handlers",
]
