"""The Hub's tunnels: one master per endpoint, watched and restored without anyone asking.

A master is a connection of an SSH backend (:class:`~.master.Master`: an OpenSSH ControlMaster by
default). A master that exits (the jump node rebooted, its sshd restarted, the process was killed)
or stops answering its check is started again with backoff, and every forward that should exist on
it is added again. A forward that still cannot be restored after ``restore_attempts`` is reported as
failed, so the owning server's ``poll()`` can say so; the supervisor keeps trying.

OpenSSH masters outlive the Hub process. A manager that starts adopts the masters its backend
finds in the control directory (those that answer), with the forwards they carry; servers claim
their forwards at their first poll, and after ``adopt_grace`` seconds the forwards nobody claimed
are cancelled and masters left with nothing exit. At the Hub's exit only idle masters are stopped.
"""

import asyncio
import atexit
import dataclasses
import os
import time
import weakref

from ..errors import TunnelError
from .controldir import control_dir
from .metrics import ADOPTIONS, FORWARD_SETUP_SECONDS, NODE_REBUILDS, RESTORES, register_collector
from .openssh import ControlMaster
from .sockets import process_listens

_ALL_MANAGERS = weakref.WeakSet()
register_collector(_ALL_MANAGERS)


@atexit.register
def _stop_idle_masters_at_exit():
    # The Hub is going away. Masters that carry forwards keep serving (the next Hub adopts them);
    # masters with nothing to carry (all servers stopped, e.g. cleanup_servers) go with it.
    for manager in list(_ALL_MANAGERS):
        for master in manager.masters.values():
            if master.up and not master.wanted and not master.unclaimed:
                master.terminate()


class TunnelManager:
    """All masters of one Hub, keyed by endpoint, each with a supervising task.

    ``master_class``: the backend, a :class:`~.master.Master`; only its interface is used here."""

    def __init__(self, log, *, directory, master_args, ssh="ssh", start_timeout=10, check_interval=10,
                 restore_attempts=5, idle_timeout=30, master_class=ControlMaster,
                 forwards_per_master=500, adopt_grace=120):  # fmt: skip
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
        self.adopt_grace = adopt_grace
        self.masters = {}  # "<endpoint id>-<shard>" -> master
        self.placed = {}  # Forward -> the master that carries it
        self.failed = {}  # Forward -> reason, for forwards that could not be restored
        self.restores = 0
        self._supervisors = {}
        self._idle_exits = {}
        self._node_rebuilds = {}
        self._adoption = None
        self._reconcile = None
        _ALL_MANAGERS.add(self)

    # ------------------------------------------------------------ masters of an earlier Hub process
    def adopted(self):
        """Adopt the masters an earlier Hub process left (once; every caller awaits the same)."""
        if self._adoption is None:
            self._adoption = asyncio.ensure_future(self._adopt_all())
        return asyncio.shield(self._adoption)

    async def _adopt_all(self):
        found = []
        async for master in self.master_class.adopt_all(
            self.directory, self.master_args, self.log, ssh=self.ssh, start_timeout=self.start_timeout
        ):
            self.masters[master.key] = master
            self._supervise(master)
            ADOPTIONS.labels(node=master.endpoint.host, outcome="master").inc()
            found.append(master)
        if found:
            self.log.info(
                "Adopted %d ssh master(s) of an earlier Hub process with %d forwards; unclaimed forwards are "
                "cancelled after %ss", len(found), sum(len(m.unclaimed) for m in found), self.adopt_grace,
            )  # fmt: skip
            self._reconcile = asyncio.ensure_future(self._cancel_unclaimed_later())

    async def _cancel_unclaimed_later(self):
        await asyncio.sleep(self.adopt_grace)
        for master in list(self.masters.values()):
            unclaimed, master.unclaimed = master.unclaimed, set()
            for forward in unclaimed - set(master.wanted):  # a forward added again meanwhile stays
                self.log.info("Cancelling %s via %s: no running server claimed it", forward.argument(), master.endpoint.describe())
                await master.remove(forward)
            if unclaimed:
                master.save_journal()
            if not master.wanted:
                self._schedule_idle_exit(master)

    def _claim(self, endpoint, forward):
        """Place ``forward`` on the adopted master that already carries it; return that master."""
        for master in self.masters.values():
            if master.endpoint == endpoint and forward in master.unclaimed and master.up:
                master.unclaimed.discard(forward)
                master.wanted[forward] = forward.listen_port if forward.kind == "R" else None
                self.placed[forward] = master
                master.save_journal()
                self._supervise(master)
                ADOPTIONS.labels(node=endpoint.host, outcome="forward").inc()
                return master
        return None

    def master(self, endpoint):
        """A master to ``endpoint`` with room for one more forward (a new shard when all are full:
        one ssh process holds one file descriptor per listening port)."""
        shard = 0
        while True:
            key = f"{endpoint.id}-{shard}"
            master = self.masters.get(key)
            if master is None or master.stopping:
                path = os.path.join(control_dir(self.directory), key)
                master = self.master_class(
                    endpoint, path, self.master_args, self.log, ssh=self.ssh, start_timeout=self.start_timeout, key=key
                )
                self.masters[key] = master
                return master
            if len(master.wanted) < self.forwards_per_master:
                return master
            shard += 1

    # ------------------------------------------------------------ forwards
    async def add(self, endpoint, forward):
        """Add ``forward`` through ``endpoint``; return the port the node allocated for a remote
        forward with port 0 (it is known by that port from then on: remove it by that), else None.

        A forward that an adopted master still carries is claimed without touching ssh: the
        server's connections see no gap."""
        await self.adopted()
        if forward not in self.placed and self._claim(endpoint, forward) is not None:
            self.failed.pop(forward, None)
            return None
        for master in self.masters.values():  # not claimable (its master is down): never cancel it later
            master.unclaimed.discard(forward)
        await self._exits_of(endpoint)
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
            if not master.wanted and not master.unclaimed:
                self._schedule_idle_exit(master)  # a master started for this forward alone must not linger
            raise
        if allocated is not None:  # a remote forward is known by its allocated port from now on
            self.placed[dataclasses.replace(forward, listen_port=allocated)] = self.placed.pop(forward)
        master.save_journal()
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
        master.save_journal()
        if not master.wanted and not master.unclaimed:
            self._schedule_idle_exit(master)

    def wants(self, endpoint, forward):
        """Whether ``forward`` through ``endpoint`` is one this Hub keeps up."""
        master = self.placed.get(forward)
        return master is not None and master.endpoint == endpoint and forward in master.wanted

    def holds_port(self, port):
        """Whether the Hub's own process or one of its masters listens on ``port``: if something
        else does, a forward on it must move. Blocking (reads /proc): call it in a thread."""
        return process_listens(os.getpid(), port) or any(m.listens(port) for m in list(self.masters.values()))

    def is_failed(self, forward):
        """The reason ``forward`` could not be restored, or None."""
        return self.failed.get(forward)

    # ------------------------------------------------------------ node restarts
    async def rebuild_node(self, host):
        """Restart every broken master to ``host`` and restore its forwards; one rebuild per node
        at a time. A master that answers its check and carries every local forward it should is
        left alone: a rebuild would cut every connection through it.

        Returns ``(forwards restored, failures, masters left alone)``.
        """
        running = self._node_rebuilds.get(host)
        if running is not None and not running.done():
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._rebuild_node(host))
        self._node_rebuilds[host] = task
        return await asyncio.shield(task)

    async def _rebuild_node(self, host):
        masters, healthy = [], 0
        for master in [m for m in self.masters.values() if m.endpoint.host == host and m.wanted]:
            if await self._healthy(master):
                healthy += 1
            else:
                masters.append(master)
        NODE_REBUILDS.labels(node=host, outcome="left_alone").inc(healthy)
        NODE_REBUILDS.labels(node=host, outcome="rebuilt").inc(len(masters))
        for master in masters:
            await master.kill()
        results = await asyncio.gather(*(self._restore(m) for m in masters), return_exceptions=True)
        restored = failed = 0
        for master, result in zip(masters, results, strict=True):
            if isinstance(result, Exception):
                failed += len(master.wanted)
            else:
                failed += len(result)
                restored += len(master.wanted) - len(result)
        return restored, failed, healthy

    async def _healthy(self, master):
        """Up, answering, and listening on the port of every wanted local forward."""
        if not master.up or not await master.check():
            return False
        ports = [f.listen_port for f in master.wanted if f.kind == "L"]
        return all(await asyncio.gather(*(asyncio.to_thread(master.listens, p) for p in ports)))

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
                        await master.kill()
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
            if master.wanted or master.unclaimed:
                self._idle_exits.pop(master.key, None)
                return
            # from here on the exit runs to its end: a forward for this endpoint waits for it and
            # gets a new master (the same socket path must not be shared with a dying master)
            master.stopping = True
            try:
                await self._exit(master)
            finally:
                if self._idle_exits.get(master.key) is asyncio.current_task():
                    del self._idle_exits[master.key]

        self._idle_exits[master.key] = asyncio.ensure_future(exit_when_idle())

    def _cancel_idle_exit(self, master):
        if master.stopping:
            return  # too late: its exit is under way
        task = self._idle_exits.pop(master.key, None)
        if task is not None:
            task.cancel()

    async def _exits_of(self, endpoint):
        """Wait until masters of ``endpoint`` that are exiting have exited."""
        for key, task in list(self._idle_exits.items()):
            exiting = self.masters.get(key)
            if exiting is not None and exiting.stopping and exiting.endpoint == endpoint:
                await asyncio.shield(task)

    async def _exit(self, master):
        watcher = self._supervisors.pop(master.key, None)
        if watcher is not None:
            watcher.cancel()
            # its check (an ssh process, for OpenSSH) may be running: wait until the cancel has ended it
            await asyncio.gather(watcher, return_exceptions=True)
        exiting = master.exit()  # from here on the exit completes, whoever waits for it

        def forget(_=None):
            if self.masters.get(master.key) is master:
                del self.masters[master.key]
            for forward in [f for f, m in self.placed.items() if m is master]:
                del self.placed[forward]

        exiting.add_done_callback(forget)
        await asyncio.shield(exiting)  # a cancelled caller must not leave a half-stopped master behind
        self.log.info("ssh master to %s closed: no forwards left", master.endpoint.describe())

    async def close(self):
        """Stop every master (tests, an explicit shutdown): nothing is left behind."""
        exiting = [t for key, t in self._idle_exits.items() if getattr(self.masters.get(key), "stopping", False)]
        tasks = [t for t in self._idle_exits.values() if t not in exiting] + list(self._supervisors.values())
        tasks += [t for t in (self._adoption, self._reconcile) if t is not None]
        for task in tasks:
            task.cancel()
        # a cancelled task ends its ssh client processes on the way out: wait for that, and for
        # exits already under way
        await asyncio.gather(*tasks, *exiting, return_exceptions=True)
        await asyncio.gather(*(self._exit(m) for m in list(self.masters.values())), return_exceptions=True)
