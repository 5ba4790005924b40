"""The Hub's shared tunnel managers: one per event loop and settings key, found again by every spawner."""

import asyncio
import weakref

_MANAGERS = weakref.WeakKeyDictionary()  # event loop -> {settings key: TunnelManager}


def tunnel_managers():
    """Every TunnelManager of the running event loop (e.g. for SSHNodeRestarted)."""
    return list(_MANAGERS.get(asyncio.get_running_loop(), {}).values())


def shared_manager(key, make):
    """The running loop's manager for ``key``; ``make()`` builds it the first time."""
    managers = _MANAGERS.setdefault(asyncio.get_running_loop(), {})
    manager = managers.get(key)
    if manager is None:
        manager = managers[key] = make()
    return manager
