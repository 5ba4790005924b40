"""forwardbasespawner: a JupyterHub Spawner base for single-user servers on remote systems."""

import os as _os
import re as _re

__version__ = "3.0.0.dev0"


def _refuse_a_mixed_install():
    """Both this library and the original package install into ``forwardbasespawner/``; if files
    of the original lie beside ours, two copies were installed over each other: say so plainly."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    foreign = [f for f in ORIGINAL_PACKAGE_FILES if _os.path.exists(_os.path.join(here, f))]
    if foreign:
        original = "2.x"
        try:  # read, never import: it is the other package's file
            with open(_os.path.join(here, "_version.py")) as f:
                original = _re.search(r"__version__\s*=\s*[\"']([^\"']+)", f.read()).group(1)
        except (OSError, AttributeError):
            pass
        raise ImportError(
            f"{here} holds files of two packages: this library (jupyterhub-forwardbasespawner {__version__}, "
            f"earlier also distributed as forwardbasespawner) and the original jupyterhub-forwardbasespawner "
            f"{original} ({', '.join(foreign)}). Uninstall both and install this library once: "
            f"pip uninstall -y jupyterhub-forwardbasespawner forwardbasespawner, delete those files if they remain, "
            f"then pip install jupyterhub-forwardbasespawner"
        )


#: modules only the original package (jupyterhub-forwardbasespawner 2.x) has
ORIGINAL_PACKAGE_FILES = ("forward.py", "api_events.py", "api_setup_tunnel.py", "api_list_servers.py",
                          "api_sshnode_restarted.py", "_version.py")  # fmt: skip
_refuse_a_mixed_install()

from .api import (  # noqa: E402
    ROUTES,
    ListServersAPIHandler,
    SetupTunnelAPIHandler,
    SpawnEventsAPIHandler,
    SSHNodeRestartedAPIHandler,
    register_api_handlers,
)
from .spawner import ForwardBaseSpawner, StartAborted  # noqa: E402

# Subclass packages of the original rely on routes appearing on import (docs/source/design.md).
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
