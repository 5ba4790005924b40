"""The Hub's tunnels: one ControlMaster per endpoint, watched and restored without anyone asking.

A master that exits (the jump node rebooted, its sshd restarted, the process was killed) or stops
answering ``-O check`` is started again with backoff, and every forward that should exist on it is
added again. A forward that still cannot be restored after ``restore_attempts`` is reported as
failed, so the owning server's ``poll()`` can say so.
"""

import asyncio
import atexit
import contextlib
import dataclasses
import os
import signal
import time
import weakref

from .metrics import FORWARD_SETUP_SECONDS, RESTORES, register_collector
from .openssh import ControlMaster, TunnelError, control_dir

_ALL_MANAGERS = weakref.WeakSet()
register_collector(_ALL_MANAGERS)


@atexit.register
def _kill_masters_at_exit():
    # The Hub is going away: masters must not outlive it holding its ports. The next Hub restores
    # the tunnels of running servers at their first poll.
    for manager in list(_ALL_MANAGERS):
        for master in manager.masters.values():
            if master.process is not None and master.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(master.process.pid, signal.SIGTERM)


class TunnelManager:
    """All ControlMasters of one Hub, keyed by endpoint, each with a supervising task."""

    def __init__(self, log, *, directory, master_args, ssh="ssh", start_timeout=10, check_interval=10,
                 restore_attempts=5, idle_timeout=30, master_class=ControlMaster,
                 forwards_per_master=500):  # fmt: skip
        self.log = log
        self.directory = directory
        self.master_args = master_args
        self.ssh = ssh
        self.start_timeout = start_timeout
        self.check_interval = check_interval
        self.restore_attempts = restore_attempts
        self.idle_timeout = idle_timeout
        self.master_class = master_class
        self.forwards_per_master = forwards_per_master
        self.masters = {}  # "<endpoint id>-<shard>" -> master
        self.placed = {}  # Forward -> the master that carries it
        self.failed = {}  # Forward -> reason, for forwards that could not be restored
        self.restores = 0
        self._supervisors = {}
        self._idle_exits = {}
        self._node_rebuilds = {}
        _ALL_MANAGERS.add(self)

    def master(self, endpoint):
        """A master to ``endpoint`` with room for one more forward (a new shard when all are full:
        one ssh process holds one file descriptor per listening port)."""
        shard = 0
        while True:
            key = f"{endpoint.id}-{shard}"
            master = self.masters.get(key)
            if master is None:
                path = os.path.join(control_dir(self.directory), key)
                master = self.master_class(
                    endpoint, path, self.master_args, self.log, ssh=self.ssh, start_timeout=self.start_timeout
                )
                master.key = key
                self.masters[key] = master
                return master
            if len(master.wanted) < self.forwards_per_master:
                return master
            shard += 1

    # ------------------------------------------------------------ forwards
    async def add(self, endpoint, forward):
        """Add ``forward`` through ``endpoint``; return the port the node allocated for a remote
        forward with port 0 (it is known by that port from then on: remove it by that), else None."""
        placed = self.placed.get(forward)
        master = placed if placed is not None and placed.endpoint == endpoint else self.master(endpoint)
        self.placed[forward] = master
        self._cancel_idle_exit(master)
        self.failed.pop(forward, None)
        started = time.monotonic()
        try:
            allocated = await master.add(forward)
        except BaseException:
            self.placed.pop(forward, None)
            raise
        if allocated is not None:  # a remote forward is known by its allocated port from now on
            self.placed[dataclasses.replace(forward, listen_port=allocated)] = self.placed.pop(forward)
        elapsed = time.monotonic() - started
        FORWARD_SETUP_SECONDS.observe(elapsed)
        self.log.debug("forward %s via %s in %.0f ms", forward.argument(), endpoint.describe(), elapsed * 1000)
        self._supervise(master)
        return allocated

    async def remove(self, endpoint, forward):
        self.failed.pop(forward, None)
        master = self.placed.pop(forward, None)
        if master is None:
            return
        await master.remove(forward)
        if not master.wanted:
            self._schedule_idle_exit(master)

    def wants(self, endpoint, forward):
        """Whether ``forward`` through ``endpoint`` is one this Hub keeps up."""
        master = self.placed.get(forward)
        return master is not None and master.endpoint == endpoint and forward in master.wanted

    def is_failed(self, forward):
        """The reason ``forward`` could not be restored, or None."""
        return self.failed.get(forward)

    # ------------------------------------------------------------ node restarts
    async def rebuild_node(self, host):
        """Restart every master to ``host`` and restore its forwards; one rebuild per node at a time.

        Returns ``(forwards restored, failures)``.
        """
        running = self._node_rebuilds.get(host)
        if running is not None and not running.done():
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._rebuild_node(host))
        self._node_rebuilds[host] = task
        return await asyncio.shield(task)

    async def _rebuild_node(self, host):
        masters = [m for m in self.masters.values() if m.endpoint.host == host and m.wanted]
        for master in masters:
            await master._kill()
        results = await asyncio.gather(*(self._restore(m) for m in masters), return_exceptions=True)
        restored = failed = 0
        for master, result in zip(masters, results):
            if isinstance(result, Exception):
                failed += len(master.wanted)
            else:
                failed += len(result)
                restored += len(master.wanted) - len(result)
        return restored, failed

    # ------------------------------------------------------------ supervision
    def _supervise(self, master):
        task = self._supervisors.get(master.key)
        if task is None or task.done():
            self._supervisors[master.key] = asyncio.ensure_future(self._watch(master))

    async def _watch(self, master):
        attempts = 0
        delay = 0.1
        while not master.stopping and master.wanted:
            if master.up:
                closed = master.wait_closed()
                await asyncio.wait([closed], timeout=self.check_interval)
                if not closed.done():
                    if not await master.check():
                        self.log.warning("ssh master to %s does not answer; restarting it", master.endpoint.describe())
                        await master._kill()
                    continue
                if master.stopping or not master.wanted:
                    break
                reason = master.exit_reason()
                self.log.warning(
                    "ssh master to %s exited (%s); restoring %d forwards", master.endpoint.describe(), reason, len(master.wanted)
                )
            try:
                await self._restore(master)
                attempts, delay = 0, 0.1
            except (TunnelError, OSError) as e:
                RESTORES.labels(outcome="error").inc()
                attempts += 1
                self.log.error("restoring ssh master to %s failed (attempt %d): %s", master.endpoint.describe(), attempts, e)
                if attempts >= self.restore_attempts:
                    for forward in master.wanted:
                        self.failed[forward] = str(e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _restore(self, master):
        started = time.monotonic()
        async with master.restore_lock:
            if master.up and master.started_at and master.started_at > started:
                return []  # restored by another caller (supervisor or node rebuild) meanwhile
            failures = await master.restore()
        self.restores += 1
        RESTORES.labels(outcome="partial" if failures else "complete").inc()
        for forward, reason in failures:
            self.failed[forward] = reason
        for forward in master.wanted:
            if all(forward != f for f, _ in failures):
                self.failed.pop(forward, None)
        self.log.info(
            "ssh master to %s restored with %d forwards (%d failed) in %.0f ms",
            master.endpoint.describe(), len(master.wanted) - len(failures), len(failures), (time.monotonic() - started) * 1000,
        )  # fmt: skip
        return failures

    def _schedule_idle_exit(self, master):
        self._cancel_idle_exit(master)

        async def exit_when_idle():
            await asyncio.sleep(self.idle_timeout)
            if not master.wanted:
                self._idle_exits.pop(master.key, None)
                await self._exit(master)

        self._idle_exits[master.key] = asyncio.ensure_future(exit_when_idle())

    def _cancel_idle_exit(self, master):
        master.stopping = False
        task = self._idle_exits.pop(master.key, None)
        if task is not None:
            task.cancel()

    async def _exit(self, master):
        watcher = self._supervisors.pop(master.key, None)
        if watcher is not None:
            watcher.cancel()
            # its ssh -O check may be running: wait until the cancel has ended that process
            await asyncio.gather(watcher, return_exceptions=True)
        try:
            # shielded: a cancelled caller must not leave a half-stopped master behind
            await asyncio.shield(master.exit())
        finally:
            if self.masters.get(master.key) is master:
                del self.masters[master.key]
            for forward in [f for f, m in self.placed.items() if m is master]:
                del self.placed[forward]
        self.log.info("ssh master to %s closed: no forwards left", master.endpoint.describe())

    async def close(self):
        """Stop every master (tests, shutdown)."""
        tasks = list(self._idle_exits.values()) + list(self._supervisors.values())
        for task in tasks:
            task.cancel()
        # a cancelled task ends its ssh client processes on the way out: wait for that
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self._exit(m) for m in list(self.masters.values())), return_exceptions=True)
