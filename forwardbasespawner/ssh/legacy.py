"""The original package's ssh masters, as a Hub on this library meets them after an upgrade.

The original package ran one ``ssh -oControlMaster=auto -oControlPersist=yes`` process per jump
node with the control socket ``/tmp/control_<node>`` and added each server's forward to it as
``-L0.0.0.0:<port>:<host>:<port>``. Those masters outlive the Hub. When a Hub on this library
restores a forward whose port such a master still serves, it *adopts* the forward: the master
keeps carrying it (the user's connections see no gap), stopping the server cancels it there, the
master is told to exit when no adopted forward is left, and a forward whose master stops serving
moves to a master of ours on the same port.

The argv builders are pure; the effects (running ssh, reading ``/proc``) are small functions.
"""

import asyncio
import os
import stat
import time

from .openssh import master_pid, run_argv
from .sockets import process_listens

#: control socket path -> ports of adopted forwards on that master, in this Hub process
_ADOPTED = {}
#: control socket path -> (time, master pid or None): one ``-O check`` per master every few seconds
_CHECKED = {}
CHECK_TTL = 5.0


def legacy_control_path(template, node):
    """The control socket of the original's master for ``node`` (``template`` has ``{node}``)."""
    path = template.format(node=node)
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"not an absolute socket path: {path[:100]!r}")
    return path


def legacy_forward_spec(port, target_host, target_port):
    """The ``-L`` argument the original used for a server's forward."""
    host = f"[{target_host}]" if ":" in target_host else target_host
    return f"0.0.0.0:{int(port)}:{host}:{int(target_port)}"


def legacy_control_argv(path, command, node, spec=None, *, ssh="ssh"):
    """``ssh -S <path> -O check|cancel|exit [-L spec] -- <node>`` for the original's master."""
    if command not in ("check", "cancel", "exit"):
        raise ValueError(f"unknown control command {command!r}")
    return [ssh, "-S", path, "-O", command, *(["-L", spec] if spec else []), "--", node]


#: the original ran ssh with setuid(1000) when its Hub was root: that uid's masters are the Hub's too
ORIGINAL_SSH_UID = 1000


def trusted_owner(path):
    """The uid owning the socket at ``path`` if it is a socket of the Hub's user (or, for a Hub run
    as root, of the uid the original package switched to), else None: a socket another local user
    placed there must never make the Hub route a server's traffic to their process."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    allowed = {os.getuid()} | ({ORIGINAL_SSH_UID} if os.getuid() == 0 else set())
    return info.st_uid if stat.S_ISSOCK(info.st_mode) and info.st_uid in allowed else None


def process_uid(pid):
    """The real uid of process ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


async def _master_pid(path, node, ssh):
    """The pid of the live master at ``path`` (a socket of a trusted owner, answered by a process
    of that owner), or None; cached for :data:`CHECK_TTL` seconds."""
    now = time.monotonic()
    cached = _CHECKED.get(path)
    if cached and now - cached[0] < CHECK_TTL:
        return cached[1]
    pid = None
    owner = trusted_owner(path)
    if owner is not None:
        try:
            rc, out, err = await run_argv(legacy_control_argv(path, "check", node, ssh=ssh), timeout=10)
            pid = master_pid(out + err) if rc == 0 else None
        except asyncio.TimeoutError:
            pass
        if pid is not None and process_uid(pid) != owner:
            pid = None
    _CHECKED[path] = (now, pid)
    return pid


async def legacy_master_serving(path, node, port, *, ssh="ssh"):
    """Whether the original's master at ``path`` is alive and itself listens on ``port``."""
    pid = await _master_pid(path, node, ssh)
    if pid is None:
        return False
    return await asyncio.to_thread(process_listens, pid, port)


def adopt(path, port):
    _ADOPTED.setdefault(path, set()).add(port)


async def release(path, node, spec, port, *, ssh="ssh", log=None):
    """Cancel an adopted forward on the original's master; the master exits when none is left."""
    try:
        rc, _, err = await run_argv(legacy_control_argv(path, "cancel", node, spec, ssh=ssh), timeout=10)
        if rc != 0 and log:
            log.warning(
                "Cancelling %s on the original package's ssh master %s: %s", spec, path, err.decode(errors="replace").strip()[-200:]
            )
    except asyncio.TimeoutError:
        if log:
            log.warning("Cancelling %s on the original package's ssh master %s timed out", spec, path)
    ports = _ADOPTED.get(path, set())
    ports.discard(port)
    if not ports:
        _ADOPTED.pop(path, None)
        _CHECKED.pop(path, None)
        try:
            await run_argv(legacy_control_argv(path, "exit", node, ssh=ssh), timeout=10)
            if log:
                log.info("The original package's ssh master %s carries no adopted forward any more: it exits", path)
        except asyncio.TimeoutError:
            pass


def forget(path, port):
    """The adopted forward is gone by itself (its master stopped serving it)."""
    ports = _ADOPTED.get(path, set())
    ports.discard(port)
    if not ports:
        _ADOPTED.pop(path, None)
